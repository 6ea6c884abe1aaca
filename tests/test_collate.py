"Batch collation through the loader: exactly torch's default_collate, in this process (numpy's copy) and in workers."
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from minifast.data import collate, core
from minifast.data.block import CategoryBlock, DataBlock
from minifast.data.transforms import RandomSplitter, get_image_files, parent_label
from minifast.vision.augment import Resize
from minifast.vision.data import ImageBlock


@pytest.fixture
def noisy_folder(tmp_path):
    "Two classes of noise JPEGs of different sizes: every pixel differs, so a misplaced byte shows."
    rng = np.random.default_rng(0)
    for label in ('a', 'b'):
        (tmp_path/label).mkdir()
        for i in range(6):
            noise = rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)
            Image.fromarray(noise).save(tmp_path/label/f'{label}_{i}.jpg')
    return tmp_path


def _dls(folder, num_workers):
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                      splitter=RandomSplitter(valid_pct=0.5, seed=0), item_tfms=Resize(24))
    return block.dataloaders(folder, bs=4, device='cpu', num_workers=num_workers, seed=0)


def _same(a, b):
    assert type(a) is type(b)
    assert (a.dtype, a.shape, a.stride()) == (b.dtype, b.shape, b.stride()) and a.is_contiguous() and torch.equal(a, b)


def test_collation_in_this_process_is_default_collate_done_by_numpy(noisy_folder, monkeypatch):
    dl = _dls(noisy_folder, num_workers=0).valid
    stage = core._ItemStage(dl.dataset, dl.after_item, dl.split_idx, dl.kinds)
    samples = stage.__getitems__(range(4))
    stacked = []
    real = collate._numpy_stack
    monkeypatch.setattr(collate, '_numpy_stack', lambda ts: stacked.append(ts[0].dtype) or real(ts))
    ours, ref = stage.collate(samples), default_collate(list(samples))
    assert stacked == [torch.uint8, torch.int64], 'images and labels are stacked by numpy, not torch.stack'
    assert type(ours) is list and len(ours) == 2
    for a, b in zip(ours, ref): _same(a, b)
    assert ours[0].shape == (4, 3, 24, 24) and ours[1].shape == (4,)
    xb, yb = next(iter(dl))   # and through the loader, batch transforms included (uint8 -> float)
    _same(xb, ref[0].float() / 255); _same(yb, ref[1])


def test_collation_in_workers_gives_the_same_batches(noisy_folder):
    ref = [b for b in _dls(noisy_folder, num_workers=0).valid]
    got = [b for b in _dls(noisy_folder, num_workers=1).valid]
    assert len(got) == len(ref) == 2
    for bg, br in zip(got, ref):
        for a, b in zip(bg, br): _same(a, b)


def test_mismatched_sizes_still_name_the_shapes_and_the_fix(noisy_folder):
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                      splitter=RandomSplitter(valid_pct=0.5, seed=0))
    dl = block.dataloaders(noisy_folder, bs=4, device='cpu', num_workers=0, seed=0).valid
    with pytest.raises(RuntimeError, match=r"element 0 \(image\) has \d different shapes: "
                                           r"\(3, 3\d, 40\).*item_tfms=Resize\("):
        next(iter(dl))


def _sound_loader():
    dsets = core.Datasets(list(range(6)), [[lambda i: torch.full((4,), float(i))], [lambda i: f'beep{i}']],
                          splits=(range(4), range(4, 6)), kinds=('sound', 'label'))
    return core.DataLoader(dsets.train, bs=4, device='cpu', num_workers=0)


def test_show_batch_uses_the_show_function_registered_for_the_kind(monkeypatch):
    """data.core draws nothing itself: a show function a test registers for 'sound' gets the decoded samples
    and the kinds."""
    monkeypatch.setattr(core, '_show_functions', dict(core._show_functions))   # leave the real registry as it was
    calls = []
    core.register_show('sound', lambda samples, kinds, **kwargs: calls.append((samples, kinds, kwargs)) or 'figure')
    assert _sound_loader().show_batch(max_n=2, nrows=1) == 'figure'
    (samples, kinds, kwargs), = calls
    assert kinds == ('sound', 'label') and kwargs['nrows'] == 1
    assert [s[1] for s in samples] == ['beep0', 'beep1'] and torch.equal(samples[1][0], torch.full((4,), 1.))


def test_show_batch_without_a_show_function_says_what_to_import(monkeypatch):
    monkeypatch.setattr(core, '_show_functions', {})
    with pytest.raises(ValueError, match=r"show_batch: no show function is registered for samples of kinds "
                                         r"\['sound', 'label'\].*import minifast.vision.all"):
        _sound_loader().show_batch()


def test_the_loader_reads_n_inp_kinds_and_vocab_from_its_datasets():
    "One source of truth: the Datasets; a loader over a plain dataset has one input and no kinds."
    dl = _sound_loader()
    assert dl.dsets is dl.dataset.dsets and (dl.n_inp, dl.kinds, dl.vocab) == (1, ('sound', 'label'), None)
    assert not hasattr(dl.dataset, 'kinds'), "DatasetSubset forwards nothing: read the Datasets through dl.dsets"
    plain = core.DataLoader([(torch.zeros(2), 0)] * 3, bs=2, device='cpu', num_workers=0)
    assert (plain.dsets, plain.n_inp, plain.kinds, plain.vocab) == (None, 1, None, None)
