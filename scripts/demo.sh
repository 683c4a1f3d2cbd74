#!/usr/bin/env bash
# The README's main command: services up, virtualenv ready, then the whole loop on real
# Redis and MariaDB — heavy jobs, strain, easing off, resuming, and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
