"""A backfill while another tenant's nightly run is going: rows/s of each, alone and together.

    python -m bench.backfill_share [--big N] [--small M] [--pages-per-second P]

Two tenants on one cluster (max_connections 2, optionally a pages-per-second budget), each in its
own schema of fixture rows: `big` is backfilled (full reload through shadows), `small` runs its
nightly initial load. Each job runs in its own process, as Dagster runs do, so they share the
cluster only through the governor's server-side slots and counters. Phases: small's nightly
alone, big's backfill alone, then both at once. Prints one line per phase and a JSON summary.
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

REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_config(root: Path, server: Server, big: tuple, small: tuple, pps: int | None) -> Path:
    (root / "tenants").mkdir(parents=True, exist_ok=True)
    budget = f"      pages_per_second: {pps}\n      counter: logical\n" if pps else ""
    (root / "tenants" / "clusters.yaml").write_text(
        "clusters:\n  shared:\n"
        f"    host: {server.host}\n    port: {server.port}\n    user: {server.user}\n"
        "    timezone: UTC\n    lag_seconds: 0\n    read_budget:\n      max_connections: 2\n"
        + budget)
    for tid, (schema, table) in (("big", big), ("small", small)):
        (root / "tenants" / f"{tid}.yaml").write_text(textwrap.dedent(f"""\
            tenant: {tid}
            cluster: shared
            source:
              schema: {schema}
            destination:
              project: hakobu-bench
              dataset: hk_wh_s_{tid}_{uuid.uuid4().hex[:8]}
            schedule:
              cron: "0 2 * * *"
            deliver_by: "06:00"
            tables:
              - name: {table}
                cursor: updated_at
                chunk_rows: 20000
            """))
    (root / "permissions.csv").write_text("dataset,role,member\n")
    return root


def child(kind: str, config_dir: str) -> None:
    from hakobu.backfill import backfill_tenant
    from resources.io import LiveIO
    from hakobu.config import load_config
    from hakobu.sync import sync_tenant

    from resources.mysql_source import MySQLSource

    reads = {"s": 0.0, "n": 0}
    orig = MySQLSource.stream

    def timed(self, plan, sql, batch_rows=50_000):   # from a query until its last row is taken
        t = time.monotonic()
        try:
            yield from orig(self, plan, sql, batch_rows)
        finally:
            reads["s"] += time.monotonic() - t
            reads["n"] += 1
    MySQLSource.stream = timed
    config = load_config(Path(config_dir))
    t0 = time.time()
    if kind == "backfill":
        [r] = backfill_tenant(config, "big", io=LiveIO.from_env())
    else:
        [r] = sync_tenant(config, "small", io=LiveIO.from_env())
    t1 = time.time()
    print(json.dumps({"ok": r.ok, "error": r.error, "rows": r.rows_read, "start": t0, "end": t1,
                      "table_s": r.duration_s, "throttled_s": r.throttled_s,
                      "source_read_s": reads["s"], "chunk_queries": reads["n"]}))


def spawn(kind: str, cfg: Path, endpoint: str) -> subprocess.Popen:
    env = {**os.environ, "HAKOBU_BIGQUERY_ENDPOINT": endpoint,
           "HAKOBU_BIGQUERY_RETRY_DEADLINE": "60",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "bench.backfill_share", "--child", kind,
                             str(cfg)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def collect(p: subprocess.Popen) -> dict:
    out, err = p.communicate(timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(err[-3000:])
    r = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    if not r["ok"]:
        raise RuntimeError(r["error"])
    r["rows_per_s"] = r["rows"] / (r["end"] - r["start"])
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.backfill_share", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big", type=int, default=200_000)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--pages-per-second", type=int)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    from hakobu.localenv.emulator import start_emulator

    server = Server.from_env()
    big = ("hk_wh_bench", f"orders_{args.big}")
    small = ("hk_wh_bench_small", f"orders_{args.small}")
    ensure_table(server, *big, args.big, log=log)
    ensure_table(server, *small, args.small, log=log)
    tmp = Path(tempfile.mkdtemp(prefix="hk_wh_share_"))
    emu = None
    endpoint = os.environ.get("HAKOBU_BIGQUERY_ENDPOINT")
    if not endpoint:
        emu = start_emulator(tmp / "bq")
        endpoint = emu.url
    res = {}
    try:
        # the backfill replaces a delivered table: deliver it once first (not measured)
        base = write_config(tmp / "base", server, big, small, args.pages_per_second)
        env_cfg = base
        subprocess.run([sys.executable, "-c", "from hakobu.config import load_config;"
                        "from hakobu.sync import sync_tenant;from resources.io import LiveIO;"
                        f"print(sync_tenant(load_config(__import__('pathlib').Path('{env_cfg}')),"
                        "'big', io=LiveIO.from_env())[0].ok)"], cwd=REPO, check=True, capture_output=True,
                       env={**os.environ, "HAKOBU_BIGQUERY_ENDPOINT": endpoint,
                            "PYTHONPATH": str(REPO)})
        res["nightly_alone"] = collect(spawn("nightly", base, endpoint))
        res["backfill_alone"] = collect(spawn("backfill", base, endpoint))
        together = write_config(tmp / "together", server, big, small, args.pages_per_second)
        # small's fresh dataset: a full initial load again; big: the delivered table of `base`
        (together / "tenants" / "big.yaml").write_text((base / "tenants" / "big.yaml").read_text())
        bf = spawn("backfill", together, endpoint)
        time.sleep(1.0)
        nt = spawn("nightly", together, endpoint)
        res["nightly_during_backfill"] = collect(nt)
        res["backfill_during_nightly"] = collect(bf)
    finally:
        if emu is not None:
            emu.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for k, r in res.items():
        log(f"{k:<26}{r['rows']:>9,} rows {r['end'] - r['start']:>7.1f}s "
            f"{r['rows_per_s']:>9,.0f} rows/s end to end; in source reads "
            f"{r['source_read_s']:.1f}s ({r['rows'] / max(r['source_read_s'], 1e-9):,.0f} rows/s); "
            f"throttled {r['throttled_s']:.1f}s")
    b, n = res["backfill_during_nightly"], res["nightly_during_backfill"]
    overlap = max(0.0, min(b["end"], n["end"]) - max(b["start"], n["start"]))
    summary = {k: {"rows": r["rows"], "seconds": round(r["end"] - r["start"], 1),
                   "rows_per_s": round(r["rows_per_s"]), "throttled_s": round(r["throttled_s"], 1),
                   "source_read_s": round(r["source_read_s"], 1),
                   "source_rows_per_s": round(r["rows"] / max(r["source_read_s"], 1e-9))}
               for k, r in res.items()}
    summary["overlap_s"] = round(overlap, 1)
    summary["nightly_share_of_alone_rate"] = round(
        n["rows_per_s"] / res["nightly_alone"]["rows_per_s"], 2)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
