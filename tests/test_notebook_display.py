"""A real notebook run by nbclient in a fresh Jupyter kernel without ipywidgets: what a front end would receive.

The MIME bundles are what JupyterLab, VS Code or Colab render: the fit cell must hold one HTML output (the bar and
the table) that later messages update in place, the pictures must be PNGs, and progress must write nothing to
stderr (which Jupyter shows in red)."""
import base64
import io
import re

import pytest
from PIL import Image

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')

_BLOCK_WIDGETS = '''\
import importlib.abc, sys
class _NoWidgets(importlib.abc.MetaPathFinder):
    "A plain `pip install jupyterlab`: ipywidgets cannot be imported."
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'ipywidgets': raise ImportError('ipywidgets is blocked in this test')
sys.meta_path.insert(0, _NoWidgets())
assert 'ipywidgets' not in sys.modules
%matplotlib inline'''

_CELLS = {
    'setup': _BLOCK_WIDGETS,
    'data': '''\
from minifast.vision.all import *
torch.manual_seed(0)
path = toy_pets(n_per_breed=2)
dls = ImageDataLoaders.from_name_func(path/'images', get_image_files(path/'images'), valid_pct=0.25, seed=42,
                                      label_func=lambda name: 'cat' if is_cat(name.rsplit('_', 1)[0]) else 'dog',
                                      item_tfms=Resize(32), bs=8, num_workers=0, device='cpu')''',
    'dls': 'dls',
    'show_batch': 'dls.show_batch(max_n=4, nrows=1);',
    'learner': 'learn = vision_learner(dls, resnet18, pretrained=False, metrics=error_rate)\nlearn',
    'fit': 'learn.progress.refresh_s = 0.05\nlearn.fit(2, 1e-3)',
    'recorder': 'learn.recorder',
    'fine_tune': 'learn.fine_tune(2, 1e-3, freeze_epochs=1)',
    'validate': 'learn.validate()',
    'lr_find': 'learn.lr_find(num_it=8)',
    'interp': 'interp = ClassificationInterpretation.from_learner(learn)\ninterp.plot_confusion_matrix()\ninterp',
    'summary_failure': '''\
unsized = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=RandomSplitter(seed=42),
                    get_y=lambda p: 'cat' if is_cat(p.name.rsplit('_', 1)[0]) else 'dog')
unsized.summary(path/'images')''',
    'bad_input': '''\
bad_dir = path/'bad'; bad_dir.mkdir(exist_ok=True)
for i in range(8): (bad_dir/f'{"cd"[i % 2]}_{i}.jpg').write_bytes(b'not an image')
bad = ImageDataLoaders.from_name_func(bad_dir, get_image_files(bad_dir), valid_pct=0.5, seed=0, num_workers=1,
                                      label_func=lambda name: name[0], item_tfms=Resize(32), bs=2, device='cpu')
next(iter(bad.train))''',
    'widgets_still_blocked': "assert 'ipywidgets' not in sys.modules",
}
_RAISES = {'bad_input'}


class _RecordingClient(nbclient.NotebookClient):
    "Keeps every iopub message's type and display id, per cell: nbclient itself folds the updates into one output."
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages = {}

    def process_message(self, msg, cell, cell_index):
        content = msg.get('content', {})
        display_id = content.get('transient', {}).get('display_id')
        self.messages.setdefault(cell_index, []).append((msg['msg_type'], display_id, content.get('name')))
        return super().process_message(msg, cell, cell_index)


@pytest.fixture(scope='module')
def ran(tmp_path_factory):
    import os
    home = tmp_path_factory.mktemp('nb_home')
    nb = nbformat.v4.new_notebook()
    tags = lambda name: ['raises-exception'] if name in _RAISES else []  # nbclient goes on after such a cell
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={'name': name, 'tags': tags(name)})
                for name, src in _CELLS.items()]
    env = dict(os.environ, MINIFAST_HOME=str(home), OMP_NUM_THREADS='1')
    env.pop('MPLBACKEND', None)  # the kernel's own inline backend, as in Jupyter
    old = os.environ.copy()
    os.environ.clear(); os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = _RecordingClient(nb, timeout=240, kernel_name='python3', resources={'metadata': {'path': str(home)}})
        client.execute()
    finally:
        os.environ.clear(); os.environ.update(old)
    cells = {c.metadata['name']: (i, c) for i, c in enumerate(nb.cells)}
    return cells, client.messages


def _outputs(ran, name):
    cells, _ = ran
    return cells[name][1].outputs


def test_the_fit_cell_is_one_html_output_updated_in_place(ran):
    cells, messages = ran
    i, cell = cells['fit']
    html = [o for o in cell.outputs if 'text/html' in o.get('data', {})]
    assert len(html) == 1, [o.get('output_type') for o in cell.outputs]
    final = html[0]['data']['text/html']
    assert '<progress value="2" max="2"' in final and '2/2 epochs' in final
    assert final.count('<tr>') == 3 and '<th>error_rate</th>' in final  # header + one row per epoch
    sent = [(kind, did) for kind, did, _ in messages[i] if kind in ('display_data', 'update_display_data')]
    ids = {did for _, did in sent}
    assert len(ids) == 1 and None not in ids, sent
    assert sent[0][0] == 'display_data' and [k for k, _ in sent].count('display_data') == 1, sent
    assert len(sent) >= 3, sent  # at least the end of each epoch updated it


def test_fine_tune_keeps_one_output_per_fit_and_a_later_validate_leaves_them(ran):
    cells, messages = ran
    i, cell = cells['fine_tune']
    tables = [o['data']['text/html'] for o in cell.outputs if 'text/html' in o.get('data', {})]
    assert len(tables) == 2, [o.get('data', o.get('text')) for o in cell.outputs]
    frozen, unfrozen = tables
    assert '1/1 epochs' in frozen and frozen.count('<tr>') == 2 and '<td>0</td>' in frozen  # header + epoch 0
    assert '2/2 epochs' in unfrozen and unfrozen.count('<tr>') == 3 and '<td>1</td>' in unfrozen  # epochs 0, 1
    ids = [did for kind, did, _ in messages[i] if kind == 'display_data']
    assert len(set(ids)) == 2 and None not in ids, ids
    # `validate` in the next cell shows its bar in an output of its own, never through the fit's display ids
    j = cells['validate'][0]
    assert not {did for _, did, _ in messages[j] if did} & set(ids), messages[j]


def test_progress_writes_nothing_to_stderr(ran):
    cells, messages = ran
    i, cell = cells['fit']
    assert not [o for o in cell.outputs if o.output_type == 'stream'], cell.outputs
    assert not [m for m in messages[i] if m[0] == 'stream'], messages[i]


def test_pictures_are_png(ran):
    pictures = [o for o in _outputs(ran, 'show_batch') if o.output_type == 'display_data']
    assert len(pictures) == 1 and 'image/png' in pictures[0]['data']  # drawn once, not twice


def test_objects_show_as_html(ran):
    (dls,) = [o for o in _outputs(ran, 'dls') if o.output_type == 'execute_result']
    assert '<b>DataLoaders</b>' in dls['data']['text/html'] and 'cat, dog' in dls['data']['text/html']
    pngs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', dls['data']['text/html'])
    sizes = [Image.open(io.BytesIO(base64.b64decode(s))).size for s in pngs]
    # the first 4 training images, fitted in 64 px (never enlarged: some toy images are smaller)
    assert len(sizes) == 4 and all(0 < min(s) and max(s) <= 64 for s in sizes) and (35, 64) in sizes, sizes
    (learn,) = [o for o in _outputs(ran, 'learner') if o.output_type == 'execute_result']
    html = learn['data']['text/html']
    assert '<b>Learner</b>' in html and 'arch resnet18' in html and 'trainable' in html, html
    (rec,) = [o for o in _outputs(ran, 'recorder') if o.output_type == 'execute_result']
    assert rec['data']['text/html'].count('<tr>') == 3


def test_lr_find_and_the_confusion_matrix_are_pictures_drawn_once(ran):
    for name in ('lr_find', 'interp'):
        pictures = [o for o in _outputs(ran, name) if 'image/png' in o.get('data', {})]
        assert len(pictures) == 1, (name, [o.output_type for o in _outputs(ran, name)])
    (interp,) = [o for o in _outputs(ran, 'interp') if o.output_type == 'execute_result']
    assert 'most confused' in interp['data']['text/html']


def test_a_datablock_summary_failure_is_an_html_report(ran):
    outputs = _outputs(ran, 'summary_failure')
    assert not [o for o in outputs if o.output_type == 'stream'], outputs
    (report,) = [o['data']['text/html'] for o in outputs if 'text/html' in o.get('data', {})]
    assert '&#10007; FAILED' in report and 'Resize' in report and '<pre' in report


def test_a_bad_image_in_a_worker_shows_minifast_message(ran):
    (err,) = [o for o in _outputs(ran, 'bad_input') if o.output_type == 'error']
    assert err.ename == 'ImageReadError' and err.evalue.startswith('Cannot read the image'), err.evalue[:300]
    text = '\n'.join(err.traceback)
    assert 'Cannot read the image' in text and 'Original Traceback' in text  # the worker's traceback is still there
    assert text.index('Cannot read the image') < text.index('Original Traceback')  # after minifast's message


def test_no_cell_failed_or_wrote_to_stderr(ran):
    cells, _ = ran
    for name, (_, cell) in cells.items():
        if name in _RAISES: continue
        bad = [o for o in cell.outputs if o.output_type == 'error' or o.get('name') == 'stderr']
        assert not bad, (name, bad)
