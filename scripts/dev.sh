#!/usr/bin/env bash
# `make dev`: the Dagster UI (dagster dev -w workspace.yaml) on the demo's instance, with the
# demo's MySQL and the BigQuery emulator started for it and stopped after. Extra args go to
# `dagster dev` (e.g. -p 3001).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m hakobu.localenv.dev "$@"
