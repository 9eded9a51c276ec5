"""The `hakobu` command.

Every command reads tenants/ and permissions.csv from HAKOBU_CONFIG_DIR (default: the repository
root) and talks to BigQuery as configured by HAKOBU_BIGQUERY_ENDPOINT (unset: real BigQuery with
application-default credentials; `hakobu up` keeps a local emulator running and writes what to
export). Loads run as Dagster materializations in the instance at DAGSTER_HOME (default:
.local/dagster_home in the repository), so they show in `dagster dev`; a load killed earlier
never blocks the next (hakobu.runs), SIGTERM or Ctrl-C stop one within seconds (hakobu.stop).
Every failure is one line on stderr starting "error:" that says what to do (--debug: the
traceback); the exit codes are in `hakobu --help`.

Modules: `entry` (the parser and `main`), `validate`, `load` (load and backfill),
`commands` (status, verify, demo, up, down). Running a delivery in this process is
hakobu.launch's, shared with hakobu.demo; the IO of a command is built by
resources.dagster.open_io, as a Dagster run's `io` resource builds it.
"""

from hakobu.cli.entry import build_parser, main
from hakobu.launch import LoadOutcome, ensure_dagster_home, open_instance, run_load

__all__ = ["LoadOutcome", "build_parser", "ensure_dagster_home", "main", "open_instance",
           "run_load"]
