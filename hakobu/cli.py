"""The `hakobu` command.

Every command reads tenants/ and permissions.csv from HAKOBU_CONFIG_DIR (default: the repository
root) and talks to BigQuery as configured by HAKOBU_BIGQUERY_ENDPOINT (unset: real BigQuery with
application-default credentials). Loads run as Dagster materializations in the instance at
DAGSTER_HOME (default: .local/dagster_home in the repository), so they show in `dagster dev`.
"""

import argparse
import os
import re
import sys
from pathlib import Path

from hakobu.config import REPO_ROOT, Config, load_config
from hakobu.errors import ConfigError, HakobuError

EXIT_OK, EXIT_FAIL, EXIT_PENDING = 0, 1, 2


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME, defaulting to a persistent project-local instance with telemetry off."""
    home = Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".local" / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
                       "concurrency:\n  pools:\n    default_limit: 4\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# -- validate -----------------------------------------------------------------------------------

def cmd_validate(args) -> int:
    config = load_config()
    problems: list[str] = []
    try:
        from hakobu.grants.csvfile import load_rows

        load_rows(config)
    except ConfigError as exc:
        problems.append(str(exc))
    tables = sum(len(t.tables) for t in config.tenants.values())
    from pipelines.build import definition_problems

    problems += definition_problems(config)     # what would stop the code location loading
    if not args.offline:
        problems += check_sources(config)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_FAIL
    where = "files only" if args.offline else "files and sources"
    print(f"OK: {len(config.tenants)} tenants, {tables} tables, {len(config.clusters)} clusters "
          f"({where}) in {config.root}")
    return EXIT_OK


def check_sources(config: Config) -> list[str]:
    """Reflect every declared table on its cluster: unknown tables/columns, missing keys and
    indexes, types hakobu cannot deliver, tenant values of another type than their column,
    tenants whose values the column's collation takes for one. Each problem names the file and
    line it is about. Nothing is read or written."""
    from hakobu.sync import source_for

    out = []
    for tenant in config.tenants.values():
        try:
            source = source_for(config, tenant)
            source.ping()
        except HakobuError as exc:
            out.append(f"{config.where(tenant.tenant, 'cluster')}: tenant {tenant.tenant}: {exc}")
            continue
        for table in tenant.tables:
            try:
                source.plan_table(tenant, table)
            except HakobuError as exc:
                key = getattr(exc, "config_key", None)
                at = (config.where(tenant.tenant, *key) if key and key[0] == "source"
                      else config.table_where(tenant.tenant, table.name, key and key[-1]))
                out.append(f"{at}: {exc}")
    out += collation_collisions(config)
    return out


def collation_collisions(config: Config) -> list[str]:
    """Tenants of one shared table whose string tenant_values differ as written but are equal
    under the tenant column's collation ('café' and 'cafe' under utf8mb4_general_ci; 'ß' and
    'ss' under unicode_ci): the application takes them for one tenant, so their rows would be
    delivered to either dataset. The server compares them, in the column's own collation."""
    from hakobu.sqlquote import mysql_literal
    from hakobu.sync import source_for

    groups: dict[tuple, list] = {}
    for t in config.tenants.values():
        if t.source.shared and isinstance(t.source.tenant_value, str):
            c = config.cluster_of(t)
            key = (c.host.lower(), c.port, t.source.schema_.lower(),
                   t.source.tenant_column.lower())
            groups.setdefault(key, []).append(t)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        first = members[0]
        tables = sorted({x.name for m in members for x in m.tables})
        try:
            source = source_for(config, first)
            rows = source.query(
                "SELECT TABLE_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM "
                "information_schema.COLUMNS WHERE TABLE_SCHEMA = :s AND COLUMN_NAME = :c",
                {"s": first.source.schema_, "c": first.source.tenant_column})
        except HakobuError as exc:
            out.append(f"{config.where(first.tenant, 'source')}: {exc}")
            continue
        reported: set[tuple[str, str]] = set()
        for table, charset, collation in rows:
            if table not in tables or not charset or not re.fullmatch(r"\w+", collation + charset):
                continue
            vals = [f"SELECT {i} AS i, CONVERT({mysql_literal(m.source.tenant_value)} USING "
                    f"{charset}) COLLATE {collation} AS v" for i, m in enumerate(members)]
            union = " UNION ALL ".join(vals)
            pairs = source.query(f"WITH x AS ({union}) SELECT a.i, b.i FROM x a JOIN x b "
                                 "ON a.i < b.i AND a.v = b.v")
            for i, j in pairs:
                a, b = members[i], members[j]
                if (a.tenant, b.tenant) in reported:
                    continue
                reported.add((a.tenant, b.tenant))
                out.append(
                    f"{config.where(b.tenant, 'source', 'tenant_value')}: source.tenant_value: "
                    f"tenants {a.tenant!r} ({a.file}) and {b.tenant!r} read the same rows of "
                    f"{first.source.schema_}.{table}: {a.source.tenant_value!r} and "
                    f"{b.source.tenant_value!r} are equal under the tenant column's collation "
                    f"{collation} — give each tenant a value of its own")
    return out


# -- load ---------------------------------------------------------------------------------------

def run_load(config: Config, tenant_id: str, tables: list[str] | None = None, *,
             quiet: bool = True, job_name: str | None = None
             ) -> tuple[bool, list[dict], str | None]:
    """Materialize one tenant's customer tables (and, read once, their warehouse twins when the
    warehouse is enabled) through the Dagster `nightly` job, or the named job (`backfill`).

    Returns (success, per-table metadata dicts of the customer tables, error text)."""
    import dagster as dg

    from assets.customer import customer_key, warehouse_key
    from hakobu.warehouse import enabled as warehouse_enabled
    from pipelines.build import NIGHTLY, build_definitions, run_tags

    tenant = config.tenant(tenant_id)
    names = tables or [t.name for t in tenant.tables]
    for n in names:
        tenant.table(n)
    ensure_dagster_home()
    defs = build_definitions(config)
    job = defs.resolve_job_def(job_name or NIGHTLY)
    selection = [customer_key(n) for n in names]
    if warehouse_enabled(config):
        selection += [warehouse_key(n) for n in names]
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING" if quiet
                                                                    else "INFO"}}}}
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, partition_key=tenant_id, raise_on_error=False,
            asset_selection=selection, run_config=run_config,
            tags=run_tags(config, tenant_id))
        rows = []
        for ev in result.get_asset_materialization_events():
            mat = ev.event_specific_data.materialization
            if mat.asset_key.path[0] != "customer":
                continue
            md = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
            rows.append({"table": mat.asset_key.path[-1], **md})
        error = None
        if not result.success:
            failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            error = "; ".join(
                (e.event_specific_data.error.message.strip().splitlines() or ["failed"])[-1]
                if e.event_specific_data and e.event_specific_data.error else "failed"
                for e in failures) or "run failed"
        return result.success, rows, error


def cmd_load(args) -> int:
    config = load_config(isolate=True)   # another tenant's broken file is not ours
    tables = [t.strip() for t in args.tables.split(",")] if args.tables else None
    ok, rows, error = run_load(config, args.tenant, tables, quiet=not args.verbose)
    print(f"{'table':<16}{'rows read':>10}{'merged':>9}{'seconds':>9}  watermark")
    for r in sorted(rows, key=lambda r: r["table"]):
        print(f"{r['table']:<16}{r['rows_read']:>10}{r['rows_merged']:>9}"
              f"{float(r['duration_s']):>9.2f}  {r['watermark']}")
    if not ok:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


# -- backfill -----------------------------------------------------------------------------------

def cmd_backfill(args) -> int:
    """Full reload through shadow tables, as the Dagster `backfill` job (recorded in the
    instance), with a progress bar per table."""
    from hakobu.backfill import add_listener, remove_listener
    from pipelines.build import BACKFILL

    config = load_config(isolate=True)   # another tenant's broken file is not ours
    tables = [t.strip() for t in args.tables.split(",")] if args.tables else None
    bars: dict = {}

    def show(p) -> None:
        if args.no_progress:
            if p.finished:
                print(p.line(), file=sys.stderr, flush=True)
            return
        from tqdm import tqdm

        bar = bars.get(p.table)
        if bar is None:
            bar = bars[p.table] = tqdm(total=p.total or None, unit="rows", unit_scale=True,
                                       desc=f"{p.tenant}/{p.table}", leave=True,
                                       dynamic_ncols=True)
        if p.total and p.done > (bar.total or 0):
            bar.total = p.done                     # the estimate was low
        bar.update(p.done - bar.n)
        if p.finished:
            bar.close()

    add_listener(show)
    try:
        ok, rows, error = run_load(config, args.tenant, tables, quiet=not args.verbose,
                                   job_name=BACKFILL)
    finally:
        remove_listener(show)
        for bar in bars.values():
            bar.close()
    print(f"{'table':<16}{'rows read':>10}{'shadow':>9}{'rows/s':>10}{'seconds':>9}  watermark")
    for r in sorted(rows, key=lambda r: r["table"]):
        print(f"{r['table']:<16}{r['rows_read']:>10}{r.get('customer_shadow_rows', '-'):>9}"
              f"{float(r.get('rows_per_s', 0)):>10,.0f}{float(r['duration_s']):>9.2f}  "
              f"{r['watermark']}")
    if not ok:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


# -- status -------------------------------------------------------------------------------------

def cmd_status(args) -> int:
    """Per tenant: last delivery, watermark lag, next run, predicted finish, deadline margin —
    from the Dagster instance only (no source or BigQuery access)."""
    import json

    import dagster as dg

    from hakobu.status import collect, render

    config = load_config(isolate=True)   # another tenant's broken file is not ours
    tenants = [t.strip() for t in args.tenants.split(",")] if args.tenants else None
    for t in tenants or []:
        if t not in {b.tenant for b in config.broken}:
            config.tenant(t)
    wanted = [t for t in tenants if t in config.tenants] if tenants else None
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        statuses = collect(config, instance, tenants=wanted) if wanted != [] else []
    broken = [b for b in config.broken if not tenants or b.tenant in tenants]
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses]
                         + [{"tenant": b.tenant, "file": b.file,
                             "left_out": [str(e) for e in b.errors]} for b in broken], indent=2))
    else:
        print(render(statuses, broken))
    return EXIT_OK


# -- verify -------------------------------------------------------------------------------------

def cmd_verify(args) -> int:
    """A full content comparison of one tenant's tables (customer dataset and warehouse slice),
    through the cluster's read governor; exit 0 when equal, 1 when different (after --repair:
    0 only if the repair made every table equal)."""
    import json

    from hakobu.verify_run import render, verify_tenant

    config = load_config(isolate=True)   # another tenant's broken file is not ours
    tables = [t.strip() for t in args.tables.split(",")] if args.tables else None
    bars: dict = {}

    def show(p) -> None:
        if args.no_progress or args.json:
            return
        from tqdm import tqdm

        bar = bars.get(p.target)
        if bar is None:
            bar = bars[p.target] = tqdm(total=p.total, unit="slice", desc=p.target,
                                        leave=False, dynamic_ncols=True)
        bar.update(p.done - bar.n)

    try:
        verdicts = verify_tenant(config, args.tenant, tables=tables, repair=args.repair,
                                 on_progress=show)
    finally:
        for bar in bars.values():
            bar.close()
    if args.json:
        print(json.dumps([v.as_dict() for v in verdicts], indent=2))
    else:
        print(render(verdicts))
    return EXIT_OK if all(v.equal and not v.error for v in verdicts) else EXIT_FAIL


# -- demo ---------------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from hakobu.demo import run_demo

    return run_demo(keep_running=args.keep_running)


# -- main ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hakobu",
        description="Deliver each tenant's MySQL tables into its customer's BigQuery dataset. "
                    "Config: HAKOBU_CONFIG_DIR (tenants/, permissions.csv; default: the repo). "
                    "BigQuery: HAKOBU_BIGQUERY_ENDPOINT (an emulator URL) or, unset, real "
                    "BigQuery with application-default credentials.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check every tenant file, the cluster file and "
                                        "permissions.csv; then each table on its source")
    v.add_argument("--offline", action="store_true",
                   help="check the files only, do not connect to the sources")
    v.set_defaults(func=cmd_validate)

    ld = sub.add_parser("load", help="deliver one tenant now (the same Dagster materialization "
                                     "the nightly schedule runs)")
    ld.add_argument("tenant", help="tenant id (the name of its file in tenants/)")
    ld.add_argument("--tables", help="comma-separated table names (default: all of the tenant's)")
    ld.add_argument("-v", "--verbose", action="store_true", help="show Dagster's log lines")
    ld.set_defaults(func=cmd_load)

    bf = sub.add_parser("backfill", help="reload one tenant in full (or some of its tables) into "
                                         "shadow tables, swapped in atomically when complete "
                                         "and reconciled; throttled like the nightly job")
    bf.add_argument("tenant", help="tenant id (the name of its file in tenants/)")
    bf.add_argument("--tables", help="comma-separated table names (default: all of the tenant's)")
    bf.add_argument("--no-progress", action="store_true",
                    help="no progress bar; one line per table when it finishes")
    bf.add_argument("-v", "--verbose", action="store_true", help="show Dagster's log lines")
    bf.set_defaults(func=cmd_backfill)

    st = sub.add_parser("status", help="per tenant: last delivery, watermark lag, next run, "
                                       "predicted finish and the margin to its deadline")
    st.add_argument("--tenants", help="comma-separated tenant ids (default: all)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    vf = sub.add_parser("verify", help="compare one tenant's tables with the source value by "
                                       "value (every bucket); exit 0 equal, 1 different",
                        description="A full content comparison of a tenant's tables in its "
                                    "customer dataset (and its slice of the warehouse), read "
                                    "through the cluster's governor. Names, per table, the rows "
                                    "missing in BigQuery, extra in BigQuery and changed. Exit "
                                    "codes: 0 every table equal; 1 a table differs or could not "
                                    "be compared (with --repair: 0 only if the repair made "
                                    "every table equal).")
    vf.add_argument("tenant", help="tenant id (the name of its file in tenants/)")
    vf.add_argument("--tables", help="comma-separated table names (default: all of the tenant's)")
    vf.add_argument("--repair", action="store_true",
                    help="re-read and merge the rows that differ, delete the extra ones, "
                         "compare again")
    vf.add_argument("--json", action="store_true", help="machine-readable output")
    vf.add_argument("--no-progress", action="store_true", help="no progress bar")
    vf.set_defaults(func=cmd_verify)

    d = sub.add_parser("demo", help="start a local MariaDB (if none) and the BigQuery emulator, "
                                    "create demo tenants, load them twice, print the result")
    d.add_argument("--keep-running", action="store_true",
                   help="leave the emulator (and a private MariaDB) running afterwards")
    d.set_defaults(func=cmd_demo)

    try:
        from hakobu.grants.cli import register as register_grants
    except ImportError:
        pass
    else:
        register_grants(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HakobuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
