#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels that tools/gpu_check.sh installs on a lent GPU machine, which
# cannot reach a package index. That machine's python3 (3.12) already has torch, torchvision, numpy, pillow,
# matplotlib, pandas, tqdm, pytest, scikit-learn, scipy, requests, rich, anyio and pyyaml; what minifast and
# fastai 2.8.12 import beyond those is below (found by importing `fastai.vision.all` and listing the
# distributions of the loaded modules). All but plum-dispatch (built for CPython 3.12, hence --python-version)
# are pure Python: 2.4 MB in all, well inside what a call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
dir="${WHEEL_DIR:-.whl}"; pyver="${PY_VERSION:-3.12}"   # another version only to rehearse on this machine
rm -rf "$dir" && mkdir "$dir"
"$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$pyver" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$dir" \
  fastai==2.8.12 fastcore==2.2.41 fastdownload==0.0.8 fastprogress==1.1.6 fasttransform==0.0.5 \
  plum-dispatch==2.9.0 beartype==0.23.1 python-fasthtml==0.14.14 starlette==1.10.0 itsdangerous==2.2.0 \
  python-multipart==0.0.34
ls -l "$dir"
du -sh "$dir"
