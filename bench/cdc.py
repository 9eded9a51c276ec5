"""Issue #15 part 1: `GOAL cdc-latency` — how long a row change takes from its commit on the
source to being visible in that customer's BigQuery, at a sustained rate across tenants.
`python -m bench.run_all --only cdc` (`--quick`: 4 tenants, 20 s; `--cdc-seconds`, `--cdc-rate`,
`--cdc-tenants`, `--cdc-seed-rows`, `--cdc-job-latency` change it); bench/analysis.md explains it.

Setup (not measured): a private MariaDB with a binary log started here
(`start_private(.local/bench/cdc/mariadb, binlog=True)`; `$HAKOBU_BENCH_CDC_STATE` moves the
state), schemas `hk_cdcb_*` made afresh and the binlog reset; the BigQuery emulator (fresh data
dir) behind the strict layer (hakobu/localenv/strict_bq.py: it counts every job's table writes;
job latency 0 for the setup, then `--cdc-job-latency`, 1.0 s — BigQuery's usual — from the
stream's start; insertAll is no job: it passes without latency, as without a write); N tenants
(10): ~60 % schema-per-tenant (`hk_cdcb_tNN`, every other one with two realtime tables), the
rest on one shared table `hk_cdcb_shared.orders` routed by `shop`; every table seeded, then
snapshotted and merged by a catch-up (`hakobu stream --once`'s steps, in this process).

Measured: `hakobu stream` — the CLI, its own process, its defaults (flush every 2 s, merge every
10 min), with timing wrappers only (bench/cdc_load.py) — streams while the load generator
(bench/cdc_load.py, its own process) commits `rate` changes/s in transactions of 1-4 (inserts
40 %, updates 45 %, deletes 15 % of seeded keys), recording each change's commit time (the wall
clock when COMMIT returned) and its marker (table, key, ver). The poller (bench/cdc_watch.py)
asks each tenant table's `<table>_live` view every second for the keys with unseen changes;
a change counts once, when first visible (its ver or a later one shown; a delete: the key
gone), at the time the answer arrived. Latency = first seen − commit; landed = its change-log
insertAll's return − commit. Then the stream is stopped (SIGTERM), a catch-up merges every
table and the merged tables are compared with the source (rows, sums of id and ver).

GOAL cdc-latency measured=<p95>s target=<=60s; n/a (MISS) when a change was never seen, the
generator reached < 95 % of the rate, or a merged table differs from the source.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from bench.cdc_report import figures, goal, lines, section
from bench.cdc_watch import Machine, Watch
from bench.report import Report

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("HAKOBU_BENCH_CDC_STATE") or REPO / ".local" / "bench" / "cdc")
PROJECT = "hakobu-cdcb"
PREFIX = "hk_cdcb_"
SHARED_SCHEMA = PREFIX + "shared"
CLUSTER = "cdcb"
RATE = 500
READER_ID = 4_100_000_123


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the fleet -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DestTable:
    """One tenant's realtime table: where the generator writes, where the poller looks."""

    idx: int
    tenant: str
    schema: str
    table: str
    shop: int | None          # the shared table's tenant value, None schema-per-tenant
    seed_lo: int              # seeded keys seed_lo .. seed_lo + seed - 1
    seed: int
    next_id: int              # the generator's first new key

    @property
    def dataset(self) -> str:
        return f"{PREFIX}{self.tenant}"


def layout(tenants: int, seed: int) -> list[DestTable]:
    n_shared = min(tenants - 1, max(1, round(tenants * 0.4))) if tenants > 1 else 0
    out: list[DestTable] = []

    def add(tid, schema, table, shop):
        base = (shop or 0) * 100_000_000 + 1
        out.append(DestTable(len(out), tid, schema, table, shop, base, seed, base + seed))
    for i in range(tenants - n_shared):
        tid = f"t{i + 1:02d}"
        for t in (("orders", "events") if i % 2 == 0 else ("orders",)):
            add(tid, f"{PREFIX}{tid}", t, None)
    for j in range(n_shared):
        add(f"s{j + 1:02d}", SHARED_SCHEMA, "orders", j + 1)
    return out


def _ddl(schema: str, table: str, shared: bool) -> str:
    shop = "shop INT NOT NULL, " if shared else ""
    key = "PRIMARY KEY (shop, id)" if shared else "PRIMARY KEY (id)"
    return (f"CREATE TABLE `{schema}`.`{table}` ({shop}id BIGINT NOT NULL, ver INT NOT NULL, "
            "amount DECIMAL(12,2) NOT NULL, note VARCHAR(64), updated_at DATETIME(6) NOT NULL, "
            f"{key}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")


def seed_source(server, tables: list[DestTable]) -> None:
    """Fresh schemas with the seeded rows; the binlog reset (a fresh BigQuery state each run)."""
    conn = server.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name "
                        "LIKE %s", (PREFIX.replace("_", r"\_") + "%",))
            for (name,) in cur.fetchall():
                cur.execute(f"DROP DATABASE `{name}`")
            cur.execute("RESET MASTER")
            made = set()
            for t in tables:
                if t.schema not in made:
                    cur.execute(f"CREATE DATABASE `{t.schema}` CHARACTER SET utf8mb4")
                    made.add(t.schema)
                if (t.schema, t.table) not in made:
                    cur.execute(_ddl(t.schema, t.table, t.shop is not None))
                    made.add((t.schema, t.table))
                shop = f"{t.shop}, " if t.shop is not None else ""
                cur.execute(f"INSERT INTO `{t.schema}`.`{t.table}` SELECT {shop}"
                            f"{t.seed_lo} + seq, 1, (seq * 37) % 100000 / 100, "
                            f"CONCAT('seed ', seq), TIMESTAMP('2026-01-01') + INTERVAL seq SECOND "
                            f"FROM `{t.schema}`.seq_0_to_{t.seed - 1}")
    finally:
        conn.close()


def write_config(root: Path, server, tables: list[DestTable]) -> Path:
    tdir = root / "tenants"
    if root.exists():
        shutil.rmtree(root)
    tdir.mkdir(parents=True)
    (tdir / "clusters.yaml").write_text(yaml.safe_dump({"clusters": {CLUSTER: {
        "host": server.host, "port": server.port, "user": server.user, "timezone": "UTC",
        "lag_seconds": 0}}}))
    by_tenant: dict[str, list[DestTable]] = {}
    for t in tables:
        by_tenant.setdefault(t.tenant, []).append(t)
    for tid, ts in by_tenant.items():
        source: dict = {"schema": ts[0].schema}
        if ts[0].shop is not None:
            source.update(tenant_column="shop", tenant_value=ts[0].shop)
        body = {"tenant": tid, "cluster": CLUSTER, "source": source,
                "destination": {"project": PROJECT, "dataset": ts[0].dataset, "location": "US"},
                "schedule": {"cron": "0 2 * * *", "timezone": "UTC"}, "deliver_by": "06:00",
                "tables": [{"name": t.table, "delivery": "realtime"} for t in ts]}
        (tdir / f"{tid}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    (root / "permissions.csv").write_text("dataset,role,member\n")
    from hakobu.config import load_config   # every tenant valid (the CLI would skip a broken one)

    load_config(root)
    return root


def _child_env(cfg: Path, endpoint: str, work: Path) -> dict:
    return {**os.environ, "HAKOBU_CONFIG_DIR": str(cfg), "HAKOBU_BIGQUERY_ENDPOINT": endpoint,
            "HAKOBU_WORK_DIR": str(work), "HAKOBU_BIGQUERY_RETRY_DEADLINE": "120",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _stream_cmd(outdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bench.cdc_load", "--stream-child", str(outdir), "--",
            "--reader-id", str(READER_ID), "--json", *args]


def _json_of(stdout: str) -> dict:
    start = stdout.find("{")
    return json.loads(stdout[start:]) if start >= 0 else {}


def _verify(server, client, tables: list[DestTable]) -> list[str]:
    """Tables whose merged BigQuery rows differ from the source (rows, sum id, sum ver)."""
    bad = []
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            for t in tables:
                where = f" WHERE shop = {t.shop}" if t.shop is not None else ""
                cur.execute(f"SELECT COUNT(*), COALESCE(SUM(id), 0), COALESCE(SUM(ver), 0) "
                            f"FROM `{t.schema}`.`{t.table}`{where}")
                src = tuple(int(x) for x in cur.fetchone())
                [r] = list(client.query(
                    f"SELECT COUNT(*) AS n, COALESCE(SUM(id), 0) AS i, COALESCE(SUM(ver), 0) "
                    f"AS v FROM `{PROJECT}.{t.dataset}.{t.table}`").result())
                got = (int(r["n"]), int(r["i"]), int(r["v"]))
                if got != src:
                    bad.append(f"{t.dataset}.{t.table}: source {src}, bigquery {got}")
    finally:
        conn.close()
    return bad


def _catch_up(cfg: Path, endpoint: str, work: Path, hooks=None) -> tuple:
    """Guard, open, snapshot what is new, read to the end of the log and merge every table:
    `hakobu stream --once`, in this process (setup and the final merge: not measured)."""
    from hakobu.config import load_config
    from hakobu.results import NO_HOOKS
    from hakobu.stream import ClusterStream
    from resources.bigquery_client import BigQuerySettings
    from resources.io import LiveIO

    io = LiveIO(BigQuerySettings(endpoint=endpoint, retry_deadline_s=120.0), work_dir=work)
    cs = ClusterStream(load_config(cfg), CLUSTER, io, reader_id=READER_ID + 1,
                       hooks=hooks or NO_HOOKS)
    try:
        cs.guard()
        cs.open()
        snapped = cs.snapshot_new()
        cs.run(blocking=False)
    finally:
        io.close()
    return snapped, cs


class _MergeTimes:
    """Hooks that time each MERGE of a catch-up."""

    def __init__(self):
        self.merges, self._t0 = [], None

    def __call__(self, point, **kw):
        if point == "before_merge":
            self._t0 = time.time()
        elif point == "after_merge" and self._t0 is not None:
            self.merges.append({"t0": self._t0, "t1": time.time(), "table": kw.get("table")})


def _start_stream(run_dir: Path, env: dict) -> tuple:
    """`hakobu stream` in its own process; returns once its second flush round began (its
    first round's restart merges done)."""
    live, t = run_dir / "live", time.monotonic()
    stream = subprocess.Popen(_stream_cmd(live), cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=open(run_dir / "stream.log", "w"), text=True)
    while not (live / "streaming").exists():
        if stream.poll() is not None:
            raise RuntimeError("hakobu stream exited before streaming: "
                               + (run_dir / "stream.log").read_text()[-3000:])
        if time.monotonic() - t > 900:
            stream.kill()
            raise RuntimeError("hakobu stream was not streaming after 900 s")
        time.sleep(0.1)
    return stream, live


def _warm_up(server, tables, live: Path, timeout: float = 900) -> float:
    """One change per table (`note` only: no marker moves), then wait for the merge round it
    starts: a restarted stream merges every table at its first round with changes (its
    last-merge time starts at 0), and the next is merge_every_minutes later, so the load that
    follows runs between two merge rounds. Returns the round's seconds."""
    conn = server.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            for x in tables:
                cur.execute(f"UPDATE `{x.schema}`.`{x.table}` SET note = 'warm-up' WHERE id = %s",
                            (x.seed_lo,))
    finally:
        conn.close()
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if (live / "rounds.jsonl").exists() and (live / "rounds.jsonl").read_text().strip():
            r = json.loads((live / "rounds.jsonl").read_text().splitlines()[0])
            return r["t1"] - r["t0"]
        time.sleep(0.2)
    raise RuntimeError(f"no merge round within {timeout:.0f} s of the warm-up changes")


def _load(run_dir: Path, env: dict, server, tables, rate, seconds, threads, watch, drain_s,
          ours: list[int]) -> tuple:
    """The generator's process while the poller watches; then the drain. (summary, machine)"""
    gen_file = watch.gen_file
    spec = {"host": server.host, "port": server.port, "user": server.user, "rate": rate,
            "seconds": seconds, "threads": threads, "seed": 15, "out": str(gen_file),
            "tables": [{"idx": x.idx, "schema": x.schema, "table": x.table, "shop": x.shop,
                        "seed_lo": x.seed_lo, "seed": x.seed, "next_id": x.next_id}
                       for x in tables]}
    (run_dir / "load.json").write_text(json.dumps(spec))
    loaded = threading.Event()
    poller = threading.Thread(target=watch.run, args=(loaded, drain_s), daemon=True)
    with Machine(ours) as machine:
        gen = subprocess.Popen([sys.executable, "-m", "bench.cdc_load", "--load",
                                str(run_dir / "load.json")], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, text=True)
        poller.start()
        gen_out, _ = gen.communicate(timeout=seconds + 600)
    summary = _json_of(gen_out)
    if gen.returncode != 0 or summary.get("errors"):
        loaded.set()
        raise RuntimeError(f"the load generator failed: {summary or gen.returncode}")
    loaded.set()
    poller.join(drain_s + 120)
    return summary, machine.figures()


def _stop(stream, run_dir: Path) -> dict:
    stream.send_signal(signal.SIGTERM)
    out, _ = stream.communicate(timeout=300)
    if stream.returncode != 0:
        raise RuntimeError(f"hakobu stream exited {stream.returncode}: "
                           + (run_dir / "stream.log").read_text()[-3000:])
    return _json_of(out)


# long: the bench's steps in order, each one paragraph; split, the sequence reads worse
def measure(*, tenants: int = 10, seconds: float = 120, rate: float = RATE, seed_rows: int = 2000,
            job_latency: float = 1.0, drain_s: float = 120.0, threads: int = 4,
            merge_in_load: bool = False, log=log) -> dict:
    from hakobu.localenv.emulator import start_emulator
    from hakobu.localenv.mariadb import start_private
    from hakobu.localenv.strict_bq import StrictLimits, start_strict
    from resources.bigquery_client import BigQuerySettings, make_client

    timings, t = {}, time.monotonic()
    server = start_private(STATE / "mariadb", binlog=True)
    tables, run_dir = layout(tenants, seed_rows), STATE / "run"
    emu = strict = client = stream = None
    try:
        seed_source(server, tables)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        cfg = write_config(run_dir / "cfg", server, tables)
        emu = start_emulator(run_dir / "bq", project=PROJECT)
        strict = start_strict(emu.url, StrictLimits(job_latency_s=0.0))
        env = _child_env(cfg, strict.url, run_dir / "work")
        client = make_client(BigQuerySettings(endpoint=emu.url), PROJECT)  # the poller: direct
        log(f"  cdc: MariaDB (binlog) on port {server.port}, emulator {emu.url}, strict layer "
            f"{strict.url}; {len({x.tenant for x in tables})} tenants, {len(tables)} realtime "
            f"tables ({sum(1 for x in tables if x.shop is not None)} on the shared table), "
            f"{seed_rows:,} seeded rows each")
        snapped, _ = _catch_up(cfg, strict.url, run_dir / "work")
        if len(snapped) != len(tables):
            raise RuntimeError(f"snapshot: {len(snapped)} of {len(tables)} tables: {snapped}")
        timings["setup and snapshot"] = time.monotonic() - t

        t = time.monotonic()
        strict.limits = replace(strict.limits, job_latency_s=job_latency)
        stream, live = _start_stream(run_dir, env)
        timings["stream start"] = time.monotonic() - t
        warm = None if merge_in_load else _warm_up(server, tables, live)
        strict.reset()
        log(f"  cdc: {len(snapped)} tables snapshotted ({timings['setup and snapshot']:.0f}s); "
            f"hakobu stream up ({timings['stream start']:.0f}s, strict layer job latency "
            f"{job_latency}s); "
            + (f"warm-up merge round {warm:.1f}s; " if warm is not None else
               "no warm-up: the restart's merge round falls in the load; ")
            + f"load {rate:.0f} changes/s for {seconds:.0f}s")

        t, started = time.monotonic(), time.time()
        watch = Watch(client, tables, run_dir / "changes.jsonl")
        gen, machine = _load(run_dir, env, server, tables, rate, seconds, threads, watch,
                             drain_s, [os.getpid(), server.pid or 0, emu.pid])
        timings["load and drain"] = time.monotonic() - t
        log(f"  cdc: {gen['changes']:,} changes in {gen['seconds']:.1f}s; "
            f"{len(watch.seen):,} seen, {watch.queries:,} live-view queries")

        t = time.monotonic()
        stream_json = _stop(stream, run_dir)
        stream = None
        stats_stream = strict.stats()
        hooks = _MergeTimes()
        _, final = _catch_up(cfg, strict.url, run_dir / "work", hooks)
        final_rows = sum(x.merged_rows for ts in final.tenants.values()
                         for x in ts.tables.values())
        stats_all = strict.stats()
        bad = _verify(server, client, tables)
        timings["stop, merge, verify"] = time.monotonic() - t
    finally:
        if stream is not None:
            stream.kill()
            stream.wait()
        for x in (client, strict, emu):
            if x is not None:
                (x.close if x is client else x.stop)()
        server.stop()
    return figures({
        "params": {"seed_rows": seed_rows, "rate_target": rate, "seconds": seconds,
                   "job_latency_s": job_latency, "merge_in_load": merge_in_load},
        "tables": tables, "watch": watch, "generator": gen, "stream": stream_json,
        "stats_stream": stats_stream, "stats_all": stats_all, "mismatches": bad,
        "machine": machine, "timings": timings, "final_merges": hooks.merges, "final_rows": final_rows,
        "live": live,
        "load_started": started})


def cdc(ctx, report: Report, *, tenants: int, seconds: float, rate: float, seed_rows: int,
        job_latency: float, drain_s: float, merge_in_load: bool = False) -> None:
    """The `cdc` block of bench/run_all.py."""
    m = measure(tenants=tenants, seconds=seconds, rate=rate, seed_rows=seed_rows,
                job_latency=job_latency, drain_s=drain_s, merge_in_load=merge_in_load,
                log=ctx.log)
    ctx.results["cdc"] = m
    (STATE / "last_cdc.json").write_text(json.dumps(m, indent=1, default=str))
    report.goals.append(goal(m))
    report.section(*section(m))
    for ln in lines(m):
        ctx.log("  cdc: " + ln)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cdc", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenants", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--rate", type=float, default=RATE)
    ap.add_argument("--seed-rows", type=int, default=2000)
    ap.add_argument("--job-latency", type=float, default=1.0)
    ap.add_argument("--merge-in-load", action="store_true")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    m = measure(tenants=args.tenants, seconds=args.seconds, rate=args.rate,
                seed_rows=args.seed_rows, job_latency=args.job_latency,
                merge_in_load=args.merge_in_load)
    for ln in lines(m):
        log("cdc: " + ln)
    print(goal(m).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
