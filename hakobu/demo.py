"""`hakobu demo`: the embedded default end to end.

A MySQL-compatible server (127.0.0.1:3306 if reachable, else a private MariaDB), the BigQuery
emulator, the demo tenants in tenants/; two nightly runs through Dagster with changes in between;
a summary read back from BigQuery. Leaves nothing running unless --keep-running.
"""

import os
import secrets
import sys
import time

from google.api_core.exceptions import NotFound
from google.cloud import bigquery

from hakobu.config import REPO_ROOT, load_config
from hakobu.launch import ensure_dagster_home, run_load
from hakobu.localenv.demo_data import (DEMO_SCHEMAS, connect, create_demo_data,
                                       mutate_demo_data)
from hakobu.localenv.emulator import start_emulator
from hakobu.localenv.mariadb import ensure_mysql
from hakobu.localenv.up import running
from hakobu.policy import export_plan, warehouse_table
from hakobu.reconcile import diff_table
from hakobu.sqlquote import quote_ident
from hakobu.planning import plan_for
from resources.dagster import open_io

LOCAL = REPO_ROOT / ".local"


def say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(keep_running: bool = False) -> int:
    t_start = time.monotonic()
    kept = running(LOCAL)            # `hakobu up` left the environment running: use it
    server = ensure_mysql(LOCAL / "mariadb")
    say(f"MySQL: {server.host}:{server.port} ({'private MariaDB' if server.private else 'shared'})")
    # the demo's clusters.yaml reads ${HAKOBU_MYSQL_HOST/PORT/USER}; endpoints only, no secrets
    os.environ.update(HAKOBU_MYSQL_HOST=server.host, HAKOBU_MYSQL_PORT=str(server.port),
                      HAKOBU_MYSQL_USER=server.user)
    emu = None if kept else start_emulator(LOCAL / "bqemulator")
    os.environ["HAKOBU_BIGQUERY_ENDPOINT"] = kept.emulator_url if kept else emu.url
    os.environ.setdefault("HAKOBU_BIGQUERY_RETRY_DEADLINE", "30")
    home = ensure_dagster_home()
    say(f"BigQuery emulator: {os.environ['HAKOBU_BIGQUERY_ENDPOINT']}"
        f"{' (started by `hakobu up`)' if kept else ''}   Dagster instance: {home}")
    try:
        ok = _two_runs(server)
        say(f"Demo finished in {time.monotonic() - t_start:.0f}s. "
            f"See the runs: DAGSTER_HOME={home} .venv/bin/dagster dev -w workspace.yaml")
        return 0 if ok else 1
    finally:
        if kept:
            say("Left running (started by `hakobu up`; `hakobu down` stops it)")
        elif keep_running:
            say(f"Left running: emulator pid {emu.pid} at {emu.url}"
                + (f", MariaDB pid {server.pid}" if server.private else "")
                + " (to keep one running for the other commands, use `hakobu up`)")
        else:
            emu.stop()
            server.stop()
        sys.stdout.flush()


def _two_runs(server) -> bool:
    """Demo data, a first run, changes, a second run; True when both equal the sources and
    the second read only the changed rows."""
    config = load_config()
    written = create_demo_data(server.host, server.port, server.user)
    say(f"Demo source data: {sum(written.values())} rows in {len(DEMO_SCHEMAS)} schemas")
    with open_io() as io:           # the same IO builder as the runs' `io` resource
        for tenant in config.tenants.values():  # a fresh destination: reruns start clean
            dest = io.customer(tenant)
            try:
                dest.client.delete_dataset(f"{dest.project}.{dest.dataset}",
                                           delete_contents=True, retry=dest.retry)
            except NotFound:
                pass
        warehouse = _demo_warehouse(config, io.settings)
        first = _run_all(config, "Run 1 (initial load)")
        say("")
        ok1 = _summary(config, io, first, None)
        changed_raw = mutate_demo_data(server.host, server.port, server.user)
        changed = _changed_per_tenant(config, changed_raw, server)
        say(f"\nChanged in the sources: {sum(changed.values())} rows (updates and inserts)")
        lag = max(c.lag_seconds for c in config.clusters.values())
        time.sleep(lag + 1)   # rows newer than now-lag wait for the next run, by design
        second = _run_all(config, "Run 2 (incremental)")
        say("")
        ok2 = _summary(config, io, second, changed)
        if warehouse is not None:
            say(_warehouse_line(config, io))

    def cursor_rows(reads) -> int:
        return sum(int(r["rows_read"]) for (t, tb), r in reads.items()
                   if config.tenant(t).table(tb).cursor)

    only_changed = all(int(second[(t, tb.name)]["rows_read"]) ==
                       changed.get((t, f"{config.tenant(t).source.schema_}.{tb.name}"), 0)
                       for t in config.tenants for tb in config.tenant(t).tables if tb.cursor)
    say(f"\nRun 2 read {cursor_rows(second)} rows of tables with a cursor (run 1: "
        f"{cursor_rows(first)}); only changed rows read: {'yes' if only_changed else 'NO'}; "
        f"BigQuery equals source: {'yes' if ok1 and ok2 else 'NO'}")
    return ok1 and ok2 and only_changed


def _run_all(config, title: str) -> dict[tuple, dict]:
    say(f"\n== {title}: the nightly job, one Dagster run per tenant ==")
    out = {}
    for tid in sorted(config.tenants):
        t0 = time.monotonic()
        outcome = run_load(config, tid)
        rows = outcome.rows
        if not outcome.ok:
            raise SystemExit(f"demo: tenant {tid} failed: {outcome.error}")
        for r in rows:
            out[(tid, r["table"])] = r
        say(f"  {tid}: {sum(int(r['rows_read']) for r in rows)} rows read in "
            f"{time.monotonic() - t0:.1f}s")
    return out


def _summary(config, io, reads: dict[tuple, dict], changed: dict | None) -> bool:
    head = (f"{'tenant':<7}{'table':<14}{'read':>7}"
            + (f"{'changed':>9}" if changed is not None else "")
            + f"{'source':>8}{'bigquery':>10}  {'watermark':<28}content")
    say(head)
    all_equal = True
    for tid in sorted(config.tenants):
        tenant = config.tenant(tid)
        source = io.source(config.cluster_of(tenant))
        dest = io.customer(tenant)
        for table in tenant.tables:
            plan = plan_for(source, tenant, table)
            d = diff_table(source, dest, plan)
            all_equal &= d.equal
            wm = dest.read_watermark(table.name)
            r = reads[(tid, table.name)]
            line = f"{tid:<7}{table.name:<14}{int(r['rows_read']):>7}"
            if changed is not None:
                n = changed.get((tid, f"{tenant.source.schema_}.{table.name}"), 0)
                line += f"{n if table.cursor else '(full)':>9}"
            line += (f"{d.source_rows:>8}{d.dest_rows:>10}  "
                     f"{(wm.display() if wm else '(no cursor)'):<28}"
                     f"{'equal' if d.equal else d.summary()}")
            say(line)
    return all_equal


def _changed_per_tenant(config, changed_raw: dict, server) -> dict:
    """mutate_demo_data counts per schema.table; split shared schemas by tenant."""
    out = {}
    for tenant in config.tenants.values():
        schema = tenant.source.schema_
        for table in tenant.tables:
            key = f"{schema}.{table.name}"
            if key not in changed_raw:
                continue
            if not tenant.source.shared:
                out[(tenant.tenant, key)] = changed_raw[key]
                continue
            # shared tables: count this tenant's rows touched by the mutation (updated today)
            conn = connect(server.host, server.port, server.user)
            try:
                with conn.cursor() as cur:
                    cur.execute(f"SELECT COUNT(*) FROM {quote_ident(schema)}."
                                f"{quote_ident(table.name)} WHERE "
                                f"{quote_ident(tenant.source.tenant_column)} = %s AND "
                                f"updated_at > '2026-11-15'", (tenant.source.tenant_value,))
                    out[(tenant.tenant, key)] = cur.fetchone()[0]
            finally:
                conn.close()
    return out


def _demo_warehouse(config, settings):
    """The warehouse of tenants/warehouse.yaml, emptied for the demo; a throwaway HMAC key for
    this process when none is set (a real deployment sets its own, and keeps it)."""
    w = config.warehouse
    if w is None or not w.enabled:
        return None
    if not os.environ.get(w.hash_key_env):
        os.environ[w.hash_key_env] = secrets.token_hex(32)
        say(f"Warehouse {w.project}.{w.dataset}: {w.hash_key_env} not set, using a random key "
            "for this demo")
    client = settings.client(w.project)
    try:
        client.delete_dataset(f"{w.project}.{w.dataset}", delete_contents=True)
    except NotFound:
        pass
    return w


def _warehouse_line(config, io) -> str:
    """One line: the warehouse's rows per tenant against the sources, and the policy applied."""
    w = config.warehouse
    client = io.settings.client(w.project)
    per_tenant: dict[str, int] = {}
    equal = True
    hashed, dropped = set(), set()
    for tid in sorted(config.tenants):
        tenant = config.tenant(tid)
        source = io.source(config.cluster_of(tenant))
        for table in tenant.tables:
            plan = export_plan(plan_for(source, tenant, table), table)
            wt = warehouse_table(plan, w)
            hashed |= set(wt.hashed)
            dropped |= ({s.name for s in plan.specs} - {s.name for s in wt.specs}
                        - {tenant.source.tenant_column})
            [row] = client.query(
                f"SELECT COUNT(*) AS n FROM `{w.project}.{w.dataset}.{table.name}` "
                f"WHERE tenant_id = @t", job_config=_params(tid)).result()
            n = row["n"]
            per_tenant[tid] = per_tenant.get(tid, 0) + n
            where = (f" WHERE {quote_ident(tenant.source.tenant_column)} = :v"
                     if tenant.source.shared else "")
            src = source.query(f"SELECT COUNT(*) FROM {quote_ident(tenant.source.schema_)}."
                               f"{quote_ident(table.name)}{where}",
                               {"v": tenant.source.tenant_value})[0][0]
            equal &= src == n
    counts = ", ".join(f"{t} {n}" for t, n in per_tenant.items())
    return (f"\nWarehouse {w.project}.{w.dataset} (fed by the same reads): rows {counts}; "
            f"row counts equal the sources: {'yes' if equal else 'NO'}; "
            f"hashed: {', '.join(sorted(hashed)) or '-'}; "
            f"dropped: {', '.join(sorted(dropped)) or '-'} (and credentials, never exported)")


def _params(tenant_id: str):
    return bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter("t", "STRING", tenant_id)])
