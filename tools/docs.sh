#!/usr/bin/env bash
# Builds the documentation: README.md from nbs/index.ipynb, then the web site in _docs/ (git-ignored).
# With quarto on the PATH this is nbdev's own site (nbdev_docs, configured by nbs/_quarto.yml, nbs/nbdev.yml
# and nbs/sidebar.yml); without it (quarto has no offline install) one HTML page per notebook from nbconvert.
# Not part of tools/test.sh: CI runs nbdev_export, nbdev_test and pytest; tests/test_readme.py keeps the README
# in step with the notebook.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -c 'import minifast, nbdev' 2>/dev/null || .venv/bin/pip install -q -e '.[dev]'
.venv/bin/python -c 'import nbconvert' 2>/dev/null || .venv/bin/pip install -q nbconvert

echo "== README.md from nbs/index.ipynb"
.venv/bin/python tools/readme.py

echo "== the site in _docs/"
.venv/bin/nbdev_sidebar   # nbs/sidebar.yml lists every notebook, in order
if command -v quarto >/dev/null; then
  .venv/bin/nbdev_docs
  .venv/bin/python tools/readme.py   # nbdev_docs rewrites README.md through quarto: put back the checked rendering
else
  echo "quarto not found: building with nbconvert instead of nbdev_docs"
  .venv/bin/python tools/docs_html.py
fi
echo "open _docs/index.html"
