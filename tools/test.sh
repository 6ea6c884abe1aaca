#!/usr/bin/env bash
# Sets up .venv on a fresh machine and runs every check: ruff's lint, the notebooks export to exactly
# the committed package, the notebooks' own checks (nbdev_test), then the pytest suite.
# The documentation is a separate command: tools/docs.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install -q -e '.[dev]'
export MPLBACKEND=Agg
# The checks run two processes at a time on a 2-core machine: one thread each, or the two fight over
# the cores and PyTorch's thread pools slow every operation down many times.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

echo "== ruff check: lint (pyflakes, pycodestyle, lines <= 120) of the notebooks, the package, tests, tools"
if ! .venv/bin/ruff check .; then
  echo "ruff check failed: fix the lines above (in nbs/, never in minifast/; config in pyproject.toml)." >&2
  exit 1
fi

echo "== nbdev_export: minifast/ must equal the export of nbs/"
.venv/bin/nbdev_export
if [ -d .git ] && [ -n "$(git status --porcelain -- minifast)" ]; then
  git status --porcelain -- minifast
  echo "nbdev_export changed minifast/: edit the notebooks in nbs/, run nbdev_export and commit both." >&2
  exit 1
fi

echo "== nbdev_test: the checks inside the notebooks"
.venv/bin/nbdev_test --n_workers 2

echo "== pytest"
.venv/bin/pytest -q -n 2 "$@"
