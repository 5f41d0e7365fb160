#!/usr/bin/env bash
# Set up a machine for edgekit: Debian packages (when root), a venv in .venv, and the project with its extras.
# TensorFlow is installed the lean way: tensorflow-cpu, then tf-keras, tfmot and onnx2tf without their (full-TF) deps.
# Idempotent: a second run only checks. Versions are pinned by requirements/constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

APT_PACKAGES=(mosquitto mosquitto-clients postgresql systemd iproute2 nftables chromium chromium-driver prometheus)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  for exe in mosquitto initdb; do
    command -v "$exe" >/dev/null || ls /usr/sbin/"$exe" /usr/lib/postgresql/*/bin/"$exe" >/dev/null 2>&1 \
      || log "warning: $exe not found; as root this script installs it (apt-get install ${APT_PACKAGES[*]})"
  done
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do command -v "$cand" >/dev/null && { PY="$cand"; break; }; done
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { log "Python >= 3.11 is required"; exit 1; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements/constraints.txt)
stamp=.venv/.edgekit-bootstrap
want="$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing Python packages (TensorFlow the lean way; first run takes a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -U pip >/dev/null
  # the [convert] extra, except tf-keras and tfmot, which go in without their dependency on the full wheel
  mapfile -t convert_deps < <(.venv/bin/python - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["convert"]
for d in deps:
    if re.split(r"[\[<>=~! ]", d)[0] not in ("tf-keras", "tensorflow-model-optimization"):
        print(d)
PY
)
  "${PIP[@]}" "${convert_deps[@]}"
  # onnx2tf pins tensorflow==2.19/numpy==1.26: it goes in without them (its real imports are in [convert])
  "${PIP[@]}" --no-deps "tf-keras==2.21.*" "tensorflow-model-optimization==0.8.1" "onnx2tf==1.29.24"
  "${PIP[@]}" -e ".[agent,fleet,dev,kfp]"
  echo "$want" > "$stamp"
fi
log "ready: $(.venv/bin/edgekit --version)"
