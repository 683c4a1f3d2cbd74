#!/usr/bin/env bash
# The test command: services up, venv ready, lint, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
scripts/setup.sh
# promtool and a Prometheus server for the alert-rule and traffic-signal tests.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "test: installing Debian's prometheus package" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# Headless Chromium renders the exporter's page in tests/test_page.py.
if ! command -v chromium >/dev/null; then
  echo "test: installing Debian's chromium package" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
