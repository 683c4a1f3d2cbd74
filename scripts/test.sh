#!/usr/bin/env bash
# The test command: services up, venv ready, lint, the type checker, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
scripts/setup.sh
# Debian packages the tests drive for real: promtool and a Prometheus server (alert rules,
# traffic signal), headless Chromium (the exporter's page), openssl (a TLS Redis), faketime
# (workers whose clocks disagree), redis-sentinel (a failover).
missing=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v openssl >/dev/null || missing+=(openssl)
command -v faketime >/dev/null || missing+=(faketime)
command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test: installing Debian's ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
scripts/typecheck.sh
exec .venv/bin/python -m pytest "$@"
