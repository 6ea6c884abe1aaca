"`ImageClassifierCleaner`, driven through its widget objects as a user's clicks would, without a browser."
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from minifast.learner import Learner
from minifast.vision.augment import Resize
from minifast.vision.data import ImageDataLoaders
from minifast.vision.widgets import ImageClassifierCleaner

pytest.importorskip('ipywidgets')


def _make_folder(path):
    "`red/` and `blue/` squares, one blue square filed under red: a data set whose labels are the folders."
    for label, colour in (('red', (220, 20, 20)), ('blue', (20, 20, 220))):
        (path/label).mkdir()
        for i in range(6): Image.new('RGB', (20 + i, 20), colour).save(path/label/f'{label}_{i}.png')
    Image.new('RGB', (20, 20), (20, 20, 220)).save(path/'red'/'odd.png')
    return path


def _learner(folder):
    dls = ImageDataLoaders.from_folder(folder, valid_pct=0.3, seed=0, item_tfms=Resize(16), bs=4, device='cpu',
                                       num_workers=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    return Learner(dls, model, lr=3e-2)


@pytest.fixture(scope='module')
def trained_weights(tmp_path_factory):
    "The weights of a small CNN fit once on a copy of the folder (the tests then change their own copies)."
    learn = _learner(_make_folder(tmp_path_factory.mktemp('train')))
    with learn.no_bar(), learn.no_results_table(): learn.fit(4)
    return {k: v.clone() for k, v in learn.model.state_dict().items()}


@pytest.fixture
def folder(tmp_path): return _make_folder(tmp_path)


@pytest.fixture
def learn(folder, trained_weights):
    learn = _learner(folder)
    learn.model.load_state_dict(trained_weights)
    return learn


def _grid(cleaner, cls, split):
    cleaner.class_dropdown.value, cleaner.split_dropdown.value = cls, split
    return list(cleaner.fns)


def test_each_grid_holds_one_class_and_split_ordered_by_an_independent_loss(learn):
    cleaner = ImageClassifierCleaner(learn)
    for split, ds_idx in (('Train', 0), ('Valid', 1)):
        items = list(learn.dls[ds_idx].items)
        # the reference: probabilities from get_preds on the split's items, then -log p(target) by hand
        probs, targs = learn.get_preds(dl=learn.dls.test_dl(items, with_labels=True))
        losses = F.nll_loss(probs.log(), targs, reduction='none')
        for c, cls in enumerate(learn.dls.vocab):
            fns = _grid(cleaner, cls, split)
            assert set(fns) == {items[i] for i in range(len(items)) if targs[i] == c}
            shown = losses[[items.index(f) for f in fns]]
            assert (shown[:-1] >= shown[1:] - 1e-6).all()  # highest loss first
            assert len(cleaner.grid.children) == len(fns) == len(cleaner.selectors)
    assert sum(len(_grid(cleaner, c, s)) for c in ('red', 'blue') for s in ('Train', 'Valid')) == 13


def test_the_misfiled_image_tops_its_grid_and_max_n_cuts(learn, folder):
    cleaner = ImageClassifierCleaner(learn, max_n=2)
    split = 'Train' if folder/'red'/'odd.png' in cleaner.tables['Train']['items'] else 'Valid'
    fns = _grid(cleaner, 'red', split)
    assert fns[0] == folder/'red'/'odd.png' and len(fns) <= 2
    # each selector offers keep, delete and the other classes; each cell shows the image
    assert list(cleaner.selectors[0].options) == ['<Keep>', '<Delete>', 'blue']
    assert cleaner.grid.children[0].children[0].value[:4] == b'\x89PNG'


def test_delete_and_change_read_the_grid_shown_and_marks_survive_switching(learn):
    cleaner = ImageClassifierCleaner(learn)
    fns = _grid(cleaner, 'red', 'Train')
    cleaner.selectors[0].value = '<Delete>'
    cleaner.selectors[2].value = 'blue'
    assert cleaner.delete() == [0] and cleaner.change() == [(2, 'blue')]
    _grid(cleaner, 'blue', 'Valid')
    assert cleaner.delete() == [] and cleaner.change() == []
    assert _grid(cleaner, 'red', 'Train') == fns
    assert cleaner.delete() == [0] and cleaner.change() == [(2, 'blue')]
    assert cleaner.selectors[0].value == '<Delete>'
    cleaner.selectors[0].value = '<Keep>'
    assert cleaner.delete() == [] and set(cleaner.marks) == {fns[2]}


def test_apply_moves_into_the_class_folder_never_overwriting_and_dry_run_changes_nothing(learn, folder, capsys):
    cleaner = ImageClassifierCleaner(learn)
    fns = _grid(cleaner, 'red', 'Train')
    moved, deleted = fns[0], fns[1]
    (folder/'blue'/moved.name).write_bytes(b'already here')  # the name is taken in the target folder
    cleaner.selectors[0].value = 'blue'
    cleaner.selectors[1].value = '<Delete>'
    before = sorted(folder.rglob('*'))
    plan = cleaner.apply(dry_run=True)
    assert sorted(folder.rglob('*')) == before and 'dry run: nothing changed' in capsys.readouterr().out
    target = folder/'blue'/f'{moved.stem}_1{moved.suffix}'
    assert plan == [('move', moved, target), ('delete', deleted, None)]
    moved_bytes = moved.read_bytes()
    done = cleaner.apply()
    assert done == plan
    out = capsys.readouterr().out
    assert '1 moved, 1 deleted' in out and str(target) in out
    assert target.read_bytes() == moved_bytes and (folder/'blue'/moved.name).read_bytes() == b'already here'
    assert not moved.exists() and not deleted.exists()
    assert cleaner.marks == {} and moved not in cleaner.fns and deleted not in cleaner.fns


def test_apply_with_dest_and_trash(learn, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp('sorted')
    cleaner = ImageClassifierCleaner(learn)
    fns = _grid(cleaner, 'blue', 'Train')
    cleaner.selectors[0].value = 'red'
    cleaner.selectors[1].value = '<Delete>'
    cleaner.apply(dest=out, trash=out/'trash')
    assert (out/'red'/fns[0].name).exists() and (out/'trash'/fns[1].name).exists()
    assert not fns[0].exists() and not fns[1].exists()


def test_apply_checks_everything_before_changing_anything(learn, folder):
    cleaner = ImageClassifierCleaner(learn)
    fns = _grid(cleaner, 'red', 'Train')
    cleaner.selectors[0].value = '<Delete>'
    cleaner.selectors[1].value = 'blue'
    fns[1].unlink()  # gone behind the cleaner's back
    with pytest.raises(FileNotFoundError, match=f'{fns[1].name}.*nothing was changed'): cleaner.apply()
    assert fns[0].exists()
    cleaner.selectors[1].value = '<Keep>'
    # labels that are not folder names: where the new class lives is unknown without dest=
    cleaner.labels[fns[2]] = 'somewhere'
    cleaner.selectors[2].value = 'blue'
    with pytest.raises(ValueError, match='pass dest='): cleaner.apply()
    assert fns[0].exists() and fns[2].exists()


def test_without_ipywidgets_the_error_says_how_to_install(learn, monkeypatch):
    monkeypatch.setitem(sys.modules, 'ipywidgets', None)
    with pytest.raises(ImportError, match=r"pip install 'minifast\[widgets\]'"): ImageClassifierCleaner(learn)


def test_a_data_set_without_files_is_refused():
    from types import SimpleNamespace
    from minifast.vision.widgets import _split_table
    learn = SimpleNamespace(dls=[SimpleNamespace(items=[0, 1, 2])])
    with pytest.raises(ValueError, match='split 0 are ints, not image files'): _split_table(learn, 0)


def test_an_error_midway_reports_what_was_done_and_keeps_the_other_marks(learn, monkeypatch, capsys):
    import minifast.vision.widgets as widgets
    cleaner = ImageClassifierCleaner(learn)
    fns = _grid(cleaner, 'red', 'Train')
    cleaner.selectors[0].value = '<Delete>'
    cleaner.selectors[1].value = 'blue'
    real_move = widgets.shutil.move
    def failing_move(src, dst): raise PermissionError(f"cannot write {dst}")
    monkeypatch.setattr(widgets.shutil, 'move', failing_move)
    with pytest.raises(PermissionError): cleaner.apply()
    out = capsys.readouterr().out
    assert f'delete {fns[0]}' in out and '1 deleted' in out and 'moved' not in out
    assert not fns[0].exists() and fns[1].exists() and cleaner.marks == {fns[1]: 'blue'}
    monkeypatch.setattr(widgets.shutil, 'move', real_move)
    assert [a for a, _, _ in cleaner.apply()] == ['move']
