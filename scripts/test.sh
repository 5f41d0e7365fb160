#!/usr/bin/env bash
# Set up everything the tests need (see bootstrap.sh), run the static checks (scripts/lint.sh: ruff, mypy against
# its baseline, import contracts; any new finding fails), then the test suite.
#   scripts/test.sh                  everything
#   scripts/test.sh --quick          skip the tests marked slow (TensorFlow conversions, outages, end to end)
#   scripts/test.sh tests/core -x    extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
quick=()
if [ "${1:-}" = "--quick" ]; then
  quick=(-m "not slow")
  shift
fi
./scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL=3
./scripts/lint.sh
set +e
.venv/bin/python -m pytest -q -ra --durations=25 "${quick[@]}" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "no tests were collected" >&2
  exit 1
fi
exit "$rc"
