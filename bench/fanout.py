"""Goal 5, fan-out: N tenants x M small tables, the nightly job vs the pure extraction + load.

Three deliveries of the same rows, each into its own datasets of one fresh BigQuery emulator:
  pure     per table, back to back: hakobu's extractor (iter_chunks) -> Parquet -> one load job
           into a table created beforehand (creation not timed): the work itself;
  sync     hakobu.sync.sync_tenant(verify=True) for every tenant, one after the other (plain
           Python; verify: the comparison the nightly step reports as `in_sync_with_source`);
  dagster  the `nightly` job, one in-process run per tenant partition (what the schedules launch).
`sync - pure` is hakobu's own per-tenant and per-table work (datasets, state table, plans, staging
tables, MERGE, watermarks); `dagster - sync` is Dagster's overhead per run = per tenant.

The parent (`fanout`) builds the fixture schemas, starts the emulator and runs the measuring
child (`python -m bench.fanout '<json>'`) with HAKOBU_BIGQUERY_ENDPOINT set in its environment.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fixtures import COLUMNS_DDL, SELECT_SQL, Server, _q, ensure_schema
from bench.report import Goal, Report
from hakobu.planning import plan_for

REPO = Path(__file__).resolve().parent.parent
PROJECT = "hakobu-bench"


def fan_schemas(base: str, tenants: int) -> list[str]:
    return [f"{base}_fan_{i:02d}" for i in range(tenants)]


def ensure_fan_fixtures(server: Server, base: str, tenants: int, tables: int, rows: int,
                        log=print) -> int:
    """Schemas base_fan_00.. with tables t0.. of `rows` rows each; returns tables built."""
    ensure_schema(server, base)          # its _fixtures table records what was built
    conn = server.connect()
    built = 0
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT name FROM {_q(base)}._fixtures WHERE nrows = %s", (rows,))
            have = {r[0] for r in cur.fetchall()}
            for schema in fan_schemas(base, tenants):
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {_q(schema)} CHARACTER SET utf8mb4")
                cur.execute(f"USE {_q(schema)}")   # seq_1_to_N resolves in the current schema
                for j in range(tables):
                    name = f"{schema}.t{j}"
                    if name in have:
                        cur.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                                    "TABLE_SCHEMA = %s AND TABLE_NAME = %s", (schema, f"t{j}"))
                        if cur.fetchone()[0]:
                            continue
                    ref = f"{_q(schema)}.{_q(f't{j}')}"
                    cur.execute(f"DROP TABLE IF EXISTS {ref}")
                    cur.execute(f"CREATE TABLE {ref} ({COLUMNS_DDL}, INDEX ix_updated_at "
                                "(updated_at)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
                    cur.execute(f"INSERT INTO {ref} " + SELECT_SQL.format(lo=1, hi=rows))
                    cur.execute(f"REPLACE INTO {_q(base)}._fixtures VALUES "
                                "(%s, %s, 1, NOW(), 0)", (name, rows))
                    built += 1
    finally:
        conn.close()
    if built:
        log(f"  built {built} fan-out tables")
    return built


def fanout(ctx, report: Report, *, tenants: int, tables: int, rows: int,
           sync_tenants: int | None = None) -> None:
    from hakobu.localenv.emulator import start_emulator

    ensure_fan_fixtures(ctx.server, ctx.schema, tenants, tables, rows, log=ctx.log)
    sync_tenants = min(tenants, sync_tenants or tenants)
    with tempfile.TemporaryDirectory(prefix="hakobu-bench-fanout-") as tmp:
        tmp = Path(tmp)
        emu = start_emulator(tmp / "bq")
        try:
            s = ctx.server
            job = {"host": s.host, "port": s.port, "user": s.user, "base": ctx.schema,
                   "tenants": tenants, "tables": tables, "rows": rows, "root": str(tmp / "cfg"),
                   "sync_tenants": sync_tenants}
            env = dict(os.environ)
            env.update({"HAKOBU_BIGQUERY_ENDPOINT": emu.url, "HAKOBU_BIGQUERY_RETRY_DEADLINE": "60",
                        "HAKOBU_WORK_DIR": str(tmp / "work"),
                        "DAGSTER_HOME": str(tmp / "dagster_home"),
                        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", "")})
            (tmp / "dagster_home").mkdir()
            (tmp / "dagster_home" / "dagster.yaml").write_text(
                "telemetry:\n  enabled: false\n")
            proc = subprocess.run([sys.executable, "-m", "bench.fanout", json.dumps(job)],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
        finally:
            emu.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"fan-out child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    n_tables = tenants * tables
    pure, dag = res["pure_s"], sum(res["dagster_per_tenant"].values())
    sub = list(res["sync_per_tenant"])
    sync_sub = sum(res["sync_per_tenant"].values())
    dag_sub = sum(res["dagster_per_tenant"][t] for t in sub)
    pure_sub = sum(res["pure_per_tenant"][t] for t in sub)
    dag_over = (dag_sub - sync_sub) / len(sub)
    sync_over = (sync_sub - pure_sub) / len(sub)
    ctx.log(f"  {tenants} tenants x {tables} tables: pure {pure:.1f}s, nightly Dagster job "
            f"{dag:.1f}s; on {len(sub)} tenants: sync_tenant {sync_sub:.1f}s, "
            f"Dagster {dag_sub:.1f}s")
    report.goals.append(Goal(
        "fanout-overhead", dag / pure, "<=", 1.25, "x",
        f"nightly Dagster job (one run per tenant) {dag:.1f}s vs pure extraction+load {pure:.1f}s, "
        f"{tenants} tenants x {tables} tables x {rows:,} rows"))
    report.fact("fan-out: Dagster overhead per tenant (run − `sync_tenant` of the same tenant, "
                f"mean of {len(sub)})", f"{dag_over:.2f}s")
    report.fact("fan-out: hakobu's own overhead per tenant (`sync_tenant` − pure, mean of "
                f"{len(sub)})", f"{sync_over:.2f}s ({sync_over / tables:.2f}s per table)")
    lines = ["| delivery | tenants | wall s | per tenant s | per table s |", "|---|---|---|---|---|"]
    for name, n, v in (("pure extraction + load (sum over tables)", tenants, pure),
                       ("`nightly` Dagster job, one in-process run per tenant", tenants, dag),
                       ("pure, same tenants as the next two rows", len(sub), pure_sub),
                       ("`sync_tenant(verify=True)` (plain Python, no Dagster)", len(sub),
                        sync_sub),
                       ("`nightly` Dagster job, same tenants", len(sub), dag_sub)):
        lines.append(f"| {name} | {n} | {v:.1f} | {v / n:.2f} | {v / (n * tables):.3f} |")
    calls = res.get("sync_calls", {})
    if calls:
        lines += ["", "Where the nightly job's time went (calls and seconds summed over the two "
                  "table threads; nested calls count in both, e.g. `merge` contains "
                  "`_load_staging` and `sql`):", "",
                  "| method | calls | calls per table | seconds | ms per call |",
                  "|---|---|---|---|---|"]
        for k, (n, secs) in sorted(calls.items(), key=lambda kv: -kv[1][1]):
            lines.append(f"| `{k}` | {n} | {n / n_tables:.1f} | {secs:.1f} | "
                         f"{secs / max(1, n) * 1000:.0f} |")
    br = res.get("pure_breakdown", {})
    report.section(
        f"5. Fan-out ({tenants} tenants × {tables} tables × {rows:,} rows)",
        "\n".join(lines) + "\n\n"
        f"Pure work per table: read {br.get('read_s', 0) / n_tables * 1000:.0f} ms, "
        f"Parquet {br.get('stage_s', 0) / n_tables * 1000:.0f} ms, load job "
        f"{br.get('load_s', 0) / n_tables * 1000:.0f} ms. Against the BigQuery emulator "
        "(bqemulator on DuckDB, on the same two cores): its per-job latency stands in for "
        "BigQuery's, which is higher (a second or more per query job), so on real BigQuery the "
        "number of jobs per table weighs even more. Each delivery went into its own fresh "
        "datasets (initial loads of the same rows); tenants ran one after the other, a tenant's "
        "tables side by side up to the cluster's `max_connections` (2).")


# ---------------------------------------------------------------------------------------------
# the measuring child


def _config(job: dict, prefix: str):
    from hakobu.config import Cluster, Config, Tenant

    root = Path(job["root"])
    (root / "tenants").mkdir(parents=True, exist_ok=True)
    perms = root / "permissions.csv"
    if not perms.exists():
        perms.write_text("dataset,role,member\n")
    cluster = Cluster(name="bench", host=job["host"], port=job["port"], user=job["user"],
                      timezone="UTC", lag_seconds=0)
    tenants = {}
    for i, schema in enumerate(fan_schemas(job["base"], job["tenants"])):
        tid = f"fan{i:02d}"
        tenants[tid] = Tenant(
            tenant=tid, cluster="bench", source={"schema": schema},
            destination={"project": PROJECT, "dataset": f"{prefix}{tid}", "location": "US"},
            schedule={"cron": "0 2 * * *"}, deliver_by="06:00",
            tables=[{"name": f"t{j}", "cursor": "updated_at", "chunk_rows": 50_000}
                    for j in range(job["tables"])])
    return Config(root=root, clusters={"bench": cluster}, tenants=tenants)


def _pure(job: dict) -> dict:
    from hakobu.types import arrow_schema
    from resources.bigquery_client import BigQuerySettings
    from hakobu.bqschema import SEQ
    from resources.bigquery_dest import BigQueryDestination
    from resources.mysql_source import MySQLSource, iter_chunks

    cfg = _config(job, "bench_fan_p_")
    settings = BigQuerySettings.from_env()
    source = MySQLSource(cfg.clusters["bench"])
    work = Path(os.environ["HAKOBU_WORK_DIR"])
    read_s = stage_s = load_s = 0.0
    rows = 0
    per: dict[str, float] = {}
    for tenant in cfg.tenants.values():
        d = tenant.destination
        dest = BigQueryDestination(settings, d.project, d.dataset, d.location, work)
        dest.ensure_dataset()
        for table in tenant.tables:
            plan = plan_for(source, tenant, table)
            cols = [(s.name, s.staging_bq_type) for s in plan.specs] + [(SEQ, "INT64")]
            dest.sql(f"CREATE TABLE {dest.ref(table.name)} ("
                     + ", ".join(f"`{n}` {t}" for n, t in cols) + ")")
            upper, _ = source.upper_bound(plan)
            t0 = time.perf_counter()
            with dest.staging_file(table.name, arrow_schema(list(plan.specs))) as sf:
                chunks = []
                for batch, _ in iter_chunks(source, plan, "main", None, upper):
                    chunks.append(batch)
                t1 = time.perf_counter()
                for batch in chunks:
                    sf.write(batch)
                    rows += batch.num_rows
                path = sf.close()
                t2 = time.perf_counter()
                dest.load_parquet(path, table.name)
                t3 = time.perf_counter()
            read_s += t1 - t0
            stage_s += t2 - t1
            load_s += t3 - t2
            per[tenant.tenant] = per.get(tenant.tenant, 0.0) + t3 - t0
    source.dispose()
    return {"pure_s": read_s + stage_s + load_s, "pure_rows": rows, "pure_per_tenant": per,
            "pure_breakdown": {"read_s": read_s, "stage_s": stage_s, "load_s": load_s}}


def _instrument(acc: dict) -> list:
    """Time (sum over threads) and count calls of the source's and destination's methods, to
    say where a sync's time goes. Patches the classes in this child process only."""
    import functools
    import threading

    from resources.bigquery_dest import BigQueryDestination
    from resources.mysql_source import MySQLSource

    lock = threading.Lock()
    undo = []
    for cls, names in ((BigQueryDestination, ("ensure_dataset", "ensure_state_table",
                                              "drop_stale_staging", "ensure_table",
                                              "read_watermark", "write_watermark", "merge",
                                              "_load_staging", "sql", "rows")),
                       (MySQLSource, ("ping", "reflect", "upper_bound"))):
        for name in names:
            orig = getattr(cls, name, None)
            if orig is None:
                continue

            def wrap(orig=orig, key=f"{cls.__name__}.{name}"):
                @functools.wraps(orig)
                def timed(*a, **kw):
                    t0 = time.perf_counter()
                    try:
                        return orig(*a, **kw)
                    finally:
                        with lock:
                            n, secs = acc.get(key, (0, 0.0))
                            acc[key] = (n + 1, secs + time.perf_counter() - t0)
                return timed

            setattr(cls, name, wrap())
            undo.append((cls, name, orig))
    return undo


def _sync(job: dict, tenant_ids: list[str]) -> dict:
    from hakobu.sync import sync_tenant
    from resources.io import LiveIO

    io = LiveIO.from_env()

    cfg = _config(job, "bench_fan_s_")
    per = {}
    rows = 0
    for tid in tenant_ids:
        t0 = time.perf_counter()
        for r in sync_tenant(cfg, tid, io=io, verify=True):   # what the nightly step runs
            if not r.ok:
                raise RuntimeError(f"sync {tid}/{r.table}: {r.error}")
            rows += r.rows_read
        per[tid] = time.perf_counter() - t0
    return {"sync_per_tenant": per, "sync_rows": rows}


def _dagster(job: dict) -> dict:
    import dagster as dg

    from pipelines.build import NIGHTLY, build_definitions

    cfg = _config(job, "bench_fan_d_")
    defs = build_definitions(cfg)
    nightly = defs.resolve_job_def(NIGHTLY)
    instance = dg.DagsterInstance.get()
    acc: dict = {}
    undo = _instrument(acc)
    per = {}
    try:
        for tid in sorted(cfg.tenants):
            t0 = time.perf_counter()
            result = nightly.execute_in_process(partition_key=tid, instance=instance,
                                                raise_on_error=True)
            if not result.success:
                raise RuntimeError(f"nightly run for {tid} failed")
            per[tid] = time.perf_counter() - t0
    finally:
        for cls, name, orig in undo:
            setattr(cls, name, orig)
    return {"dagster_per_tenant": per,
            "sync_calls": {k: [n, round(s, 3)] for k, (n, s) in sorted(acc.items())}}


def main(argv: list[str]) -> int:
    job = json.loads(argv[1])
    out = {}
    out.update(_pure(job))
    tenant_ids = [f"fan{i:02d}" for i in range(job["tenants"])]
    subset = tenant_ids[:job.get("sync_tenants") or len(tenant_ids)]
    out.update(_sync(job, subset))
    out.update(_dagster(job))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
