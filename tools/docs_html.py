"""Build the documentation site into _docs/ without quarto: one HTML page per notebook of nbs/ (nbconvert's
HTML exporter), `index.html` from nbs/index.ipynb followed by the contents in notebook order, then a check that
every relative link and image of the site points to a file that exists.

`tools/docs.sh` runs this where quarto (and so `nbdev_docs`) is not available. Like nbdev's pages, cells marked
`#| hide` are left out and `#| directive` lines are not shown.
"""
import html
import re
import shutil
import sys
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
NBS, OUT = ROOT/'nbs', ROOT/'_docs'
STYLE = ('<style>.mf-nav{font-family:sans-serif;padding:.6em 1em;border-bottom:1px solid #ddd}'
         '.mf-contents{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}</style>')


def notebooks():
    "index.ipynb first, then the notebooks in their numbered order."
    return [NBS/'index.ipynb'] + sorted(p for p in NBS.glob('*.ipynb') if p.name != 'index.ipynb')


def title(nb) -> str:
    "The `# Title` of the first markdown cell, without backticks."
    for cell in nb.cells:
        if cell.cell_type == 'markdown':
            m = re.search(r'^#\s+(.+)$', cell.source, re.M)
            if m: return m.group(1).replace('`', '').strip()
    return ''


def for_docs(nb):
    "Drop `#| hide` cells and `#|` directive lines, as the documentation shows them."
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'code':
            lines = cell.source.splitlines()
            if any(re.match(r'#\|\s*hide\s*$', l.strip()) for l in lines): continue
            cell.source = '\n'.join(l for l in lines if not l.lstrip().startswith('#|')).strip('\n')
        cells.append(cell)
    nb.cells = cells
    return nb


def page(exporter, nb, name, pages) -> str:
    "One page: a navigation bar, the notebook, and on the home page the contents."
    body, _ = exporter.from_notebook_node(nb, resources={'metadata': {'name': title(nb) or name}})
    nav = f'<nav class="mf-nav"><a href="index.html">minifast</a> &middot; {html.escape(title(nb) or name)}</nav>'
    body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + STYLE + nav, body, count=1)
    if name == 'index':
        items = ''.join(f'<li><a href="{stem}.html">{html.escape(t)}</a> <code>{stem}.ipynb</code></li>'
                        for stem, t in pages if stem != 'index')
        contents = f'<section class="mf-contents"><h2 id="contents">Contents</h2><ol>{items}</ol></section>'
        body = body.replace('</body>', contents + '</body>', 1)
    return body


def broken_links(folder: Path) -> list:
    "Relative href/src targets of the pages in `folder` that do not exist."
    bad = []
    for f in sorted(folder.glob('*.html')):
        for target in re.findall(r'(?:href|src)="([^"#?]+)', f.read_text(encoding='utf-8')):
            if re.match(r'^[a-z]+:|^//', target): continue   # http:, https:, data:, mailto:
            if not (folder/target).exists(): bad.append(f'{f.name} -> {target}')
    return bad


def main():
    if OUT.exists(): shutil.rmtree(OUT)
    OUT.mkdir()
    exporter = HTMLExporter(template_name='lab')
    nbs = [(p.stem, for_docs(nbformat.read(p, as_version=4))) for p in notebooks()]
    pages = [(stem, title(nb) or stem) for stem, nb in nbs]
    for stem, nb in nbs: (OUT/f'{stem}.html').write_text(page(exporter, nb, stem, pages), encoding='utf-8')
    size = sum(f.stat().st_size for f in OUT.iterdir())
    print(f'{len(nbs)} pages in {OUT.relative_to(ROOT)}/ ({size / 2**20:.1f} MB), home page index.html')
    bad = broken_links(OUT)
    if bad: sys.exit('broken links:\n  ' + '\n  '.join(bad))
    print('every relative link and image resolves')


if __name__ == '__main__': main()
