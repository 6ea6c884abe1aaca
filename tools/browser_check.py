"""Run the first tutorial in JupyterLab in a real (headless) Chromium and look at what a user would see.

Started by tools/browser_check.sh, with the Python of .browser-venv (jupyterlab + playwright). It copies
nbs/t1_pet_breeds.ipynb into a temporary folder with a few cells added at the end (the Learner, DataLoaders and
interpretation displays, a DataBlock.summary failure, a bad image read in a worker), starts JupyterLab on 127.0.0.1
with a token, runs every cell in the browser, saves screenshots, then opens the documentation site if
`bash tools/docs.sh` has built it. Exits 1 when a page shows a traceback where none is expected, an expected
output is empty, or the browser logs a console error."""
import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']

# cells added after the tutorial's own: (name, source); the last one is expected to raise
EXTRA = [
    ('learner', 'learn'),
    ('dls', 'dls'),
    ('interp', 'interp'),
    ('summary_failure', "broken.summary(path/'images')"),
    ('bad_input', '''\
bad_dir = path.parent/'bad_images'; bad_dir.mkdir(exist_ok=True)
for i in range(8): (bad_dir/f'{"cd"[i % 2]}_{i}.jpg').write_bytes(b'downloaded an HTML page, not an image')
bad = ImageDataLoaders.from_name_func(bad_dir, get_image_files(bad_dir), valid_pct=0.5, seed=0, num_workers=1,
                                      label_func=lambda name: name[0], item_tfms=Resize(32), bs=2)
next(iter(bad.train))'''),
]
RAISES = {'bad_input'}
# tutorial cells to photograph, found by a piece of their source
SHOTS = {'show_batch': 'dls.show_batch(nrows=2, ncols=4)', 'fit': 'learn.fine_tune(EPOCHS, base_lr=LR)',
         'lr_find': 'learn.lr_find(', 'confusion_matrix': 'interp.plot_confusion_matrix('}


def build_notebook(dest: Path) -> tuple:
    nb = json.loads((ROOT/'nbs'/'t1_pet_breeds.ipynb').read_text())
    for name, src in EXTRA:
        nb['cells'].append({'cell_type': 'code', 'metadata': {'tags': ['raises-exception'] * (name in RAISES)},
                            'source': src, 'outputs': [], 'execution_count': None, 'id': f'check-{name}'})
    for c in nb['cells']:
        if c['cell_type'] == 'code': c['outputs'], c['execution_count'] = [], None
    nb['metadata']['kernelspec'] = {'name': 'minifast', 'display_name': 'minifast (.venv)', 'language': 'python'}
    (dest/'t1_pet_breeds.ipynb').write_text(json.dumps(nb))
    src = lambda c: ''.join(c['source']) if isinstance(c['source'], list) else c['source']
    index = {name: next(i for i, c in enumerate(nb['cells']) if c['cell_type'] == 'code' and piece in src(c))
             for name, piece in SHOTS.items()}
    n = len(nb['cells'])
    index.update({name: n - len(EXTRA) + k for k, (name, _) in enumerate(EXTRA)})
    code = [i for i, c in enumerate(nb['cells']) if c['cell_type'] == 'code']
    return index, code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_lab(root: Path, port: int, token: str, log):
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
           f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}', '--LabApp.expose_app_in_browser=True',
           '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
           '--LabApp.extension_manager=readonly',
           f'--LabApp.workspaces_dir={root/"workspaces"}'] + (['--allow-root'] if os.geteuid() == 0 else [])
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(120):
        try:
            urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status?token={token}', timeout=2)
            return proc
        except OSError: time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f'JupyterLab did not start on 127.0.0.1:{port}; see its log above.')


class Check:
    def __init__(self, out: Path):
        self.out, self.failures, self.console = out, [], []

    def fail(self, msg):
        print('FAIL:', msg, flush=True)
        self.failures.append(msg)

    def shot(self, locator, name, page=None):
        path = self.out/f'{name}.png'
        box = locator.bounding_box() if page is not None else None
        if box and box['height'] > 850:  # a long traceback: its top (minifast's message first), in the window
            locator.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(path))
        else: locator.screenshot(path=str(path))
        print('screenshot', path, flush=True)


def cell_state(page, i):
    "(prompt text, number of outputs, stderr/traceback outputs, output text) of notebook cell `i`."
    return page.evaluate('''(i) => {
        const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[i];
        if (!cell) return null;
        const prompt = cell.querySelector('.jp-InputPrompt');
        const outs = cell.querySelectorAll('.jp-OutputArea-output');
        const err = cell.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
        const area = cell.querySelector('.jp-OutputArea');
        return [prompt ? prompt.innerText : '', outs.length, err.length, area ? area.innerText : ''];
    }''', i)


def run_notebook(page, check, index, code, timeout_s):
    # not awaited: the command's promise resolves only when every cell has run, and the fit is watched live
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    fit = index['fit']
    live, t0, seen = False, time.time(), []
    while time.time() - t0 < timeout_s:
        if not live:
            value = page.evaluate('''(i) => {
                const p = document.querySelectorAll('.jp-Notebook .jp-Cell')[i].querySelector('progress');
                return p ? [p.value, p.max] : null; }''', fit)
            if value and value != seen[-1:]: seen.append(value)
            if value and 0 < value[0] < value[1] and '*' in cell_state(page, fit)[0]:
                check.shot(page.locator('.jp-Notebook .jp-Cell').nth(fit), 'progress_live')
                live = True
        last = cell_state(page, code[-1])
        if last and last[0].strip() not in ('[ ]:', '[*]:', '') and '*' not in last[0]: break
        time.sleep(0.1)
    else: check.fail(f'the notebook did not finish in {timeout_s} s')
    if not live: check.fail(f'no live progress bar was seen during the fit (bars seen: {seen[:20]})')


def check_cells(page, check, index, code):
    for i in code:
        prompt, n_out, n_err, text = cell_state(page, i)
        expected_error = i == index['bad_input']
        if '[ ]' in prompt or '*' in prompt: check.fail(f'cell {i} did not run ({prompt})')
        if n_err and not expected_error:
            check.fail(f'cell {i} shows a traceback or stderr output: {text[:300]!r}')
    for name in ('learner', 'dls', 'interp', 'summary_failure', 'show_batch', 'lr_find', 'confusion_matrix', 'fit'):
        if not cell_state(page, index[name])[1]: check.fail(f'the {name} cell has an empty output')
    _, _, n_err, text = cell_state(page, index['bad_input'])
    if not n_err or 'ImageReadError' not in text:
        check.fail(f'the bad input cell shows no ImageReadError: {text[:300]!r}')
    fit = page.locator('.jp-Notebook .jp-Cell').nth(index['fit'])
    print('the fit cell shows:', cell_state(page, index['fit'])[3][:600], flush=True)
    # fine_tune is two fits (the frozen epoch, then the unfrozen ones): a bar and a table each, both still shown
    # after the cells that follow it ran (a later `validate` once blanked the second one)
    bars, tables = fit.locator('progress').count(), fit.locator('table').count()
    if bars != 2 or tables != 2:
        check.fail(f'the fine_tune cell shows {bars} progress bars and {tables} results tables; expected 2 and 2')
    cells = page.locator('.jp-Notebook .jp-Cell')
    shots = [('fit', 'progress_done'), ('show_batch', 'show_batch'), ('lr_find', 'lr_find'),
             ('confusion_matrix', 'confusion_matrix'), ('summary_failure', 'summary_failure'),
             ('bad_input', 'bad_input'), ('learner', 'learner'), ('dls', 'dls'), ('interp', 'interp')]
    for cell, name in shots: check.shot(cells.nth(index[cell]).locator('.jp-Cell-outputWrapper'), name, page)


def check_docs(browser, check, docs: Path):
    if not (docs/'index.html').exists():
        print(f'no documentation site in {docs} (bash tools/docs.sh builds it): skipped', flush=True)
        return
    # nbdev_docs (quarto) names a page without its number, tools/docs_html.py keeps the notebook's name
    wanted = [('index.html',), ('learner.html', '16_learner.html'), ('t1_pet_breeds.html',)]
    pages = []
    for names in wanted:
        found = [p for p in names if (docs/p).exists()]
        if found: pages.append(found[0])
        else: check.fail(f'the docs site in {docs} has no page {" or ".join(names)}')
    port = free_port()
    server = subprocess.Popen([sys.executable, '-m', 'http.server', str(port), '--bind', '127.0.0.1',
                               '--directory', str(docs)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        page = browser.new_page(viewport={'width': 1100, 'height': 900})
        local = f'http://127.0.0.1:{port}/'

        def on_console(m):
            if m.type != 'error': return
            url = (m.location or {}).get('url', '')
            # the nbconvert pages load require.js and MathJax from a CDN, which this offline machine cannot reach
            if url and not url.startswith(local): print(f'offline, not loaded: {url}', flush=True)
            else: check.console.append(f'docs: {m.text} ({url})')
        page.on('console', on_console)
        for p in pages:
            page.goto(f'http://127.0.0.1:{port}/{p}', wait_until='load')
            if 'Traceback (most recent call last)' in page.inner_text('body'):
                check.fail(f'the docs page {p} shows a Python traceback')
            check.shot(page, f'docs_{p.removesuffix(".html").lstrip("0123456789_")}')
    finally: server.terminate()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'docs'/'screenshots'))
    ap.add_argument('--timeout', type=int, default=1500, help='seconds for the whole notebook')
    ap.add_argument('--chromium', default=shutil.which('chromium') or '/usr/bin/chromium')
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out)
    work = Path(tempfile.mkdtemp(prefix='minifast_browser_'))
    index, code = build_notebook(work)
    os.environ.setdefault('MINIFAST_HOME', str(work/'home'))  # the kernel's toy data, away from ~/.minifast
    token, port = secrets.token_hex(16), free_port()
    with open(work/'jupyterlab.log', 'w') as log:
        lab = start_lab(work, port, token, log)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={'width': 1100, 'height': 900})
                page.on('console', lambda m: m.type == 'error' and check.console.append(m.text))
                page.on('pageerror', lambda e: check.console.append(f'page error: {e}'))
                page.goto(f'http://127.0.0.1:{port}/lab/tree/t1_pet_breeds.ipynb?token={token}')
                page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=120_000)
                page.wait_for_function("document.querySelector('.jp-Notebook-ExecutionIndicator') !== null"
                                       " || document.querySelector('.jp-KernelStatus') !== null", timeout=120_000)
                time.sleep(3)  # the kernel starts
                run_notebook(page, check, index, code, args.timeout)
                check_cells(page, check, index, code)
                check_docs(browser, check, ROOT/'_docs')
                browser.close()
        finally:
            lab.terminate()
            lab.wait(timeout=30)
    for msg in check.console: check.fail(f'console error: {msg}')
    if check.failures:
        print(f'{len(check.failures)} problem(s); JupyterLab log: {work/"jupyterlab.log"}', flush=True)
        sys.exit(1)
    print(f'browser check passed; screenshots in {out}', flush=True)


if __name__ == '__main__': main()
