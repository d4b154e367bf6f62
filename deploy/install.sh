#!/usr/bin/env bash
# Installs policyhub into ./.venv on a fresh Debian machine. Safe to run again.
# torch is installed first, pinned to the CPU build; an unpinned torch would pull CUDA (GBs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
# llama-cpp-python compiles llama.cpp here (about 7 minutes on 2 cores the first time; pip caches the wheel).
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
  .venv/bin/python -m pip install -q -e '.[test]'
echo "policyhub installed in .venv"
