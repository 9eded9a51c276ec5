#!/usr/bin/env bash
# `make dev`: the Dagster UI on the demo's instance, with the emulator and MySQL the demo uses.
set -euo pipefail
cd "$(dirname "$0")/.."
export DAGSTER_HOME=${DAGSTER_HOME:-$PWD/.local/dagster_home}
.venv/bin/python -c 'from hakobu.cli import ensure_dagster_home; ensure_dagster_home()'
exec .venv/bin/dagster dev -w workspace.yaml "$@"
