#!/usr/bin/env bash
# Sets up headcast on a fresh machine: system packages (when root), .venv with every
# dependency, and the default head model. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# open3d needs libusb; the preview renderer needs EGL + Mesa; browser tests need Chromium;
# the Blender import test needs Blender (its glTF importer gets headcast's numpy 2 on its path).
APT_PACKAGES=(libusb-1.0-0 libegl1 libgl1 libgl1-mesa-dri libegl-mesa0 chromium blender)
command -v node >/dev/null && command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install these system packages first: ${missing[*]}" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.headcast-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages (torch 2.13 CPU, mediapipe, open3d, ...)"
  .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
  touch "$stamp"
fi
# The editable install's own modules as bytecode, as a wheel install has them: a shell with
# PYTHONDONTWRITEBYTECODE set would otherwise compile them on every command (about 0.35 s each).
# A stale file is harmless: Python checks each against its source's time stamp.
.venv/bin/python -m compileall -q src >/dev/null

# three.js for the viewer and the Khronos glTF validator, from the npm registry (never copied in).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages (three, gltf-validator)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

# The default head model: from a local ICT-FaceKit copy when there is one, else downloaded.
ict_src=${HEADCAST_ICT_SRC:-}
[ -z "$ict_src" ] && [ -d ../shared/models/ict-facekit ] && ict_src=../shared/models/ict-facekit
if [ -n "$ict_src" ]; then
  .venv/bin/headcast model build-ict --src "$ict_src" --if-missing
else
  .venv/bin/headcast model build-ict --if-missing
fi
