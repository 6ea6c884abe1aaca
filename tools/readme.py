"""Write README.md from nbs/index.ipynb: markdown cells as they are, code cells as ```python blocks.

nbdev's own `nbdev_readme` renders through quarto, which cannot be installed offline (see CONTRIBUTING.md,
"Documentation"); this needs only the standard library. `tests/test_readme.py` checks that README.md equals
`render()` of the notebook, so edit the notebook and run `.venv/bin/python tools/readme.py`.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = '<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n'


def _code(source: str) -> str:
    "A code cell without its `#| directive` lines, as a fenced block; '' when nothing is left."
    lines = [l for l in source.splitlines() if not l.lstrip().startswith('#|')]
    body = '\n'.join(lines).strip('\n')
    return f'```python\n{body}\n```' if body else ''


def render(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    "The README text of the notebook at `nb_path`."
    cells = json.loads(Path(nb_path).read_text(encoding='utf-8'))['cells']
    parts = []
    for cell in cells:
        source = ''.join(cell['source'])
        if cell['cell_type'] == 'markdown': parts.append(source.strip('\n'))
        elif cell['cell_type'] == 'code': parts.append(_code(source))
    return HEADER + '\n\n'.join(p for p in parts if p) + '\n'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else ROOT/'README.md'
    out.write_text(render(), encoding='utf-8')
    print(f'wrote {out} from nbs/index.ipynb')


if __name__ == '__main__': main()
