#!/usr/bin/env bash
# The notebook experience in a real browser: JupyterLab (from PyPI) and Chromium (Debian's package), driven by
# playwright's Python API with Debian's Chromium (no browser download). Runs nbs/t1_pet_breeds.ipynb plus a few
# checks in the browser, saves screenshots to docs/screenshots/ (or $OUT), then opens the docs site if
# `bash tools/docs.sh` built it. Fails on an unexpected traceback, an empty output or a console error.
# OUT=folder puts the screenshots elsewhere; other arguments go to tools/browser_check.py (--timeout).
# Not part of CI (it takes minutes); CI checks the same outputs without a browser: tests/test_notebook_display.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -c 'import minifast, ipykernel' 2>/dev/null || .venv/bin/pip install -q -e '.[dev]'
# JupyterLab and playwright in a venv of their own: the project's .venv stays as CI has it
[ -x .browser-venv/bin/python ] || "$python" -m venv .browser-venv
.browser-venv/bin/python -c 'import jupyterlab, playwright' 2>/dev/null || .browser-venv/bin/pip install -q jupyterlab playwright
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium
  else echo "Chromium is missing: sudo apt-get install chromium" >&2; exit 1; fi
fi
# the kernel is the project's .venv; every notebook cell rendered (no windowing), so each can be photographed
.venv/bin/python -m ipykernel install --prefix .browser-venv --name minifast --display-name 'minifast (.venv)' >/dev/null
mkdir -p .browser-venv/share/jupyter/lab/settings
echo '{"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
       "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
  > .browser-venv/share/jupyter/lab/settings/overrides.json
out="${OUT:-docs/screenshots}"
export MPLBACKEND=module://matplotlib_inline.backend_inline OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
status=0
.browser-venv/bin/python tools/browser_check.py --out "$out" "$@" || status=$?
# small PNGs for the repository: at most 900 px wide, 256 colours
.venv/bin/python - "$out" <<'PY'
import sys
from pathlib import Path
from PIL import Image
for f in sorted(Path(sys.argv[1]).glob('*.png')):
    im = Image.open(f).convert('RGB')
    if im.width > 900: im = im.resize((900, round(im.height * 900 / im.width)), Image.LANCZOS)
    im.quantize(256, method=Image.Quantize.MEDIANCUT).save(f, optimize=True)
    print(f"{f}: {f.stat().st_size // 1024} KB")
PY
exit $status
