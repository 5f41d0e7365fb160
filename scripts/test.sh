#!/usr/bin/env bash
# Set up everything the tests need (see bootstrap.sh), run the static checks (scripts/lint.sh: ruff, mypy against
# its baseline, import contracts; any new finding fails), the test suite, then every benchmark in smoke mode
# (scripts/bench.sh --smoke: tiny sizes, a few minutes) so that a benchmark that crashes fails the run too.
#   scripts/test.sh                  everything
#   scripts/test.sh --quick          skip the tests marked slow (TensorFlow conversions, outages, end to end) and
#                                    the smoke benchmarks
#   scripts/test.sh tests/core -x    extra arguments go to pytest
# With arguments (or --quick) the smoke benchmarks are skipped unless EDGEKIT_BENCH_SMOKE=1 (EDGEKIT_BENCH_SMOKE=0
# skips them for the whole suite too).
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
  rc=1
fi
smoke="${EDGEKIT_BENCH_SMOKE:-$([ $# -eq 0 ] && [ ${#quick[@]} -eq 0 ] && echo 1 || echo 0)}"
bench_rc=0
if [ "$smoke" = 1 ]; then
  EDGEKIT_BOOTSTRAPPED=1 ./scripts/bench.sh --smoke || bench_rc=$?
fi
if [ "$rc" != 0 ]; then
  exit "$rc"
fi
exit "$bench_rc"
