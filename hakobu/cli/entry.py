"""The `hakobu` parser and entry point `main` (`hakobu = hakobu.cli:main`)."""

import argparse
import logging
import os
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version

from hakobu import __version__, stop
from hakobu.cli import commands, load, stream, validate
from hakobu.cli.common import EXIT_FAIL
from hakobu.errors import explain
from hakobu.grants.cli import register as register_grants
from resources import rust_panics

EXIT_CODES = """exit codes:
  0    done (verify: every table equal; grants plan: nothing to change)
  1    failed: a table did not load, a file, source or BigQuery is wrong, verify found a
       difference; the reason is one line on stderr starting "error:" (--debug: the traceback)
  2    grants plan: changes pending
  130  stopped by Ctrl-C; 143 stopped by SIGTERM: the run is marked canceled and its pool
       claims freed, a rerun completes it"""


def _version() -> str:
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
        kw.setdefault("epilog", EXIT_CODES)
        return sub.add_parser(name, parents=[common],
                              formatter_class=argparse.RawDescriptionHelpFormatter, **kw)

    _validate_and_loads(command)
    _status_and_verify(command)
    _local(command)
    stream.register(command)
    register_grants(sub, parents=[common], epilog=EXIT_CODES)
    return p


def _validate_and_loads(command) -> None:
    v = command("validate", help="check every tenant file, the cluster file and "
                                 "permissions.csv; then each table on its source")
    v.add_argument("--offline", action="store_true",
                   help="check the files only, do not connect to the sources")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.set_defaults(func=validate.cmd_validate)

    ld = command("load", help="deliver one tenant now (the same Dagster materialization "
                              "the nightly schedule runs)")
    ld.add_argument("tenant", help="tenant id (the name of its file in tenants/)")
    ld.add_argument("--tables", help="comma-separated table names (default: all of the tenant's)")
    ld.add_argument("--json", action="store_true", help="machine-readable output")
    ld.add_argument("--no-progress", action="store_true",
                    help="no progress bar (shown for first loads that take more than a second)")
    ld.add_argument("-v", "--verbose", action="store_true", help="show Dagster's log lines")
    ld.set_defaults(func=load.cmd_load)

    bf = command("backfill", help="reload one tenant in full (or some of its tables) into "
                                  "shadow tables, swapped in atomically when complete "
                                  "and reconciled; throttled like the nightly job")
    bf.add_argument("tenant", help="tenant id (the name of its file in tenants/)")
    bf.add_argument("--tables", help="comma-separated table names (default: all of the tenant's)")
    bf.add_argument("--json", action="store_true", help="machine-readable output")
    bf.add_argument("--no-progress", action="store_true",
                    help="no progress bar; one line per table when it finishes")
    bf.add_argument("-v", "--verbose", action="store_true", help="show Dagster's log lines")
    bf.set_defaults(func=load.cmd_backfill)

    mw = command("merge-warehouse", help="apply every tenant's pending warehouse slices now "
                                         "(one MERGE per warehouse table) and check them; "
                                         "the `merge_warehouse` schedule does it every few "
                                         "minutes",
                 description="Scheduled runs stage their warehouse slices; the merge step "
                             "applies them, one MERGE per warehouse table whatever the number "
                             "of tenants, then checks each merged tenant's slice against its "
                             "source. Runs as the Dagster job `merge_warehouse` in this "
                             "process. (`hakobu load` merges its own tables at its end.)")
    mw.add_argument("--json", action="store_true", help="machine-readable output")
    mw.set_defaults(func=load.cmd_merge_warehouse)



def _status_and_verify(command) -> None:
    st = command("status", help="per tenant: last delivery, watermark lag, next run, "
                                "predicted finish and the margin to its deadline; per "
                                "cluster, tonight's queue: predicted end, earliest deadline, "
                                "margin and the tenants predicted LATE",
                 description="Per tenant (from the Dagster instance at DAGSTER_HOME only): "
                             "last delivery, watermark lag, staleness, next run, predicted "
                             "finish and margin to the deadline, how the last deadline went. "
                             "Then Tonight: per cluster, its tenants' runs queued as the run "
                             "queue's limits allow (per cluster, in all, the delivery pool), "
                             "each expected to take the median of its recent runs; the "
                             "predicted end of the night, the earliest deadline not delivered "
                             "yet, the margin (LATE by ... when a tenant will miss its "
                             "deadline) and a line per tenant predicted late.")
    st.add_argument("--tenants", help="comma-separated tenant ids (default: all; Tonight shows "
                                      "their clusters, planned with all their runs)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=commands.cmd_status)

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
    vf.set_defaults(func=commands.cmd_verify)



def _local(command) -> None:
    d = command("demo", help="start a local MariaDB (if none) and the BigQuery emulator, "
                             "create demo tenants, load them twice, print the result")
    d.add_argument("--keep-running", action="store_true",
                   help="leave the emulator (and a private MariaDB) running afterwards")
    d.set_defaults(func=commands.cmd_demo)

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
    u.set_defaults(func=commands.cmd_up)

    dn = command("down", help="stop what `hakobu up` started (the emulator, a private MariaDB)")
    dn.add_argument("--state-dir", help="the state dir given to `hakobu up`")
    dn.set_defaults(func=commands.cmd_down)


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
        if args.debug:
            traceback.print_exception(exc)
        print(f"error: {explain(exc)}", file=sys.stderr)
        return EXIT_FAIL
