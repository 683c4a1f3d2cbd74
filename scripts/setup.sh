#!/usr/bin/env bash
# Create .venv in the repo root and install easeoff with its dev extras.
# Re-running is cheap: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c 'import rq, redis, pymysql, prometheus_client, click, pytest, hypothesis' \
  || { echo "setup: the virtual environment is incomplete" >&2; exit 1; }
# Byte-compile the checkout, as pip does for an installed package: an editable install leaves
# its modules as source, and where PYTHONDONTWRITEBYTECODE is set every worker, CLI call and
# work horse would compile them again at start (about 40 ms of a worker's 0.25 s start here).
# A module edited later is recompiled in memory from its newer source, as always.
.venv/bin/python -m compileall -q -j 0 easeoff feedback tasks workers >/dev/null
