#!/usr/bin/env bash
# Run every benchmark entry script, benchmarks/*/bench_*.py (discovered, so new benchmarks are picked up).
#
#   scripts/bench.sh [AREA...]          full runs: each writes benchmarks/<area>/<script>.json, then the tables in
#                                       benchmarks/README.md are regenerated from the JSON (scripts/bench_tables.py)
#   scripts/bench.sh --smoke [AREA...]  tiny sizes, same code paths, a few minutes in all: fails if any benchmark
#                                       crashes (or runs past 10 minutes); figures are printed, not judged,
#                                       and nothing is written into the repository
#
# AREA limits the run to benchmarks/<AREA>/ (e.g. scripts/bench.sh --smoke agent updates). Sets up .venv first
# (scripts/bootstrap.sh) unless EDGEKIT_BOOTSTRAPPED=1. Exit status: 0 when every benchmark ran, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=()
areas=()
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=(--smoke) ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench.sh: unknown option $arg (use --smoke, or name benchmark areas)" >&2; exit 2 ;;
    *) [ -d "benchmarks/$arg" ] || { echo "bench.sh: no benchmarks/$arg/ (areas: $(cd benchmarks && ls -d */ | tr -d / | tr '\n' ' '))" >&2; exit 2; }
       areas+=("$arg") ;;
  esac
done

[ "${EDGEKIT_BOOTSTRAPPED:-}" = 1 ] || ./scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL=3

scripts=()
if [ ${#areas[@]} -eq 0 ]; then
  for f in benchmarks/*/bench_*.py; do [ -e "$f" ] && scripts+=("$f"); done
else
  for a in "${areas[@]}"; do for f in benchmarks/"$a"/bench_*.py; do [ -e "$f" ] && scripts+=("$f"); done; done
fi
[ ${#scripts[@]} -gt 0 ] || { echo "bench.sh: no benchmarks/*/bench_*.py found" >&2; exit 1; }

mode=${smoke[0]:-full}
failed=()
summary=()
for f in "${scripts[@]}"; do
  printf '\033[1m[bench %s]\033[0m %s\n' "${mode#--}" "$f" >&2
  start=$SECONDS
  set +e
  if [ ${#smoke[@]} -gt 0 ]; then
    timeout --kill-after=30 600 .venv/bin/python "$f" --smoke
  else
    .venv/bin/python "$f"
  fi
  rc=$?
  set -e
  took=$((SECONDS - start))
  if [ "$rc" = 0 ]; then
    summary+=("ok      ${took}s  $f")
  else
    summary+=("FAILED  ${took}s  $f (exit $rc)")
    failed+=("$f")
  fi
done

if [ ${#smoke[@]} -eq 0 ]; then
  .venv/bin/python scripts/bench_tables.py || failed+=("scripts/bench_tables.py")
fi

printf '\033[1m[bench %s]\033[0m summary (load average now: %s)\n' "${mode#--}" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
printf '  %s\n' "${summary[@]}" >&2
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench.sh: ${#failed[@]} failed: ${failed[*]}" >&2
  exit 1
fi
