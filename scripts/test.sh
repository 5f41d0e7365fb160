#!/usr/bin/env bash
# Set up everything the tests need (see bootstrap.sh), then run the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/core -x
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL=3
set +e
.venv/bin/python -m pytest -q -ra --durations=25 "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "no tests were collected" >&2
  exit 1
fi
exit "$rc"
