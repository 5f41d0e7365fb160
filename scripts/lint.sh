#!/usr/bin/env bash
# Static checks, all failing on new findings only: ruff (pyproject [tool.ruff]), mypy against its baseline
# (requirements/mypy-baseline.txt, see scripts/mypy_baseline.py) and the import-linter layer contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --quiet . && echo "ruff: no findings"
.venv/bin/python scripts/mypy_baseline.py
if out="$(.venv/bin/lint-imports --config pyproject.toml --no-cache 2>&1)"; then
  echo "import-linter: contracts kept"
else
  echo "$out"
  exit 1
fi
