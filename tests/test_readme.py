"README.md is generated from nbs/index.ipynb (tools/readme.py): the two cannot drift apart."
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_tool():
    spec = importlib.util.spec_from_file_location('readme_tool', ROOT/'tools'/'readme.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_is_the_rendering_of_the_index_notebook():
    expected = _readme_tool().render(ROOT/'nbs'/'index.ipynb')
    assert (ROOT/'README.md').read_text(encoding='utf-8') == expected, \
        "README.md differs from nbs/index.ipynb: edit the notebook, then run `.venv/bin/python tools/readme.py`"


def test_code_cells_become_python_blocks_without_directives(tmp_path):
    nb = ('{"cells": [{"cell_type": "markdown", "source": ["# T\\n", "\\n", "> s\\n"]},'
          ' {"cell_type": "code", "source": ["#| eval: false\\n", "x = 1"]},'
          ' {"cell_type": "code", "source": ["#| hide"]}, {"cell_type": "raw", "source": ["ignored"]}]}')
    (tmp_path/'nb.ipynb').write_text(nb)
    text = _readme_tool().render(tmp_path/'nb.ipynb')
    assert text.endswith('# T\n\n> s\n\n```python\nx = 1\n```\n') and 'ignored' not in text and '#|' not in text
