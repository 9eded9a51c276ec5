"""Read once: a nightly run with the internal warehouse on reads the source as much as with it off.

    python -m bench.read_once [--rows N] [--reps R]     GOAL line on stdout, details on stderr
    bench.read_once.run() -> list[str]                  the GOAL lines (for bench/run_all.py)
    bench.read_once.measure() -> dict                   the figures behind them

What is measured. The same tenant's nightly run (an initial load of one fixture table: the
largest read a nightly run does), once with tenants/warehouse.yaml disabled and once enabled
(email hashed, name dropped, tenant_id added), each into fresh datasets so both read every row.
Each run is a child process (`python -m bench.read_once --child ...`), measured by the server's
counters (SHOW GLOBAL STATUS):
- Innodb_buffer_pool_read_requests: logical page reads — every page the reads touched, cached
  or not. This is the goal's measure: it does not depend on what happens to be in the buffer
  pool, so a second read of the source would show as ~2x whatever the cache state;
- Innodb_pages_read: physical page reads (informative: it depends on the cache);
- the chunks the child read (must be equal).
The counters are server-wide, so other sessions add to them, in proportion to the time
measured. A run with the warehouse on takes longer (a second BigQuery load and MERGE), so
counting over the whole run would charge it more of other sessions' reads. The child therefore
samples the counters only while at least one of its keyset queries is streaming (the read
windows, of equal length in both modes) and adds those deltas; the whole-run deltas are kept
as information. Runs alternate (off, on, off, on, ...) and each mode keeps its lowest figure.

GOAL read-once measured=<on/off logical page reads> target=<=1.1x PASS|MISS
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

from bench.fixtures import Server, ensure_table
from bench.report import Goal

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "hk_wh_bench"
TABLE = "orders"
TARGET = 1.10
KEY_ENV = "HK_WH_BENCH_KEY"
COUNTERS = ("Innodb_buffer_pool_read_requests", "Innodb_pages_read")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def counters(server: Server) -> dict[str, int]:
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN (%s, %s)", COUNTERS)
            return {k: int(v) for k, v in cur.fetchall()}
    finally:
        conn.close()


def write_config(root: Path, server: Server, dataset: str, warehouse_dataset: str,
                 enabled: bool, table: str) -> Path:
    (root / "tenants").mkdir(parents=True, exist_ok=True)
    (root / "tenants" / "clusters.yaml").write_text(textwrap.dedent(f"""\
        clusters:
          bench:
            host: {server.host}
            port: {server.port}
            user: {server.user}
            timezone: UTC
            lag_seconds: 0
        """))
    (root / "tenants" / "acme.yaml").write_text(textwrap.dedent(f"""\
        tenant: acme
        cluster: bench
        source:
          schema: {SCHEMA}
        destination:
          project: hakobu-bench
          dataset: {dataset}
        schedule:
          cron: "0 2 * * *"
        deliver_by: "06:00"
        tables:
          - name: {table}
            cursor: updated_at
            chunk_rows: 50000
        """))
    (root / "tenants" / "warehouse.yaml").write_text(textwrap.dedent(f"""\
        warehouse:
          project: hakobu-bench
          dataset: {warehouse_dataset}
          enabled: {str(enabled).lower()}
          hash_key_env: {KEY_ENV}
          drop_columns: [name]
          hash_columns: [email]
        """))
    (root / "permissions.csv").write_text("dataset,role,member\n")
    return root


class ReadWindows:
    """Server counter deltas summed over the intervals when a keyset query is streaming."""

    def __init__(self, server: Server):
        import threading

        self.server, self.lock = server, threading.Lock()
        self.active, self.start = 0, None
        self.totals = dict.fromkeys(COUNTERS, 0)

    def enter(self) -> None:
        with self.lock:
            if self.active == 0:
                self.start = counters(self.server)
            self.active += 1

    def exit(self) -> None:
        with self.lock:
            self.active -= 1
            if self.active == 0:
                end = counters(self.server)
                for k in COUNTERS:
                    self.totals[k] += end[k] - self.start[k]


def child(config_dir: str) -> None:
    """One nightly run of tenant acme (in its own process), result as JSON on stdout."""
    from hakobu.config import load_config
    from hakobu.sync import sync_tenant
    from resources.io import LiveIO
    from resources.mysql_source import MySQLSource

    windows = ReadWindows(Server.from_env())
    orig = MySQLSource.stream

    def stream(self, plan, sql, batch_rows=50_000):   # from the query until its last row
        windows.enter()
        try:
            yield from orig(self, plan, sql, batch_rows)
        finally:
            windows.exit()
    MySQLSource.stream = stream
    [r] = sync_tenant(load_config(Path(config_dir)), "acme", io=LiveIO.from_env())
    print(json.dumps({"ok": r.ok, "error": r.error, "rows_read": r.rows_read,
                      "chunks": r.chunks, "warehouse": r.warehouse,
                      "warehouse_error": r.warehouse_error, "duration_s": r.duration_s,
                      "read_windows": windows.totals}))


def run_child(server: Server, config_dir: Path, endpoint: str) -> dict:
    env = {**os.environ, "HAKOBU_BIGQUERY_ENDPOINT": endpoint,
           "HAKOBU_BIGQUERY_RETRY_DEADLINE": "60",
           KEY_ENV: uuid.uuid4().hex,     # a throwaway key, only in the child's environment
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    before = counters(server)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bench.read_once", "--child", str(config_dir)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - t0
    after = counters(server)
    if proc.returncode != 0:
        raise RuntimeError(f"read_once child failed:\n{proc.stderr[-3000:]}")
    out = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    if not out["ok"]:
        raise RuntimeError(f"read_once child: {out['error']}")
    out["whole_run"] = {k: after[k] - before[k] for k in COUNTERS}
    out["counters"] = out.pop("read_windows")
    out["wall_s"] = wall
    return out


def measure(rows: int = 200_000, reps: int = 3) -> dict:
    from google.api_core.exceptions import NotFound

    from hakobu.localenv.emulator import start_emulator
    from resources.bigquery_client import BigQuerySettings, make_client

    server = Server.from_env()
    table = f"{TABLE}_{rows}"
    ensure_table(server, SCHEMA, table, rows, log=log)
    tmp = Path(tempfile.mkdtemp(prefix="hk_wh_bench_"))
    emu = None
    endpoint = os.environ.get("HAKOBU_BIGQUERY_ENDPOINT")
    if not endpoint:
        emu = start_emulator(tmp / "bq")
        endpoint = emu.url
    client = make_client(BigQuerySettings(endpoint=endpoint), "hakobu-bench")
    made: list[str] = []
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    try:
        for rep in range(reps):
            for mode in ("off", "on"):
                ds, wh = f"hk_wh_b_{uuid.uuid4().hex[:8]}", f"hk_wh_bw_{uuid.uuid4().hex[:8]}"
                made += [ds, wh]
                cfg = write_config(tmp / f"cfg_{mode}_{rep}", server, ds, wh, mode == "on",
                                   table)
                r = run_child(server, cfg, endpoint)
                if (mode == "on") != (r["warehouse"] == "ok"):
                    raise RuntimeError(f"warehouse {mode} but the run says {r['warehouse']}: "
                                       f"{r['warehouse_error']}")
                runs[mode].append(r)
                log(f"  read-once rep {rep + 1}/{reps} warehouse {mode}: {r['rows_read']:,} rows, "
                    f"{r['chunks']} chunks, logical page reads "
                    f"{r['counters']['Innodb_buffer_pool_read_requests']:,} in read windows "
                    f"({r['whole_run']['Innodb_buffer_pool_read_requests']:,} over the whole "
                    f"run), physical {r['counters']['Innodb_pages_read']:,}, "
                    f"{r['wall_s']:.1f}s")
                for name in (ds, wh):
                    try:
                        client.delete_dataset(f"hakobu-bench.{name}", delete_contents=True)
                    except NotFound:
                        pass
    finally:
        if emu is not None:
            emu.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    best = {m: min(runs[m], key=lambda r: r["counters"]["Innodb_buffer_pool_read_requests"])
            for m in runs}
    logical = {m: best[m]["counters"]["Innodb_buffer_pool_read_requests"] for m in best}
    physical = {m: best[m]["counters"]["Innodb_pages_read"] for m in best}
    whole = {m: min(r["whole_run"]["Innodb_buffer_pool_read_requests"] for r in runs[m])
             for m in runs}
    return {"rows": rows, "reps": reps,
            "ratio": logical["on"] / logical["off"] if logical["off"] else None,
            "logical_page_reads": logical, "physical_page_reads": physical,
            "logical_page_reads_whole_run": whole,
            "chunk_queries": {m: best[m]["chunks"] for m in best},
            "rows_read": {m: best[m]["rows_read"] for m in best},
            "seconds": {m: round(best[m]["duration_s"], 1) for m in best},
            "runs": runs}


def goal(m: dict) -> Goal:
    note = (f"{m['rows']:,}-row initial load; logical page reads in read windows on/off "
            f"{m['logical_page_reads']['on']:,}/{m['logical_page_reads']['off']:,}; "
            f"chunks {m['chunk_queries']['on']}/{m['chunk_queries']['off']}")
    return Goal("read-once", m["ratio"], "<=", TARGET, "x", note)


def run(rows: int | None = None, reps: int | None = None) -> list[str]:
    """The GOAL lines; what bench/run_all.py calls."""
    try:
        m = measure(rows or int(os.environ.get("HAKOBU_BENCH_READ_ONCE_ROWS", "200000")),
                    reps or 3)
    except Exception as exc:                      # noqa: BLE001 — a failed goal is a MISS line
        log(f"read-once failed: {type(exc).__name__}: {exc}")
        return [Goal("read-once", None, "<=", TARGET, "x", f"failed: {exc}"[:200]).line()]
    return [goal(m).line()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.read_once", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    m = measure(args.rows, args.reps)
    log(json.dumps({k: v for k, v in m.items() if k != "runs"}, indent=2))
    print(goal(m).line())
    return 0 if goal(m).passed else 1


if __name__ == "__main__":
    sys.exit(main())
