#!/usr/bin/env bash
# Set up everything the tests need (see bootstrap.sh), run the whole test suite, then run every benchmark in smoke
# mode (scripts/bench.sh --smoke: tiny sizes, a few minutes) so that a benchmark that crashes fails the run too.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/core -x; with arguments the smoke benchmarks are skipped
# unless EDGEKIT_BENCH_SMOKE=1 (EDGEKIT_BENCH_SMOKE=0 skips them for the whole suite too).
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
  rc=1
fi
smoke="${EDGEKIT_BENCH_SMOKE:-$([ $# -eq 0 ] && echo 1 || echo 0)}"
bench_rc=0
if [ "$smoke" = 1 ]; then
  EDGEKIT_BOOTSTRAPPED=1 ./scripts/bench.sh --smoke || bench_rc=$?
fi
if [ "$rc" != 0 ]; then
  exit "$rc"
fi
exit "$bench_rc"
