#!/usr/bin/env bash
# Set-up on a fresh clone: the virtualenv in .venv with hakobu and its local/test extras.
# The MySQL server and the BigQuery emulator are started (and MariaDB installed if missing)
# by hakobu itself when the demo or the tests need them: hakobu/localenv/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: Python 3.11 or newer is needed (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi
if ! "$PY" -m venv --help >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    echo "setup: python3-venv is missing: apt-get install python3-venv" >&2; exit 1
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[local,test,deploy]'
echo "setup: .venv ready ($(.venv/bin/hakobu --help >/dev/null && echo 'hakobu installed'))"
