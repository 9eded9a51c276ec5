"""Issue #14 part 3: the night, simulated — N tenants (the issue's 300 with `--night-tenants
300`; 60 by default, which the emulator's throughput lets `make bench` finish) on 3 source
clusters through the production layout and the strict BigQuery layer.
`python -m bench.run_all --only night`.

The fleet (bench/night_fixtures.py): tenants round-robin over three clusters, each cluster its
own private MariaDB (localenv, ports 3421-3423; the read governor reads server-wide counters, so
three clusters on one server would see each other's reads) with its own read budget; every
third tenant of a cluster on the cluster's shared schema (org_id discriminator), the rest
schema-per-tenant; 8 tables each (7 with an updated_at cursor, one 20-row lookup table without
one); sizes skewed: 1 % large (100,000-row tables), 10 % medium (5,000), the rest small (300),
the smaller tables of a tenant a fraction of those. Warehouse enabled (email hashed).

Time is compressed by k = 1 / latency: BigQuery's ~1 s per job becomes `--night-latency`
seconds in the strict layer, and the tenants' schedules (cron between 00:30 and 02:45 UTC)
and deadlines (deliver_by 05:00-06:00) shrink by the same k, measured from the earliest
start. Reads, the emulator's own work and Dagster are not compressed (the pessimistic side).

Sequence, one run: seed what the fixture record lacks; night 0 (initial loads, not measured,
latency 0; the merge step once at its end); one night's changes (0.5-2 % of each table's rows
updated with updated_at bumped — among the newest tenth of the keys by default, uniformly with
`--night-changes scattered` — ~1/10 as many inserted and a few deleted;
bench/night_fixtures.change_sql); the naive night
(every table read in full, `SELECT *`, as the seeds' copy did), its pages counted on each
server; then the measured night, the strict layer at the latency, runs admitted as the queued
run coordinator admits them (bench/night_run.py says why that is equivalent), a sampler
reading each server's counters every second, and the `merge_warehouse` job run every 5
compressed minutes (the schedule's default) and once after the last tenant. Afterwards every tenant's customer tables and
warehouse slices are compared with the source (rows, sum of keys, sum of amounts: a missed
update changes the amount).

Before the naive night and again before the measured one, each server is let settle
(bench/night_fixtures.settle: purge done, the counter still for 2 s), so its own background
reads count in neither.

Pages are `Innodb_buffer_pool_read_requests` (logical page reads: the work done on the server,
cached or not), the counter the clusters' budgets are declared on (`counter: logical`), so the
budget goal and the pages goal measure what the governor holds. Physical reads are reported.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from bench import night_fixtures as nf
from bench.night_report import figures_of, goals, section
from bench.night_run import Coordinator
from bench.report import Report
from hakobu.localenv.emulator import start_emulator
from hakobu.localenv.strict_bq import StrictLimits, start_strict
from resources.bigquery_client import BigQuerySettings, make_client

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".local" / "bench" / "night"
PG_DB = "hakobu_night"
MERGE_EVERY_MIN = 5                  # tenants/warehouse.yaml merge_every_minutes (default)
PER_CLUSTER = 2                      # deploy/dagster.yaml: tag hakobu/cluster, limit 2
DEFAULT_BUDGET = 150                # logical pages/s of night-c1: binds (night_analysis.md)
BUDGET_SHARES = {"night-c1": 1.0, "night-c2": 0.75, "night-c3": 0.5}


class Sampler:
    """Each server's counters every second, in a thread of the parent."""

    def __init__(self, servers: dict):
        self.servers, self.samples, self._stop = servers, [], threading.Event()

    def _one(self) -> None:
        now = time.monotonic()
        self.samples.append((now, {c: nf.server_counters(s) for c, s in self.servers.items()}))

    def __enter__(self):
        self._one()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self._stop.wait(1.0):
            self._one()

    def __exit__(self, *exc):
        self._stop.set()
        self.t.join()
        self._one()


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q", "-c",
                    sql], check=True, capture_output=True, text=True)


def _dagster_home(tmp: Path) -> Path:
    """A fresh PostgreSQL database for run and event storage (deploy/dagster.yaml's storage),
    pools at the deploy's default limit."""
    _psql(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    _psql(f"CREATE DATABASE {PG_DB}")
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_db:\n      hostname: 127.0.0.1\n      port: 5432\n"
        f"      username: postgres\n      password: ''\n      db_name: {PG_DB}\n"
        "      scheme: postgresql+psycopg2\n"
        "concurrency:\n  pools:\n    default_limit: 8\n"
        "telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    # The pool's row, set once as an operator would (`dagster instance concurrency set`):
    # left to the first runs, concurrent first runs race to insert it on PostgreSQL and the
    # losers fail (UniqueViolation on concurrency_limits, Dagster 1.13; night_analysis.md).
    subprocess.run([str(Path(sys.executable).with_name("dagster")), "instance", "concurrency",
                    "set", "hakobu_mysql", "8"], check=True, capture_output=True,
                   env=dict(os.environ, DAGSTER_HOME=str(home)))
    return home


def _next_night(server) -> int:
    conn = nf.connect(server)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {nf.q(nf.META)}._nights (night INT "
                        "PRIMARY KEY, at DATETIME NOT NULL)")
            cur.execute(f"SELECT COALESCE(MAX(night), 0) + 1 FROM {nf.q(nf.META)}._nights")
            n = int(cur.fetchone()[0])
            cur.execute(f"INSERT INTO {nf.q(nf.META)}._nights VALUES (%s, NOW())", (n,))
            return n
    finally:
        conn.close()


def _per_server(servers: dict, fleet: dict, fn) -> dict:
    """fn(server, tenants) for every cluster side by side; {cluster: result}."""
    out, errors = {}, []

    def one(c):
        try:
            out[c] = fn(servers[c], fleet[c])
        except Exception as exc:     # noqa: BLE001 — raised below, with the cluster
            errors.append(f"{c}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one, args=(c,)) for c in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    return out


def _naive(servers: dict, fleet: dict) -> dict:
    """The naive night's reads, counted per server."""
    before = {c: nf.server_counters(s) for c, s in servers.items()}
    t0 = time.monotonic()
    rows = _per_server(servers, fleet, nf.full_copy_read)
    secs = time.monotonic() - t0
    after = {c: nf.server_counters(s) for c, s in servers.items()}
    return {c: {"rows": rows[c], "seconds": secs,
                "logical": after[c]["Innodb_buffer_pool_read_requests"]
                - before[c]["Innodb_buffer_pool_read_requests"],
                "physical": after[c]["Innodb_pages_read"] - before[c]["Innodb_pages_read"]}
            for c in servers}


def _plan(tenants: list, k: float) -> tuple[list, dict]:
    """The measured night's dispatch plan (tenant, cluster, due) and scaled deadlines."""
    first = min(t.start_s for t in tenants)
    plan = [(t.tid, t.cluster, (t.start_s - first) / k) for t in tenants]
    return plan, {t.tid: (t.deadline_s - first) / k for t in tenants}


def _bq_digests(url: str, tenants: list) -> tuple[dict, dict]:
    """(tenant, table) -> (rows, sum id, sum amount) of the customer tables and of the
    warehouse slices, read from the emulator directly (not through the strict layer)."""
    client = make_client(BigQuerySettings(endpoint=url), nf.PROJECT)
    cust, wh = {}, {}
    for t in tenants:
        sql = " UNION ALL ".join(
            f"SELECT '{n}' AS t, COUNT(*) AS n, COALESCE(SUM(id), 0) AS ids, "
            f"COALESCE(SUM(amount), 0) AS amount FROM `{nf.PROJECT}.night_{t.tid}.{n}`"
            for n in nf.table_names())
        for r in client.query(sql).result():
            cust[(t.tid, r["t"])] = (int(r["n"]), int(r["ids"]), str(r["amount"]))
    for n in nf.table_names():
        sql = (f"SELECT tenant_id, COUNT(*) AS n, COALESCE(SUM(id), 0) AS ids, "
               f"COALESCE(SUM(amount), 0) AS amount FROM "
               f"`{nf.PROJECT}.{nf.WAREHOUSE_DATASET}.{n}` GROUP BY tenant_id")
        for r in client.query(sql).result():
            wh[(r["tenant_id"], n)] = (int(r["n"]), int(r["ids"]), str(r["amount"]))
    client.close()
    return cust, wh


def _incomplete(source: dict, dest: dict) -> dict[str, list[str]]:
    """tenant -> tables whose digest differs (or that are missing)."""
    out: dict[str, list[str]] = {}
    for key, (n, ids, amount) in source.items():
        got = dest.get(key)
        if got is None or got[0] != n or got[1] != ids or Decimal(got[2]) != Decimal(amount):
            out.setdefault(key[0], []).append(f"{key[1]}: source {n}/{ids}/{amount}, "
                                              f"bigquery {got}")
    return out


def _stack(tmp: Path, root: Path, fleet: dict, log) -> tuple:
    """The PostgreSQL instance, the emulator, the strict layer and the run workers."""
    home = _dagster_home(tmp)
    emu = start_emulator(tmp / "bq", project=nf.PROJECT)
    strict = start_strict(emu.url, StrictLimits(job_latency_s=0.0))
    env = {"HAKOBU_BIGQUERY_ENDPOINT": strict.url, "HAKOBU_BIGQUERY_RETRY_DEADLINE": "120",
           "HAKOBU_WORK_DIR": str(tmp / "work"), "DAGSTER_HOME": str(home),
           "HAKOBU_CONFIG_DIR": str(root), "HAKOBU_WAREHOUSE_HASH_KEY": "night-bench-key",
           "NIGHT_LOG": str(tmp / "workers.log")}
    log(f"  night: emulator {emu.url}, strict layer {strict.url}, Dagster on PostgreSQL "
        f"{PG_DB}, {PER_CLUSTER} run workers per cluster")
    coord = Coordinator(root, sorted(fleet), env, PER_CLUSTER, log=log)
    return emu, strict, coord


# long: the night's steps in order, each one line; split, the sequence reads worse
def night(ctx, report: Report, *, tenants: int, latency: float, budget: int) -> None:
    log, timings = ctx.log, {}
    t = time.monotonic()
    specs = nf.layout(tenants, large_rows=20_000 if ctx.quick else None)
    fleet = {c: [x for x in specs if x.cluster == c] for c in nf.CLUSTERS}
    fleet = {c: v for c, v in fleet.items() if v}
    servers = nf.start_servers(STATE, list(fleet))
    _per_server(servers, fleet, lambda s, ts: nf.seed(s, ts, log=log))
    timings["servers and seed"] = time.monotonic() - t
    budgets = {c: int(budget * BUDGET_SHARES[c]) for c in fleet}
    with tempfile.TemporaryDirectory(prefix="hakobu-night-") as tmp:
        tmp = Path(tmp)
        root = nf.write_config(tmp / "cfg", specs, {c: s.port for c, s in servers.items()},
                               budgets, "logical")
        emu, strict, coord = _stack(tmp, root, fleet, log)
        try:
            t = time.monotonic()
            log(f"  night: night 0 (initial loads) of {len(specs)} tenants")
            n0 = coord.night([(x.tid, x.cluster, 0.0) for x in
                              sorted(specs, key=lambda x: -x.rows)])   # merged once at the end
            timings["night 0 (initial loads)"] = time.monotonic() - t
            t = time.monotonic()
            night_no = _next_night(next(iter(servers.values())))
            touched = _per_server(servers, fleet, lambda s, ts: nf.apply_changes(s, ts, night_no))
            before = _per_server(servers, fleet, lambda s, ts: nf.settle(s))
            naive = _naive(servers, fleet)
            after = _per_server(servers, fleet, lambda s, ts: nf.settle(s))
            settled = {c: (before[c], after[c]) for c in sorted(fleet)}
            log(f"  night: servers settled before the naive night and after it (pages their "
                f"own work read meanwhile, not counted): {settled}")
            timings["changes + naive night"] = time.monotonic() - t
            strict.reset()
            strict.limits = replace(strict.limits, job_latency_s=latency)
            k = 1.0 / latency if latency > 0 else 1.0
            plan, deadlines = _plan(specs, k)
            log(f"  night: measured night, latency {latency}s per job, time compressed "
                f"{k:.0f}x, last start at {max(p[2] for p in plan):.0f}s")
            t = time.monotonic()
            every = MERGE_EVERY_MIN * 60 / k      # the merge_warehouse schedule, compressed
            with Sampler(servers) as sampler:
                runs = coord.night(plan, merge_every_s=every)
            merges = coord.merges
            timings["measured night"] = time.monotonic() - t
            stats = strict.stats()
            t = time.monotonic()
            source = {}
            for part in _per_server(servers, fleet, nf.source_digests).values():
                source.update(part)
            cust, wh = _bq_digests(emu.url, specs)
            timings["verification"] = time.monotonic() - t
        finally:
            coord.close()
            strict.stop()
            emu.stop()
            _psql(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    for s in servers.values():
        s.stop()
    fig = figures_of(specs=specs, runs=runs, night0=n0, deadlines=deadlines, stats=stats,
                     samples=sampler.samples, naive=naive, budgets=budgets,
                     cust_bad=_incomplete(source, cust), wh_bad=_incomplete(source, wh),
                     latency=latency, touched=touched, timings=timings, merges=merges)
    fig["changes"] = nf.changes_mode()
    ctx.results["night"] = fig
    (STATE / "last_night.json").write_text(json.dumps(
        {"figures": fig, "runs": runs, "night0": n0, "merges": merges, "strict": stats},
        indent=1, default=str))
    report.goals.extend(goals(fig))
    title, body = section(fig)
    report.section(title, body)
    for line in fig["log_lines"]:
        log("  night: " + line)


def default_latency(quick: bool) -> float:
    return float(os.environ.get("HAKOBU_NIGHT_LATENCY") or (0.02 if quick else 0.05))
