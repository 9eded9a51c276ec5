"""The `hakobu` command.

Every command reads tenants/ and permissions.csv from HAKOBU_CONFIG_DIR (default: the repository
root) and talks to BigQuery as configured by HAKOBU_BIGQUERY_ENDPOINT (unset: real BigQuery with
application-default credentials; `hakobu up` keeps a local emulator running and writes what to
export). Loads run as Dagster materializations in the instance at DAGSTER_HOME (default:
.local/dagster_home in the repository), so they show in `dagster dev`; a load killed earlier
never blocks the next (hakobu.runs), SIGTERM or Ctrl-C stop one within seconds (hakobu.stop).
Every failure is one line on stderr starting "error:" that says what to do (--debug: the
traceback); the exit codes are in `hakobu --help`.
"""

import argparse
import json
import logging
import os
import re
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hakobu.config import REPO_ROOT, Config, load_config
from hakobu.errors import ConfigError, HakobuError

EXIT_OK, EXIT_FAIL, EXIT_PENDING = 0, 1, 2
LOAD_BAR_DELAY_S = 1.0      # a first load's bar appears once it has run this long


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
    try:
        config = load_config()
    except ConfigError as exc:
        if not args.json:
            raise
        print(json.dumps({"ok": False, "problems": [str(e) for e in
                                                    getattr(exc, "errors", [exc])]}, indent=2))
        return EXIT_FAIL
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
    where = "files only" if args.offline else "files and sources"
    if args.json:
        print(json.dumps({"ok": not problems, "checked": where, "root": str(config.root),
                          "tenants": len(config.tenants), "tables": tables,
                          "clusters": len(config.clusters), "problems": problems}, indent=2))
        return EXIT_FAIL if problems else EXIT_OK
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_FAIL
    print(f"OK: {len(config.tenants)} tenants, {tables} tables, {len(config.clusters)} clusters "
          f"({where}) in {config.root}")
    return EXIT_OK


def check_sources(config: Config) -> list[str]:
    """Reflect every declared table on its cluster: unknown tables/columns, missing keys and
    indexes, types hakobu cannot deliver, tenant values of another type than their column,
    tenants whose values the column's collation takes for one. Each problem names the file and
    line it is about. Nothing is read or written."""
    from resources.io import LiveIO

    io = LiveIO.from_env()
    out = []
    for tenant in config.tenants.values():
        try:
            source = io.source(config.cluster_of(tenant))
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
    from resources.io import LiveIO

    io = LiveIO.from_env()

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
            source = io.source(config.cluster_of(first))
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

@dataclass
class LoadOutcome:
    """What a load or backfill run did: per-table metadata of the delivered customer tables,
    and for a failed run one line saying why (plus the full error, for --debug)."""

    ok: bool
    run_id: str
    status: str
    rows: list[dict] = field(default_factory=list)
    error: str | None = None
    details: list[str] = field(default_factory=list)

    def as_dict(self, tenant: str) -> dict:
        return {"tenant": tenant, "ok": self.ok, "run_id": self.run_id, "status": self.status,
                "error": self.error, "tables": [
                    {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                     for k, v in r.items()} for r in self.rows]}


def open_instance():
    """The Dagster instance at DAGSTER_HOME, after failing the runs whose process is gone and
    freeing their pool claims (hakobu.runs): every command that runs Dagster starts here, so a
    load killed earlier never blocks this one."""
    import dagster as dg

    from hakobu.runs import reap

    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    try:
        reaped = reap(instance)
    except Exception:
        instance.dispose()
        raise
    if reaped:
        ids = ", ".join(r.run_id[:8] for r in reaped)
        many = len(reaped) != 1
        print(f"hakobu: marked {len(reaped)} crashed run{'s' if many else ''} failed "
              f"({'their processes are' if many else 'its process is'} gone) and freed "
              f"{'their' if many else 'its'} pool claims: {ids}", file=sys.stderr, flush=True)
    return instance


def preflight(config: Config, tenant_id: str, *, source: bool = True) -> None:
    """Before a run: the source answers and takes our login, BigQuery (or the emulator) answers
    with credentials, the tenant's dataset is where its file says. Each failure is one line
    saying what to do, and no Dagster run is created for it."""
    from resources.bigquery_client import check_endpoint
    from resources.io import LiveIO

    io = LiveIO.from_env()
    tenant = config.tenant(tenant_id)
    if source:
        io.source(config.cluster_of(tenant)).ping()
    check_endpoint(io.settings)
    io.customer(tenant).check_dataset()


def run_load(config: Config, tenant_id: str, tables: list[str] | None = None, *,
             quiet: bool = True, job_name: str | None = None, debug: bool = False,
             check: bool = True) -> LoadOutcome:
    """Materialize one tenant's customer tables (and, read once, their warehouse twins when the
    warehouse is enabled) through the Dagster `nightly` job, or the named job (`backfill`).

    The run is tagged with this process (hakobu.runs) so that, should it die, the next command
    fails it and frees its pool claim; SIGTERM or Ctrl-C stop it within seconds (hakobu.stop),
    marked canceled."""
    import dagster as dg
    from dagster._core.utils import make_new_run_id

    from assets.customer import customer_key, warehouse_key
    from hakobu import stop
    from hakobu.runs import process_tags, release
    from hakobu.warehouse import enabled as warehouse_enabled
    from pipelines.build import NIGHTLY, build_definitions, run_tags

    tenant = config.tenant(tenant_id)
    names = tables or [t.name for t in tenant.tables]
    for n in names:
        tenant.table(n)
    if check:
        preflight(config, tenant_id)
    instance = open_instance()
    defs = build_definitions(config)
    job = defs.resolve_job_def(job_name or NIGHTLY)
    selection = [customer_key(n) for n in names]
    if warehouse_enabled(config):
        selection += [warehouse_key(n) for n in names]
    level = "DEBUG" if debug else "INFO" if not quiet else "CRITICAL"
    run_config = {"loggers": {"console": {"config": {"log_level": level}}}}
    run_id = make_new_run_id()
    marked = threading.Event()

    def canceling(signum: int) -> bool:
        """At the signal: the run is CANCELING, so Dagster ends it CANCELED, not FAILURE.
        True (leave now) while its step has not started: e.g. waiting for a pool slot, where
        Dagster would not raise the interrupt at all, and nothing is read or written yet."""
        try:
            with dg.DagsterInstance.get() as inst:
                run = inst.get_run_by_id(run_id)
                if run is None or run.is_finished:
                    return False
                inst.report_run_canceling(run, f"stop asked for ({stop.reason()})")
                return not inst.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
        finally:
            marked.set()

    def abandon(code: int) -> None:
        """The stop did not finish in time: end the run here, free its claims."""
        from resources import rust_panics

        rust_panics.shutdown()
        with dg.DagsterInstance.get() as inst:
            release(inst, run_id, f"stopped ({stop.reason()}) and abandoned after the grace "
                                  "period; rerun to complete it")
        print(f"error: stopped ({stop.reason()}): the run {run_id[:8]} is marked canceled and "
              f"its pool claims are freed — rerun the command to complete it (it resumes at "
              "the last watermark)", file=sys.stderr, flush=True)

    with instance, stop.on_signals(on_signal=canceling, on_abandon=abandon):
        result = job.execute_in_process(
            instance=instance, partition_key=tenant_id, raise_on_error=False,
            asset_selection=selection, run_config=run_config, run_id=run_id,
            tags={**run_tags(config, tenant_id), **process_tags()})
        rows = []
        for ev in result.get_asset_materialization_events():
            mat = ev.event_specific_data.materialization
            if mat.asset_key.path[0] != "customer":
                continue
            md = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
            rows.append({"table": mat.asset_key.path[-1], **md})
        if stop.requested():
            # the interrupt may have ended the run before `canceling` marked it: end it as
            # canceled either way, its claims freed
            marked.wait(5.0)
            release(instance, run_id, f"stopped ({stop.reason()})")
        run = instance.get_run_by_id(run_id)
        status = run.status.value if run is not None else "UNKNOWN"
        if result.success:
            return LoadOutcome(True, run_id, status, rows)
        error, details = _run_error(result)
        if stop.requested():
            marked_as = {"CANCELED": "canceled", "FAILURE": "failed"}.get(status, status.lower())
            error = (f"stopped ({stop.reason()}): the run {run_id[:8]} is marked {marked_as} "
                     "and its pool claims are freed — rerun the command to complete it (it "
                     "resumes at the last watermark)")
        return LoadOutcome(False, run_id, status, rows, error, details)


def _run_error(result) -> tuple[str, list[str]]:
    """One line for a failed run — the step's own failure description (hakobu's errors say
    what to do) — and the full errors, with their stack traces, for --debug."""
    lines, details = [], []
    for e in result.all_events:
        if e.event_type_value not in ("STEP_FAILURE", "RUN_FAILURE"):
            continue
        data = e.event_specific_data
        err = getattr(data, "error", None)
        if err is not None:
            details.append(err.to_string())
        if e.event_type_value != "STEP_FAILURE":
            continue
        failure = getattr(data, "user_failure_data", None)
        text = failure.description if failure is not None and failure.description else None
        if text is None and err is not None:
            inner = err
            while inner.cause is not None:
                inner = inner.cause
            text = inner.message.strip()
        lines.append((text or "the step failed").strip().splitlines()[0])
    return "; ".join(lines) or "the run failed", details


def _progress(args, *, delay: float = 0.0):
    """A listener drawing one bar per table (rows done / estimated total, rows/s, ETA) on
    stderr, or with --no-progress one line per finished table; and its cleanup."""
    bars: dict = {}
    off = getattr(args, "no_progress", False) or getattr(args, "json", False)

    def show(p) -> None:
        if off:
            if p.finished and p.mode == "backfill" and not getattr(args, "json", False):
                print(p.line(), file=sys.stderr, flush=True)
            return
        from tqdm import tqdm

        bar = bars.get(p.table)
        if bar is None:
            bar = bars[p.table] = tqdm(total=p.total or None, unit="rows", unit_scale=True,
                                       desc=f"{p.tenant}/{p.table}", leave=True,
                                       dynamic_ncols=True, delay=delay)
        if (p.finished and not p.failed) or (p.total and p.done > (bar.total or 0)):
            bar.total = p.done                     # the estimate was off: the rows read count
        bar.update(p.done - bar.n)
        if p.finished:
            bar.close()

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return show, close


def _tables_arg(args) -> list[str] | None:
    return [t.strip() for t in args.tables.split(",")] if args.tables else None


def _finish_load(args, outcome: LoadOutcome, header: str, row) -> int:
    from hakobu import stop

    if args.json:
        print(json.dumps(outcome.as_dict(args.tenant), indent=2, default=str))
    elif outcome.rows or outcome.ok:
        print(header)
        for r in sorted(outcome.rows, key=lambda r: r["table"]):
            print(row(r))
    if outcome.ok:
        return EXIT_OK
    if getattr(args, "debug", False):
        for text in outcome.details:
            print(text, file=sys.stderr)
    print(f"error: {outcome.error}", file=sys.stderr)
    return stop.exit_code() if stop.requested() else EXIT_FAIL


def cmd_load(args) -> int:
    """Deliver one tenant now; a bar per table for first loads that take a while."""
    from hakobu.progress import add_listener, remove_listener

    config = load_config(isolate=True)   # another tenant's broken file is not ours
    show, close = _progress(args, delay=LOAD_BAR_DELAY_S)
    add_listener(show)
    try:
        outcome = run_load(config, args.tenant, _tables_arg(args), quiet=not args.verbose,
                           debug=args.debug)
    finally:
        remove_listener(show)
        close()
    return _finish_load(
        args, outcome, f"{'table':<16}{'rows read':>10}{'merged':>9}{'seconds':>9}  watermark",
        lambda r: f"{r['table']:<16}{r['rows_read']:>10}{r['rows_merged']:>9}"
                  f"{float(r['duration_s']):>9.2f}  {r['watermark']}")


# -- backfill -----------------------------------------------------------------------------------

def cmd_backfill(args) -> int:
    """Full reload through shadow tables, as the Dagster `backfill` job (recorded in the
    instance), with a progress bar per table."""
    from hakobu.progress import add_listener, remove_listener
    from pipelines.build import BACKFILL

    config = load_config(isolate=True)   # another tenant's broken file is not ours
    show, close = _progress(args)
    add_listener(show)
    try:
        outcome = run_load(config, args.tenant, _tables_arg(args), quiet=not args.verbose,
                           job_name=BACKFILL, debug=args.debug)
    finally:
        remove_listener(show)
        close()
    return _finish_load(
        args, outcome,
        f"{'table':<16}{'rows read':>10}{'shadow':>9}{'rows/s':>10}{'seconds':>9}  watermark",
        lambda r: f"{r['table']:<16}{r['rows_read']:>10}{r.get('customer_shadow_rows', '-'):>9}"
                  f"{float(r.get('rows_per_s', 0)):>10,.0f}{float(r['duration_s']):>9.2f}  "
                  f"{r['watermark']}")


# -- status -------------------------------------------------------------------------------------

def cmd_status(args) -> int:
    """Per tenant: last delivery, watermark lag, next run, predicted finish, deadline margin —
    from the Dagster instance only (no source or BigQuery access)."""
    from hakobu.status import collect, render

    config = load_config(isolate=True)   # another tenant's broken file is not ours
    tenants = [t.strip() for t in args.tenants.split(",")] if args.tenants else None
    for t in tenants or []:
        if t not in {b.tenant for b in config.broken}:
            config.tenant(t)
    wanted = [t for t in tenants if t in config.tenants] if tenants else None
    with open_instance() as instance:
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
    from hakobu.verify_run import render, verify_tenant

    config = load_config(isolate=True)   # another tenant's broken file is not ours
    tables = _tables_arg(args)
    for t in tables or []:
        config.tenant(args.tenant).table(t)
    preflight(config, args.tenant)
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


# -- demo, up, down ------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from hakobu.demo import run_demo

    return run_demo(keep_running=args.keep_running)


def cmd_up(args) -> int:
    from hakobu.localenv.up import up

    return up(Path(args.state_dir) if args.state_dir else None, demo_data=not args.no_demo_data)


def cmd_down(args) -> int:
    from hakobu.localenv.up import down

    return down(Path(args.state_dir) if args.state_dir else None)


# -- main ---------------------------------------------------------------------------------------

EXIT_CODES = """exit codes:
  0    done (verify: every table equal; grants plan: nothing to change)
  1    failed: a table did not load, a file, source or BigQuery is wrong, verify found a
       difference; the reason is one line on stderr starting "error:" (--debug: the traceback)
  2    grants plan: changes pending
  130  stopped by Ctrl-C; 143 stopped by SIGTERM: the run is marked canceled and its pool
       claims freed, a rerun completes it"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from hakobu import __version__

    try:
        dagster = version("dagster")
    except PackageNotFoundError:
        dagster = "?"
    return f"hakobu {__version__} (dagster {dagster}, python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show its traceback (and Dagster's debug log lines)")
    p = argparse.ArgumentParser(
        prog="hakobu", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Deliver each tenant's MySQL tables into its customer's BigQuery dataset. "
                    "Config: HAKOBU_CONFIG_DIR (tenants/, permissions.csv; default: the repo). "
                    "BigQuery: HAKOBU_BIGQUERY_ENDPOINT (an emulator URL) or, unset, real "
                    "BigQuery with application-default credentials. Locally: `hakobu up`, then "
                    "`source .local/env`.",
        epilog=EXIT_CODES)
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], epilog=EXIT_CODES,
                              formatter_class=argparse.RawDescriptionHelpFormatter, **kw)

    v = command("validate", help="check every tenant file, the cluster file and "
                                 "permissions.csv; then each table on its source")
    v.add_argument("--offline", action="store_true",
                   help="check the files only, do not connect to the sources")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.set_defaults(func=cmd_validate)

    ld = command("load", help="deliver one tenant now (the same Dagster materialization "
                              "the nightly schedule runs)")
    ld.add_argument("tenant", help="tenant id (the name of its file in tenants/)")
    ld.add_argument("--tables", help="comma-separated table names (default: all of the tenant's)")
    ld.add_argument("--json", action="store_true", help="machine-readable output")
    ld.add_argument("--no-progress", action="store_true",
                    help="no progress bar (shown for first loads that take more than a second)")
    ld.add_argument("-v", "--verbose", action="store_true", help="show Dagster's log lines")
    ld.set_defaults(func=cmd_load)

    bf = command("backfill", help="reload one tenant in full (or some of its tables) into "
                                  "shadow tables, swapped in atomically when complete "
                                  "and reconciled; throttled like the nightly job")
    bf.add_argument("tenant", help="tenant id (the name of its file in tenants/)")
    bf.add_argument("--tables", help="comma-separated table names (default: all of the tenant's)")
    bf.add_argument("--json", action="store_true", help="machine-readable output")
    bf.add_argument("--no-progress", action="store_true",
                    help="no progress bar; one line per table when it finishes")
    bf.add_argument("-v", "--verbose", action="store_true", help="show Dagster's log lines")
    bf.set_defaults(func=cmd_backfill)

    st = command("status", help="per tenant: last delivery, watermark lag, next run, "
                                "predicted finish and the margin to its deadline")
    st.add_argument("--tenants", help="comma-separated tenant ids (default: all)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    vf = command("verify", help="compare one tenant's tables with the source value by "
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

    d = command("demo", help="start a local MariaDB (if none) and the BigQuery emulator, "
                             "create demo tenants, load them twice, print the result")
    d.add_argument("--keep-running", action="store_true",
                   help="leave the emulator (and a private MariaDB) running afterwards")
    d.set_defaults(func=cmd_demo)

    u = command("up", help="start the embedded default and keep it running: the local MariaDB "
                           "(if none answers) and the BigQuery emulator, with the demo data; "
                           "writes .local/env to `source`",
                description="Start what the other commands need locally and leave it running: "
                            "a MySQL-compatible server (127.0.0.1:3306 if it accepts root "
                            "without a password, else a private MariaDB under .local/mariadb) "
                            "and the BigQuery emulator (data under .local/bqemulator), the demo "
                            "tenants' source data if absent. Prints the variables to export and "
                            "writes them to .local/env: `source .local/env`. Running it again "
                            "reuses what runs. `hakobu down` stops it.")
    u.add_argument("--no-demo-data", action="store_true",
                   help="do not create the demo tenants' source schemas")
    u.add_argument("--state-dir", help="where state, logs and the env file go (default: .local "
                                       "in the repository)")
    u.set_defaults(func=cmd_up)

    dn = command("down", help="stop what `hakobu up` started (the emulator, a private MariaDB)")
    dn.add_argument("--state-dir", help="the state dir given to `hakobu up`")
    dn.set_defaults(func=cmd_down)

    try:
        from hakobu.grants.cli import register as register_grants
    except ImportError:
        pass
    else:
        register_grants(sub, parents=[common], epilog=EXIT_CODES)
    return p


def _logging(verbose: bool, debug: bool) -> None:
    """hakobu's own log lines (hakobu.*) reach the terminal with -v/--debug only; a command
    reports its outcome itself (errors: one line). Without a handler Python would print every
    WARNING through its last-resort handler."""
    logger = logging.getLogger("hakobu")
    for h in [h for h in logger.handlers if getattr(h, "hakobu_cli", False)]:
        logger.removeHandler(h)          # main() called again in one process (tests)
    if verbose or debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
    else:
        handler = logging.NullHandler()
    handler.hakobu_cli = True
    logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    from hakobu import stop
    from resources import rust_panics

    args = build_parser().parse_args(argv)
    args.debug = getattr(args, "debug", False)
    _logging(getattr(args, "verbose", False), args.debug)
    rust_panics.enabled = not args.debug
    if not args.debug:
        # connectorx's expected panics (zero dates) need no backtrace: capturing one is slow,
        # and its report is dropped anyway (resources/rust_panics.py)
        os.environ["RUST_BACKTRACE"] = "0"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        code = stop.exit_code() if stop.requested() else 130
        print(f"error: stopped ({stop.reason() or 'Ctrl-C'}) — nothing was left half written; "
              "rerun the command to complete it", file=sys.stderr)
        return code
    except Exception as exc:       # noqa: BLE001 — every failure is one line, what to do
        from hakobu.errors import explain

        if args.debug:
            traceback.print_exception(exc)
        print(f"error: {explain(exc)}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
