#!/usr/bin/env bash
# Sets up .venv on a fresh machine and runs the main job, `minifast demo`, on the built-in data.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install -q -e .
export MPLBACKEND=Agg
.venv/bin/minifast demo "$@"
