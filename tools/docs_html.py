"""Build the documentation site into _docs/ without quarto: one HTML page per notebook of nbs/ (nbconvert's
HTML exporter), `index.html` from nbs/index.ipynb followed by the contents in notebook order, then a check that
every relative link and image of the site points to a file that exists.

`tools/docs.sh` runs this where quarto (and so `nbdev_docs`) is not available. Like nbdev's pages, cells marked
`#| hide` are left out, `#| directive` lines are not shown, and a cell that is only `show_doc(...)` becomes the
documentation it shows (signature and docstring, rendered by nbdev's `show_doc`), evaluated in the namespace of the
notebook's module and `minifast.vision.all`, without running the rest of the notebook.
"""
import ast
import html
import importlib
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


def namespace(nb) -> dict:
    "The names a `show_doc` cell of `nb` may refer to: `minifast.vision.all`, then the notebook's own module."
    ns = dict(vars(importlib.import_module('minifast.vision.all')))
    for cell in nb.cells:
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', cell.source, re.M) if cell.cell_type == 'code' else None
        if m: ns.update(vars(importlib.import_module(f'minifast.{m.group(1)}')))
    return ns


def rendered_show_doc(source: str, ns: dict, where: str):
    "A markdown cell with what the cell shows, if `source` holds only `show_doc(...)` calls; else None."
    try: calls = ast.parse(source).body
    except SyntaxError: return None
    if not calls or not all(isinstance(c, ast.Expr) and isinstance(c.value, ast.Call)
                            and isinstance(c.value.func, ast.Name) and c.value.func.id == 'show_doc' for c in calls):
        return None
    from nbdev.showdoc import show_doc
    docs = []
    for c in calls:
        call = ast.get_source_segment(source, c)
        try: docs.append(eval(call, {**ns, 'show_doc': show_doc})._repr_markdown_())
        except Exception as e: sys.exit(f'{where}: {call} failed: {type(e).__name__}: {e}')
    return nbformat.v4.new_markdown_cell('\n\n'.join(docs))


def for_docs(nb, where: str):
    """Drop `#| hide` cells, `#|` directive lines and the cells left empty, and render `show_doc` cells, as the
    documentation shows them."""
    cells, ns = [], namespace(nb)   # read before the `#| default_exp` line is dropped
    for cell in nb.cells:
        if cell.cell_type == 'code':
            lines = cell.source.splitlines()
            if any(re.match(r'#\|\s*hide\s*$', ln.strip()) for ln in lines): continue
            cell.source = '\n'.join(ln for ln in lines if not ln.lstrip().startswith('#|')).strip('\n')
            if not cell.source.strip() and not cell.get('outputs'): continue  # only directives (`default_exp`)
            if cell.source.startswith('show_doc('):
                cell = rendered_show_doc(cell.source, ns, where) or cell
        cells.append(cell)
    nb.cells = cells
    return nb


def page(exporter, nb, name, pages) -> str:
    "One page: a navigation bar, the notebook, and on the home page the contents."
    body, _ = exporter.from_notebook_node(nb, resources={'metadata': {'name': title(nb) or name}})
    nav = f'<nav class="mf-nav"><a href="index.html">minifast</a> &middot; {html.escape(title(nb) or name)}</nav>'
    body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + STYLE + nav, body, count=1)
    # no icon: without this line a browser asks every site for /favicon.ico, a 404 on a plain file server
    body = re.sub(r'(<head[^>]*>)', lambda m: m.group(1) + '<link rel="icon" href="data:,">', body, count=1)
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
    nbs = [(p.stem, for_docs(nbformat.read(p, as_version=4), p.name)) for p in notebooks()]
    pages = [(stem, title(nb) or stem) for stem, nb in nbs]
    for stem, nb in nbs: (OUT/f'{stem}.html').write_text(page(exporter, nb, stem, pages), encoding='utf-8')
    # the home page (the README's notebook) shows screenshots by their path in the repository: same path here
    if (ROOT/'docs'/'screenshots').is_dir(): shutil.copytree(ROOT/'docs'/'screenshots', OUT/'docs'/'screenshots')
    size = sum(f.stat().st_size for f in OUT.rglob('*') if f.is_file())
    print(f'{len(nbs)} pages in {OUT.relative_to(ROOT)}/ ({size / 2**20:.1f} MB), home page index.html')
    n_docs = sum(f.read_text(encoding='utf-8').count('<h3') for f in OUT.glob('*.html'))
    print(f'{n_docs} documented names (show_doc)')
    bad = broken_links(OUT)
    if bad: sys.exit('broken links:\n  ' + '\n  '.join(bad))
    print('every relative link and image resolves')


if __name__ == '__main__': main()
