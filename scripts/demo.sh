#!/usr/bin/env bash
# Set up the machine (see bootstrap.sh), then run the end-to-end demo on the embedded defaults:
# a local Mosquitto, SQLite, a fleet service and local agents taking a staged rollout.
# Extra arguments go to examples/demo.py (e.g. --devices 3 --workdir /tmp/edgekit-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/python examples/demo.py "$@"
