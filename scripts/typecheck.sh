#!/usr/bin/env bash
# The type checker, strict, over the installed namespace `easeoff`. The checkout maps tasks/,
# feedback/ and workers/ into it through pyproject's package-dir, which mypy cannot follow,
# so it checks a tree of links laid out as the wheel is (build/typecheck/easeoff/...).
set -euo pipefail
cd "$(dirname "$0")/.."
root=build/typecheck
rm -rf "$root" && mkdir -p "$root/easeoff"
for part in __init__.py py.typed; do ln -s "../../../easeoff/$part" "$root/easeoff/$part"; done
for room in tasks feedback workers; do ln -s "../../../$room" "$root/easeoff/$room"; done
cd "$root"
exec ../../.venv/bin/mypy --config-file ../../pyproject.toml -p easeoff
