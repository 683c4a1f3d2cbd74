#!/usr/bin/env bash
# Create .venv in the repo root and install easeoff with its dev extras.
# Re-running is cheap: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c 'import rq, redis, pymysql, prometheus_client, click, pytest, hypothesis' \
  || { echo "setup: the virtual environment is incomplete" >&2; exit 1; }
