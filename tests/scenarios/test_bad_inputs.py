"""Issue 6's bad-input suite: the files, data-block mistakes and training accidents students produce.

Each case either works (checked on pixel content, not just shapes) or fails with an exception that names
the culprit and says what to do, and loses nothing (the learner still trains, weights or the previous
export file unchanged where they should be). Some cases are also covered closer to their code, in
test_images.py, test_export.py, test_learner.py and test_chapter5.py; here they go through the path a
student takes (a folder, a DataBlock, a Learner), and with the extra "nothing is lost" checks.

These tests run as root in CI, where chmod does not stop writes: read-only and full locations are
simulated where the failure happens (a parent that is a file, `os.replace` refused, a write that runs
out of space the way torch reports it on a real full disk).
"""
import copy
import errno
import io
import os
import pickle
import re
import struct
import traceback
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import make_mlp, make_synth_dls
from minifast.callback.core import Callback, CancelBatchException
from minifast.callback.tracker import TerminateOnNaNCallback
from minifast.data.block import CategoryBlock, DataBlock
from minifast.data.transforms import (FuncSplitter, FuncTransform, RandomSplitter, RegexLabeller, get_image_files,
                                      parent_label, using_attr)
from minifast.learner import load_learner
from minifast.learner import Learner
from minifast.losses import CrossEntropyLossFlat
from minifast.vision.augment import Resize
from minifast.vision.core import ImageReadError
from minifast.vision.data import ImageBlock, ImageDataLoaders
from minifast.vision.learner import resnet18, vision_learner


# ---- helpers ---------------------------------------------------------------------------------------
def _image_block(item_tfms=Resize(16), **kwargs):
    "Images labelled by their folder, as in the course; a fixed split."
    kwargs.setdefault('splitter', RandomSplitter(valid_pct=0.25, seed=0))
    return DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                     item_tfms=item_tfms, **kwargs)


def _dls(folder, bs=4, **kwargs):
    return _image_block(**kwargs).dataloaders(folder, bs=bs, device='cpu', num_workers=0, seed=0)


def _tiny_cnn(n_out=2):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, n_out))


def _params(model): return [p.detach().clone() for p in model.parameters()]
def _state(model): return {k: v.clone() for k, v in model.state_dict().items()}
def _same_params(a, b): return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
def _finite(model): return all(torch.isfinite(v.float()).all() for v in model.state_dict().values())


def _trains(learn, n_epoch=1):
    "Fit once more: the learner is usable, the losses are finite and the weights move."
    before = _params(learn.model)
    with learn.no_bar(): learn.fit(n_epoch, lr=1e-2)
    assert all(np.isfinite(v[0]) for v in learn.recorder.values), learn.recorder.values
    assert not _same_params(before, _params(learn.model)), "fit must change the weights"
    assert _finite(learn.model)


def _pixels(dls, fn):
    "The file `fn` through the full inference pipeline (load, item and batch transforms), as an HWC uint8 array."
    x = dls.test_dl([fn]).one_batch()[0][0]
    assert x.shape[0] == 3 and x.dtype == torch.float32
    return (x.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy().astype(int)


def _iterate_all(dls):
    "One full pass over the training and validation loaders, none dropped: every file is read. Returns the count."
    n = 0
    for dl in (dls.train.new(drop_last=False), dls.valid):
        for xb, yb in dl:
            assert xb.ndim == 4 and xb.shape[1] == 3
            n += len(xb)
    return n


def _close(a, rgb, tol=6): return bool(np.all(np.abs(np.asarray(a) - np.asarray(rgb)) <= tol))


def _png16_rgb(path, a):
    "Write `a` (H, W, 3 uint16) as a 48-bit RGB PNG (PIL cannot write those; scanners and Photoshop do)."
    h, w, _ = a.shape
    raw = b''.join(b'\x00' + a[y].astype('>u2').tobytes() for y in range(h))
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, 2, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def _halves(mode, left, right, size=(16, 16)):
    img = Image.new(mode, size, left)
    img.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return img


# ---- files -----------------------------------------------------------------------------------------
def _jpeg_bytes():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, 'JPEG')
    return buf.getvalue()

_JPEG = _jpeg_bytes()


@pytest.mark.parametrize('name,content', [
    ('truncated.jpg', _JPEG[:len(_JPEG) // 2]),  # a download cut short
    ('zero_bytes.jpg', b''),
    ('notes.jpg', b'my notes about cats, saved with the wrong name\n'),
    ('page.jpg', b'<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body>Forbidden</body></html>'),
], ids=['truncated', 'zero_bytes', 'text', 'html'])
def test_unreadable_file_in_the_folder_stops_training_naming_it(colour_folder, name, content):
    bad = colour_folder/'red'/name
    bad.write_bytes(content)
    learn = Learner(_dls(colour_folder, bs=1), _tiny_cnn())  # bs=1: no item is left out of the epoch
    with learn.no_bar(), pytest.raises(ImageReadError) as e: learn.fit(1)
    assert str(bad) in str(e.value) and 'delete or replace' in str(e.value)
    assert learn.exception is None and _finite(learn.model)
    bad.unlink()  # the fix the message suggests; the same learner then trains on the cleaned folder
    learn.dls = _dls(colour_folder)
    _trains(learn)


def test_rgba_png_named_jpg_is_composited_on_white(colour_folder):
    fn = colour_folder/'red'/'sticker.jpg'
    _halves('RGBA', (0, 200, 0, 255), (0, 0, 255, 0)).save(fn, format='PNG')  # right half: transparent blue
    dls = _dls(colour_folder)
    a = _pixels(dls, fn)
    assert _close(a[:, :6], (0, 200, 0), tol=1), "the opaque half keeps its colour"
    assert _close(a[:, -6:], (255, 255, 255), tol=1), "the transparent half is white, not the hidden blue nor black"
    assert _iterate_all(dls) == 17


def test_grayscale_jpeg_becomes_three_equal_channels(colour_folder):
    fn = colour_folder/'blue'/'scan.jpg'
    _halves('L', 30, 220).save(fn, quality=95)
    a = _pixels(_dls(colour_folder), fn)
    assert _close(a[:, :6], (30, 30, 30)) and _close(a[:, -6:], (220, 220, 220))
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


def test_cmyk_jpeg_gets_its_real_colours(colour_folder):
    fn = colour_folder/'red'/'print.jpg'
    _halves('CMYK', (0, 255, 255, 0), (255, 0, 255, 0)).save(fn, quality=95)  # red | green in ink
    a = _pixels(_dls(colour_folder), fn)
    assert _close(a[:, :6], (255, 0, 0), tol=10) and _close(a[:, -6:], (0, 255, 0), tol=10)


@pytest.mark.parametrize('transparent', [False, True])
def test_palette_png_keeps_its_colours(colour_folder, transparent):
    fn = colour_folder/'red'/'gif_like.png'
    img = Image.new('P', (16, 16), 0)
    img.putpalette([250, 10, 10, 10, 10, 250] + [0] * 762)
    img.paste(1, (8, 0, 16, 16))
    img.save(fn, **({'transparency': 1} if transparent else {}))
    a = _pixels(_dls(colour_folder), fn)
    assert _close(a[:, :6], (250, 10, 10), tol=1)
    assert _close(a[:, -6:], (255, 255, 255) if transparent else (10, 10, 250), tol=1)


def test_16_bit_pngs_are_rescaled_not_clipped(colour_folder):
    gray = colour_folder/'blue'/'deep_gray.png'
    halves = [np.full((16, 8), 65535, np.uint16), np.full((16, 8), 32896, np.uint16)]
    Image.fromarray(np.concatenate(halves, 1)).save(gray)
    rgb = colour_folder/'blue'/'deep_rgb.png'
    a = np.zeros((16, 16, 3), np.uint16); a[:, :8] = (65535, 0, 32896); a[:, 8:] = (0, 65535, 0)
    _png16_rgb(rgb, a)
    dls = _dls(colour_folder)
    g = _pixels(dls, gray)
    assert _close(g[:, :6], (255, 255, 255), tol=1) and _close(g[:, -6:], (128, 128, 128), tol=1), \
        "not all white (clipped)"
    c = _pixels(dls, rgb)
    assert _close(c[:, :6], (255, 0, 128), tol=1) and _close(c[:, -6:], (0, 255, 0), tol=1)
    assert _iterate_all(dls) == 18


@pytest.mark.parametrize('orientation,corner', [(3, 'bottom_right'), (6, 'top_right'), (8, 'bottom_left')])
def test_exif_rotated_jpeg_loads_upright_also_when_decoded_small(colour_folder, orientation, corner):
    """A phone photo: stored landscape with a red marker top-left, EXIF says how to turn it. Resize(64) makes the loader
    decode it at reduced scale (draft) first."""
    fn = colour_folder/'red'/'phone.jpg'
    img = Image.new('RGB', (400, 200), (0, 0, 255)); img.paste((255, 0, 0), (0, 0, 100, 100))
    exif = Image.Exif(); exif[0x0112] = orientation
    img.save(fn, exif=exif.tobytes(), quality=95)
    block = _image_block(item_tfms=Resize(64, method='squish'))
    dsets = block.datasets(colour_folder)
    loaded = dsets[list(dsets.items).index(fn)][0]
    w, h = loaded.size
    assert loaded.mode == 'RGB' and max(w, h) < 400, "decoded at reduced scale"
    assert (w > h) == (orientation == 3), "portrait after turning, for 6 and 8"
    a = _pixels(block.dataloaders(colour_folder, bs=4, device='cpu', num_workers=0), fn)
    quadrants = {'top_left': a[4, 4], 'top_right': a[4, -5], 'bottom_left': a[-5, 4], 'bottom_right': a[-5, -5]}
    for name, px in quadrants.items():
        assert _close(px, (255, 0, 0) if name == corner else (0, 0, 255), tol=30), (name, px)


def test_huge_jpeg_is_decoded_small_and_loads(colour_folder):
    fn = colour_folder/'blue'/'camera_raw.jpg'
    Image.new('RGB', (8000, 6000), (0, 180, 0)).save(fn, quality=80)
    block = _image_block(item_tfms=Resize(16))
    dsets = block.datasets(colour_folder)
    loaded = dsets[list(dsets.items).index(fn)][0]
    assert 16 <= min(loaded.size) and max(loaded.size) <= 1000, "DataBlock passes Resize's size on: JPEG draft decoding"
    dls = block.dataloaders(colour_folder, bs=4, device='cpu', num_workers=0)
    assert _close(_pixels(dls, fn), (0, 180, 0), tol=8)
    assert _iterate_all(dls) == 17


@pytest.mark.parametrize('method', ['crop', 'pad', 'squish'])
def test_tiny_3x3_image_is_upscaled(colour_folder, method):
    fn = colour_folder/'red'/'icon.png'
    Image.new('RGB', (3, 3), (240, 200, 20)).save(fn)
    dls = _dls(colour_folder, item_tfms=Resize(16, method=method))
    assert _close(_pixels(dls, fn), (240, 200, 20), tol=1)
    assert _iterate_all(dls) == 17


def test_symlink_loop_in_the_folder_lists_each_file_once(colour_folder):
    real = sorted(get_image_files(colour_folder))
    os.symlink(colour_folder, colour_folder/'red'/'loop')   # a link back to the root
    os.symlink('..', colour_folder/'blue'/'up')             # and one to the parent, relative
    assert sorted(get_image_files(colour_folder)) == real and len(real) == 16
    dls = _dls(colour_folder)
    assert len(dls.train_ds) + len(dls.valid_ds) == 16 and list(dls.vocab) == ['blue', 'red']


def test_file_deleted_after_listing_names_it_and_the_learner_survives(colour_folder):
    dls = _dls(colour_folder, bs=1)
    gone = dls.train.items[0]
    saved = gone.read_bytes()
    learn = Learner(dls, _tiny_cnn())
    gone.unlink()
    with learn.no_bar(), pytest.raises(FileNotFoundError) as e: learn.fit(1)
    assert str(gone) in str(e.value) and 'moved or deleted' in str(e.value)
    assert learn.exception is None and _finite(learn.model)
    gone.write_bytes(saved)
    _trains(learn)


# ---- data blocks -----------------------------------------------------------------------------------
def _pet_names(folder, names):
    for n in names: Image.new('RGB', (16, 16), (120, 60, 30)).save(folder/n)
    return folder


def test_regex_matching_no_file_names_the_pattern_and_a_file(tmp_path):
    _pet_names(tmp_path, ['Abyssinian_1.jpg', 'Abyssinian_2.jpg', 'beagle_1.jpg', 'beagle_2.jpg'])
    pat = r'(.+)-\d+\.png$'
    with pytest.raises(ValueError) as e:
        ImageDataLoaders.from_name_re(tmp_path, get_image_files(tmp_path), pat=pat, item_tfms=Resize(16))
    msg = str(e.value)
    assert repr(pat) in msg and re.search(r"'(Abyssinian|beagle)_\d\.jpg'", msg) and 'Fix the pattern' in msg


def test_regex_matching_some_files_names_the_one_that_does_not_match(tmp_path):
    _pet_names(tmp_path, ['cat_1.jpg', 'cat_2.jpg', 'dog_1.jpg', 'dog_2.jpg', 'IMG_0042.jpeg'])
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=RandomSplitter(seed=0),
                      get_y=using_attr(RegexLabeller(r'^([a-z]+)_\d+\.jpg$'), 'name'), item_tfms=Resize(16))
    with pytest.raises(ValueError) as e: block.dataloaders(tmp_path, device='cpu')
    assert 'IMG_0042.jpeg' in str(e.value) and 'remove files' in str(e.value)
    (tmp_path/'IMG_0042.jpeg').unlink()
    assert list(block.dataloaders(tmp_path, device='cpu').vocab) == ['cat', 'dog']


@pytest.mark.parametrize('layout', ['empty', 'no_images', 'missing'])
def test_empty_folder_names_the_folder(tmp_path, layout):
    folder = tmp_path/'images'
    if layout != 'missing': folder.mkdir()
    if layout == 'no_images':
        (folder/'README.txt').write_text('images go here'); (folder/'.DS_Store').write_bytes(b'\0\0')
    with pytest.raises((ValueError, FileNotFoundError)) as e: _dls(folder)
    assert str(folder) in str(e.value) and ('Check the path' in str(e.value) or 'matches your files' in str(e.value))
    with pytest.raises((ValueError, FileNotFoundError), match='images'):
        ImageDataLoaders.from_folder(folder, valid_pct=0.2, item_tfms=Resize(16))


def test_label_in_validation_unseen_in_training_names_it_and_the_fix(colour_folder):
    (colour_folder/'green').mkdir()
    Image.new('RGB', (16, 16), (20, 200, 20)).save(colour_folder/'green'/'green_0.jpg')
    in_valid = lambda p: p.parent.name == 'green' or p.name.endswith('_0.jpg')
    try: dls = _dls(colour_folder, splitter=FuncSplitter(in_valid))
    except ValueError as e: err = e  # found up front, before any training (the better place)
    else:  # else at the first validation pass, which must leave the learner usable
        assert list(dls.vocab) == ['blue', 'red']
        learn = Learner(dls, _tiny_cnn())
        with learn.no_bar(), pytest.raises(KeyError) as e: learn.fit(1)
        err = e.value
        assert learn.exception is None and _finite(learn.model)
    assert "'green'" in str(err) and 'vocab=' in str(err)
    # the fix the message suggests
    fixed = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=['blue', 'green', 'red'])),
                      get_items=get_image_files, get_y=parent_label, splitter=FuncSplitter(in_valid),
                      item_tfms=Resize(16))
    learn = Learner(fixed.dataloaders(colour_folder, bs=4, device='cpu', num_workers=0), _tiny_cnn(3))
    _trains(learn)


def test_mismatched_sizes_without_resize_summary_explains(colour_folder):
    lines = []
    _image_block(item_tfms=None).summary(colour_folder, bs=4, print_fn=lines.append)
    text = '\n'.join(lines)
    assert 'cannot be stacked' in text and 'item_tfms=Resize(' in text
    listed = next(l for l in lines if 'element 0 (image) of each sample' in l)
    assert len(set(re.findall(r'\(3, \d+, 40\)', listed))) >= 2, "the differing shapes are listed"
    lines = []
    _image_block(item_tfms=Resize(16)).summary(colour_folder, bs=4, print_fn=lines.append)
    assert lines[-1].strip() == 'All steps succeeded.'


def test_batch_size_larger_than_the_data_set(colour_folder):
    dls = _dls(colour_folder, bs=64)
    assert (len(dls.train), len(dls.valid)) == (1, 1)
    (xb, yb), = list(dls.train)
    assert xb.shape == (12, 3, 16, 16), "one batch with every training item, not zero batches"
    assert len(dls.valid.one_batch()[0]) == 4
    learn = Learner(dls, _tiny_cnn())
    _trains(learn)
    assert learn.recorder.iters == [1]


def test_images_of_different_channel_counts_in_one_batch(tmp_path):
    (tmp_path/'a').mkdir(); (tmp_path/'b').mkdir()
    rgb48 = np.zeros((16, 16, 3), np.uint16); rgb48[...] = (0, 65535, 65535)
    pal = Image.new('P', (16, 16), 1); pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    files = {  # name: (writer, expected RGB)
        'a/rgb.jpg': (lambda p: Image.new('RGB', (16, 16), (200, 30, 30)).save(p, quality=95), (200, 30, 30)),
        'b/gray.png': (lambda p: Image.new('L', (16, 16), 90).save(p), (90, 90, 90)),
        'a/gray_alpha.png': (lambda p: Image.new('LA', (16, 16), (90, 255)).save(p), (90, 90, 90)),
        'b/rgba.png': (lambda p: Image.new('RGBA', (16, 16), (10, 200, 30, 255)).save(p), (10, 200, 30)),
        'a/palette.png': (lambda p: pal.save(p), (10, 200, 30)),
        'b/cmyk.jpg': (lambda p: Image.new('CMYK', (16, 16), (0, 255, 255, 0)).save(p, quality=95), (255, 0, 0)),
        'a/deep.png': (lambda p: Image.fromarray(np.full((16, 16), 32896, np.uint16)).save(p), (128, 128, 128)),
        'b/bilevel.png': (lambda p: Image.new('1', (16, 16), 1).save(p), (255, 255, 255)),
        'a/rgb48.png': (lambda p: _png16_rgb(p, rgb48), (0, 255, 255)),
    }
    for name, (write, _) in files.items(): write(tmp_path/name)
    assert {Image.open(tmp_path/n).mode for n in files} >= {'RGB', 'L', 'LA', 'RGBA', 'P', 'CMYK', 'I;16', '1'}
    dls = _dls(tmp_path, item_tfms=None, bs=len(files), splitter=RandomSplitter(valid_pct=0., seed=0))
    (xb, yb), = list(dls.train)  # no Resize: they all are 16x16, only the channels differ
    assert xb.shape == (len(files), 3, 16, 16)
    names = list(files)
    batch = dls.test_dl([tmp_path/n for n in names], bs=len(files)).one_batch()[0]
    for name, x in zip(names, batch):
        a = (x.permute(1, 2, 0) * 255).round().numpy()
        assert _close(a, files[name][1], tol=6), (name, a[0, 0])


# ---- training --------------------------------------------------------------------------------------
class _LossTimes(CrossEntropyLossFlat):
    "Cross-entropy whose `at`-th training batch (1-based) is multiplied by `value` (NaN or inf): a loss that blows up."
    def __init__(self, at, value):
        super().__init__()
        self.at, self.value, self.calls = at, value, 0
    def forward(self, pred, targ):
        loss = super().forward(pred, targ)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.at: loss = loss * self.value
        return loss


class _LastStep(Callback):
    "The parameters after the last optimiser step, and how many steps there were."
    def before_fit(self): self.steps, self.params = 0, _params(self.learn.model)
    def after_step(self): self.steps, self.params = self.steps + 1, _params(self.learn.model)


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_nan_or_inf_loss_with_terminate_on_nan_keeps_the_last_good_step(value):
    last = _LastStep()
    learn = Learner(make_synth_dls(), make_mlp(), loss_func=_LossTimes(at=5, value=value),
                    cbs=[TerminateOnNaNCallback(), last])
    with learn.no_bar(), pytest.warns(RuntimeWarning,
                                      match=rf'loss is {value} at epoch 0, training batch 4.*lower learning rate'):
        learn.fit(2)
    assert last.steps == 4 and _same_params(last.params, _params(learn.model)), "the bad step never happened"
    assert _finite(learn.model)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in learn.model.parameters())
    _trains(learn)


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_nan_or_inf_loss_without_terminate_on_nan_is_skipped_and_reported_once_with_the_fix(value):
    """Without TerminateOnNaNCallback the default StepGuard skips the bad step on the device (no host sync per batch),
    and the Recorder, which reads the losses once per epoch anyway, says so: once, at the end of the epoch, with the
    number of skipped steps, the first bad batch and the fix. Training goes on with the weights of the last good
    step."""
    learn = Learner(make_synth_dls(), make_mlp(), loss_func=_LossTimes(at=5, value=value))
    with learn.no_bar(), pytest.warns(RuntimeWarning) as caught: learn.fit(2)
    msgs = [str(w.message) for w in caught if str(w.message).startswith('Recorder:')]
    n = len(learn.dls.train)
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith(f'Recorder: 1 of the {n} training steps of epoch 0 had a NaN or infinite '
                              'loss or gradients and were skipped (the first at training batch 4)'), msgs
    assert 'weights, the optimiser state and BatchNorm' in msgs[0] and 'training went on' in msgs[0], msgs
    assert 'Lower the learning rate' in msgs[0] and 'cbs=TerminateOnNaNCallback()' in msgs[0], msgs
    assert learn.recorder.skipped_steps == [1, 0]
    assert all(np.isfinite(learn.recorder.losses)) and all(np.isfinite(v[:2]).all() for v in learn.recorder.values)
    assert _finite(learn.model)
    _trains(learn)


class _StateAfterEachBatch(Callback):
    "Weights, BatchNorm buffers and the optimiser's state (moments, step counts) after every training batch."
    order = 90
    def before_fit(self): self.states = []
    def after_batch(self):
        if not self.learn.training: return
        opt = self.learn.opt.torch_opt
        self.states.append((_state(self.learn.model),
                            {i: {k: v.clone() for k, v in st.items()} for i, st in opt.state_dict()['state'].items()}))


def _same_full_state(a, b):
    (ma, oa), (mb, ob) = a, b
    return (ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma) and oa.keys() == ob.keys()
            and all(oa[i].keys() == ob[i].keys() and all(torch.equal(oa[i][k], ob[i][k]) for k in oa[i]) for i in oa))


class _SkipTrainingBatch(Callback):
    """Drop training batch `at` (counted over the fit) before its forward pass: the reference of a step that never
    happened."""
    order = -20
    def __init__(self, at): self.at = at
    def before_batch(self):
        if self.learn.training and self.learn.train_iter == self.at: raise CancelBatchException()


class _SpoilTrainingBatch(Callback):
    """Make training batch `at` bad: 'nan loss' (NaN gradients), 'inf loss' (loss + inf: the gradients stay finite),
    'inf grad' (the loss stays finite) or 'nan input' (BatchNorm's running statistics take it in)."""
    order = 15  # its after_loss before StepGuard's (20)
    def __init__(self, at, how): self.at, self.how = at, how
    def _here(self): return self.learn.training and self.learn.train_iter == self.at
    def before_batch(self):
        if self._here() and self.how == 'nan input':
            x = self.learn.xb[0].clone(); x[3, 1] = float('nan'); self.learn.xb = (x,)
    def after_loss(self):
        if not self._here() or not self.how.endswith('loss'): return
        learn = self.learn
        learn.loss_grad = learn.loss_grad * float('nan') if self.how == 'nan loss' else learn.loss_grad + float('inf')
        learn.loss = learn.loss_grad.detach()
    def after_backward(self):
        if self._here() and self.how == 'inf grad': self.learn.model[0].weight.grad[1, 0] = float('inf')


@pytest.mark.parametrize('opt_func', ['Adam', 'SGD'])
@pytest.mark.parametrize('how', ['nan loss', 'inf loss', 'inf grad', 'nan input'])
def test_a_bad_batch_without_any_callback_leaves_everything_as_after_the_batch_before(how, opt_func):
    """A NaN or inf loss, an inf gradient with a finite loss, or a NaN input at training batch k: the weights, the
    optimiser state (moments, step counts) and BatchNorm's running statistics after batch k are exactly those after
    batch k-1, and training goes on exactly as in a run where batch k never came (dropped before its forward pass)."""
    from functools import partial
    from minifast.optimizer import Adam, SGD
    opt = partial(SGD, mom=0.9, wd=0.01) if opt_func == 'SGD' else partial(Adam, wd=0.1)
    torch.manual_seed(0)
    model, k = make_mlp(), 4
    runs = {}
    for name, cb in (('spoilt', _SpoilTrainingBatch(k, how)), ('dropped', _SkipTrainingBatch(k))):
        states = _StateAfterEachBatch()
        learn = Learner(make_synth_dls(), copy.deepcopy(model), opt_func=opt, lr=1e-2, cbs=[cb, states])
        with learn.no_bar(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            learn.fit(2)
        runs[name] = (learn, states.states, [str(w.message) for w in caught])
    (spoilt, s_states, s_msgs), (dropped, d_states, d_msgs) = runs['spoilt'], runs['dropped']
    assert len(s_states) == len(d_states) == 2 * len(spoilt.dls.train)
    assert _same_full_state(s_states[k], s_states[k - 1]), "the bad batch changed something"
    assert not _same_full_state(s_states[k + 1], s_states[k]), "the next batch trains"
    assert all(_same_full_state(a, b) for a, b in zip(s_states, d_states)), "not as if the bad batch had never come"
    assert spoilt.recorder.skipped_steps == [1, 0] and dropped.recorder.skipped_steps == [0, 0]
    assert [m for m in s_msgs if m.startswith('Recorder: 1 of the')]
    assert not [m for m in d_msgs if m.startswith('Recorder')]
    assert _finite(spoilt.model) and all(np.isfinite(spoilt.recorder.losses))
    preds, _ = spoilt.get_preds()
    assert torch.isfinite(preds).all()


def test_with_gradient_accumulation_a_bad_batch_skips_the_whole_step():
    """GradientAccumulation: a step spans 2 batches; a NaN input in the first one spoils the accumulated gradients, the
    step is skipped and BatchNorm's statistics go back to before that first batch: the run ends exactly as one where
    both batches of that step never came."""
    from minifast.callback.misc import GradientAccumulation
    torch.manual_seed(0)
    model = make_mlp()
    runs = []
    for cbs in ([_SpoilTrainingBatch(2, 'nan input')], [_SkipTrainingBatch(2), _SkipTrainingBatch(3)]):
        learn = Learner(make_synth_dls(), copy.deepcopy(model), lr=1e-2, cbs=[GradientAccumulation(64), *cbs])
        with learn.no_bar(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            learn.fit(1)
        runs.append(learn)
    spoilt, dropped = runs
    assert spoilt.recorder.skipped_steps == [1] and dropped.recorder.skipped_steps == [0]
    a, b = _state(spoilt.model), _state(dropped.model)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    sa, sb = spoilt.opt.torch_opt.state_dict()['state'], dropped.opt.torch_opt.state_dict()['state']
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])


def test_terminate_on_nan_with_nan_inputs_keeps_batchnorm_statistics(synth_dls):
    """NaN inputs: the forward pass of the bad batch has already put NaN in BatchNorm's running statistics; they are put
    back too."""
    class LastGood(Callback):
        def after_step(self): self.state = {k: v.clone() for k, v in self.learn.model.state_dict().items()}
    class NaNInput(Callback):  # the third training batch carries one NaN feature
        def before_batch(self):
            if self.learn.training and self.learn.train_iter == 2:
                x = self.learn.xb[0].clone(); x[0, 0] = float('nan'); self.learn.xb = (x,)
    last = LastGood()
    learn = Learner(synth_dls, make_mlp(), cbs=[TerminateOnNaNCallback(), last])
    with learn.no_bar(), pytest.warns(RuntimeWarning, match='last good step'): learn.fit(1, cbs=NaNInput())
    now = learn.model.state_dict()
    assert _finite(learn.model), [k for k, v in now.items() if not torch.isfinite(v.float()).all()]
    assert all(torch.equal(now[k], last.state[k]) for k in now if not k.endswith('num_batches_tracked'))
    preds, _ = learn.get_preds()
    assert torch.isfinite(preds).all()


@pytest.mark.parametrize('method', ['fit', 'fit_one_cycle', 'fit_flat_cos'])
def test_learning_rate_zero_changes_no_weight(synth_dls, method):
    learn = Learner(synth_dls, make_mlp(), wd=0.1)  # weight decay too must not move anything at lr 0
    with learn.no_bar(): learn.fit(1)
    before = _params(learn.model)
    with learn.no_bar(): getattr(learn, method)(1, 0.)
    assert _same_params(before, _params(learn.model))
    assert np.isfinite(learn.recorder.values[-1][0])
    _trains(learn)


@pytest.mark.parametrize('call', [
    lambda l: l.fit(1, lr=-1e-3), lambda l: l.fit_one_cycle(1, lr_max=-1e-3), lambda l: l.fit_flat_cos(1, lr=-1e-3),
    lambda l: l.fit(1, lr=[-1e-3]), lambda l: l.fit(1, lr=float('nan')),
    lambda l: l.lr_find(start_lr=-1e-3, show_plot=False),
], ids=['fit', 'fit_one_cycle', 'fit_flat_cos', 'list', 'nan', 'lr_find'])
def test_negative_learning_rate_is_refused_before_anything_changes(synth_dls, call):
    learn = Learner(synth_dls, make_mlp())
    with learn.no_bar(): learn.fit(1)
    state, opt_state, hypers = _state(learn.model), copy.deepcopy(learn.opt.state_dict()), learn.opt.hypers
    with learn.no_bar(), pytest.raises(ValueError) as e: call(learn)
    msg = str(e.value)
    assert ('-0.001' in msg or 'nan' in msg) and 'lr' in msg and any(s in msg for s in ('positive', '0 <', '>= 0'))
    assert all(torch.equal(v, state[k]) for k, v in learn.model.state_dict().items())
    torch.testing.assert_close(learn.opt.state_dict()['torch_opt'], opt_state['torch_opt'], rtol=0, atol=0)
    assert learn.opt.hypers == hypers, "the learning rates in use are unchanged"
    assert learn.exception is None and not any(type(c).__name__ == 'LRFinder' for c in learn.cbs)
    _trains(learn)


@pytest.mark.parametrize('base_lr', [-1e-3, float('nan'), 0.])
def test_fine_tune_with_a_bad_base_lr_changes_nothing_and_names_base_lr(colour_folder, base_lr):
    """base_lr < 0 (or NaN) is refused before freeze(), naming base_lr, not a slice built from it; 0 runs and moves
    nothing, as fit(lr=0)."""
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(16), bs=4, device='cpu')
    learn = vision_learner(dls, resnet18, pretrained=False)
    learn.create_opt()
    trainable, params = [p.requires_grad for p in learn.model.parameters()], _params(learn.model)
    with learn.no_bar():
        if base_lr == 0: learn.fine_tune(1, base_lr=base_lr)
        else:
            with pytest.raises(ValueError, match=r'fine_tune: base_lr=(-0\.001|nan) must be a number >= 0'):
                learn.fine_tune(1, base_lr=base_lr)
            assert [p.requires_grad for p in learn.model.parameters()] == trainable, "a refused call froze the learner"
    assert _same_params(params, _params(learn.model))
    if base_lr == 0: assert len(learn.recorder.values) == 1 and np.isfinite(learn.recorder.values[-1][0])


def test_ctrl_c_while_loading_a_batch_loses_nothing():
    "Ctrl-C usually lands in the data loader, between two steps: the weights are those of the last step, its count too."
    calls = []
    def interrupt_once(x):
        calls.append(1)
        if len(calls) == 8 * 2 + 3: raise KeyboardInterrupt  # inside the third training batch
        return x
    last = _LastStep()
    learn = Learner(make_synth_dls(bs=8), make_mlp(), cbs=last)
    learn.dls.train_ds.dsets.pipelines[0].tfms.insert(0, FuncTransform(interrupt_once))
    with learn.no_bar(), pytest.raises(KeyboardInterrupt): learn.fit(2)
    assert last.steps == 2 and _same_params(last.params, _params(learn.model))
    adam_steps = {float(s['step']) for s in learn.opt.torch_opt.state_dict()['state'].values()}
    assert adam_steps == {2.}, "no half-done optimiser step"
    assert learn.exception is None and learn.recorder.values == [], "the interrupted epoch is not logged"
    _trains(learn)
    assert learn.recorder.values and last.steps == len(learn.dls.train)


def test_exception_in_a_user_callback_propagates_unchanged_and_the_learner_survives(synth_dls):
    class ShapeLogger(Callback):  # a student's callback with a bug in its validation branch
        def after_batch(self):
            if not self.learn.training: self.counts[self.learn.iter] += 1  # self.counts was never created
    last = _LastStep()
    learn = Learner(synth_dls, make_mlp(), cbs=last)
    with learn.no_bar(), pytest.raises(AttributeError, match="counts") as e: learn.fit(1, cbs=ShapeLogger())
    # the last frame is Callback.__getattr__ (reads through to the learner), the one before it the culprit
    frame = [f for f in traceback.extract_tb(e.value.__traceback__) if f.name != '__getattr__'][-1]
    assert frame.name == 'after_batch' and frame.filename == __file__, "the traceback ends in the culprit"
    assert _same_params(last.params, _params(learn.model)) and last.steps == len(synth_dls.train), \
        "the epoch's training is kept"
    assert learn.exception is None and not any(isinstance(c, ShapeLogger) for c in learn.cbs)
    preds, targs = learn.get_preds()
    assert preds.shape == (64, 2) and torch.isfinite(preds).all()
    _trains(learn)


class _Exploding(nn.Module):
    "A model whose outputs are astronomically large from the first batch: any step makes the loss diverge."
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        with torch.no_grad(): self.lin.weight.fill_(1e30)
    def forward(self, x): return self.lin(x) * 1e10


@pytest.mark.parametrize('case', ['inf_from_the_start', 'start_lr_too_high'])
def test_lr_find_on_a_model_that_diverges_at_once_restores_it(synth_dls, case):
    "What lr_find says here is in /tmp/w/pending (issue 6); that it puts everything back is checked here."
    model, kwargs = ((_Exploding(), {}) if case == 'inf_from_the_start' else
                     (make_mlp(), {'start_lr': 10., 'end_lr': 1e5}))
    learn = Learner(synth_dls, model)
    state, requires_grad = _state(learn.model), [p.requires_grad for p in learn.model.parameters()]
    with learn.no_bar(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: learn.lr_find(show_plot=False, **kwargs)
        except (RuntimeError, ValueError): pass
    now = learn.model.state_dict()
    assert all(torch.equal(now[k], state[k]) for k in state), "the weights are put back exactly"
    assert [p.requires_grad for p in learn.model.parameters()] == requires_grad
    assert learn.opt is None, "no optimiser before: none after"
    assert learn.exception is None and not any(type(c).__name__ == 'LRFinder' for c in learn.cbs)


@pytest.mark.parametrize('case', ['inf_from_the_start', 'start_lr_too_high'])
def test_lr_find_on_a_model_that_diverges_at_once_says_so(synth_dls, case):
    """No suggestion from a curve that blew up at once (the data and num_it are fine): it says so, with the lr, and what
    to try."""
    with torch.random.fork_rng():   # a fixed initialisation: with about 2% of them the MLP survives until batch 3
        torch.manual_seed(0)
        model, kwargs = ((_Exploding(), {}) if case == 'inf_from_the_start' else
                         (make_mlp(), {'start_lr': 10., 'end_lr': 1e5}))
    learn = Learner(synth_dls, model)
    with learn.no_bar(), warnings.catch_warnings(record=True) as caught, pytest.raises(RuntimeError) as e:
        warnings.simplefilter('always')
        learn.lr_find(show_plot=False, **kwargs)
    assert not [w for w in caught if 'Recorder' in str(w.message)], "the finder diverges on purpose: no NaN warning"
    msg = str(e.value)
    assert 'diverged at once' in msg and 'Lower start_lr (now ' in msg and 'num_it' not in msg, msg
    assert re.search(r'batch [12], lr=1\.\d\de(-07|\+01)', msg), msg  # start_lr, or one step above it


@pytest.fixture
def exported(colour_folder, tmp_path):
    "A vision learner and its export file, `out/model.pkl`."
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(16), bs=4, device='cpu')
    learn = vision_learner(dls, resnet18, pretrained=False)
    return learn, learn.export(tmp_path/'out'/'model.pkl')


def _export_survives(learn, path, before_bytes, before_params, colour_folder):
    assert path.read_bytes() == before_bytes, "the previous export is byte-identical"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "no temporary file left behind"
    assert _same_params(before_params, _params(learn.model))
    fn = colour_folder/'red'/'red_0.jpg'
    assert load_learner(path).predict(fn)[0] == learn.predict(fn)[0]


@pytest.mark.parametrize('how', ['parent_is_a_file', 'rename_refused'])
def test_export_to_a_read_only_location_keeps_the_previous_file(exported, colour_folder, monkeypatch, how):
    learn, path = exported
    before, params = path.read_bytes(), _params(learn.model)
    if how == 'parent_is_a_file':  # a real OS refusal, that works as root too
        (path.parent/'notes').write_text('a file, not a folder')
        target, culprit = path.parent/'notes'/'model.pkl', str(path.parent/'notes')
    else:  # root ignores chmod; a locked or immutable file refuses the final rename like this
        def refuse(src, dst): raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
        monkeypatch.setattr(os, 'replace', refuse)
        target, culprit = path, str(path)
    with pytest.raises(OSError) as e: learn.export(target)
    assert culprit in str(e.value)
    monkeypatch.undo()
    if how == 'parent_is_a_file': (path.parent/'notes').unlink()
    _export_survives(learn, path, before, params, colour_folder)


class _FullDisk:
    "A file that takes `room` bytes, then fails as a full disk does: the bytes that fit are written, then ENOSPC."
    def __init__(self, f, room): self.f, self.room = f, room
    def write(self, b):
        b = bytes(b)
        if len(b) > self.room:
            self.f.write(b[:self.room]); self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)
    def __getattr__(self, name): return getattr(self.f, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self.f.close()


def _fill_the_disk(monkeypatch, room=4096):
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, 'fdopen', lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k), room))


def test_export_to_a_full_disk_names_the_file_and_the_cause_and_keeps_the_previous_file(exported, colour_folder,
                                                                                        monkeypatch):
    """torch's zip writer raises 'RuntimeError: ... unexpected pos' with the ENOSPC in its context: the user gets the
    OSError, naming the file."""
    learn, path = exported
    before, params = path.read_bytes(), _params(learn.model)
    _fill_the_disk(monkeypatch)
    with pytest.raises(OSError) as e: learn.export(path)
    assert e.value.errno == errno.ENOSPC and isinstance(e.value.__cause__, RuntimeError), \
        "torch's error, not a fake one"
    assert str(path) in str(e.value) and 'No space left' in str(e.value) and 'unchanged' in str(e.value), str(e.value)
    monkeypatch.undo()
    _export_survives(learn, path, before, params, colour_folder)


def _not_ours(kind, tmp_path, exported):
    learn, path = exported
    f = tmp_path/f'{kind}.pkl'
    if kind == 'text': f.write_text('hello')
    elif kind == 'empty': f.write_bytes(b'')
    elif kind == 'zip':
        import zipfile
        with zipfile.ZipFile(f, 'w') as z: z.writestr('notes.txt', 'not a model')
    elif kind == 'learn_save': f = learn.save(tmp_path/'weights')
    elif kind == 'state_dict': torch.save(learn.model.state_dict(), f)
    elif kind == 'truncated_export': f.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    elif kind == 'folder': f = tmp_path/'out'
    return f


@pytest.mark.parametrize('kind', ['text', 'empty', 'zip', 'learn_save', 'state_dict', 'truncated_export', 'folder'])
def test_load_learner_on_a_file_that_is_not_ours(exported, tmp_path, kind):
    f = _not_ours(kind, tmp_path, exported)
    before = f.read_bytes() if f.is_file() else None
    with pytest.raises(ValueError) as e: load_learner(f)
    assert str(f) in str(e.value) and 'not a minifast export' in str(e.value)
    if before is not None: assert f.read_bytes() == before, "the file is left as it was"


_WHAT = {'html': 'HTML', 'json': 'JSON', 'csv': "text file (starting 'name,label", 'jpeg': 'JPEG image',
         'png': 'PNG image', 'npy': 'NumPy'}

def _not_a_pickle(kind, f):
    if kind == 'html': f.write_bytes(b'<!DOCTYPE html><html><body>404 Not Found</body></html>')
    elif kind == 'json': f.write_text('{"model": "resnet34", "vocab": ["cat", "dog"]}')
    elif kind == 'csv': f.write_text('name,label\ncat_1.jpg,cat\n')
    elif kind in ('jpeg', 'png'):
        buf = io.BytesIO(); Image.new('RGB', (8, 8)).save(buf, kind.upper()); f.write_bytes(buf.getvalue())
    elif kind == 'npy':
        with open(f, 'wb') as fh: np.save(fh, np.zeros(3))


@pytest.mark.parametrize('kind', ['html', 'json', 'csv', 'jpeg', 'png', 'npy'])
def test_load_learner_on_a_non_pickle_file_says_not_an_export(tmp_path, kind):
    "A file torch reports as a pickle with forbidden objects, though it is no pickle at all: no allow_pickle advice."
    f = tmp_path/'export.pkl'
    _not_a_pickle(kind, f)
    with pytest.raises(ValueError) as e: load_learner(f)
    msg = str(e.value)
    assert str(f) in msg and 'not a minifast export' in msg and 'allow_pickle' not in msg, msg
    assert _WHAT[kind] in msg, msg


def _payloads(marker):
    """Three ways a pickle can carry code: a legacy pickle, a fastai-style pickled Learner, a real export with one
    object added."""
    class Payload:
        def __reduce__(self): return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))
    class Learner:  # what a fastai export.pkl looks like: a pickled object whose loading runs code
        def __reduce__(self): return (os.system, (f'touch {marker}',))
    return Payload, Learner


@pytest.mark.parametrize('kind', ['legacy_pickle', 'fastai_style', 'export_plus_payload'])
def test_load_learner_refuses_a_pickle_with_a_payload_and_runs_nothing(exported, tmp_path, kind):
    learn, path = exported
    marker = tmp_path/'pwned'
    Payload, FakeLearner = _payloads(marker)
    f = tmp_path/'evil.pkl'
    if kind == 'legacy_pickle': f.write_bytes(pickle.dumps({'minifast_export': '{}', 'model': Payload()}, protocol=2))
    elif kind == 'fastai_style': torch.save(FakeLearner(), f)
    else:
        obj = torch.load(path, weights_only=True)
        obj['extra'] = Payload()
        torch.save(obj, f)
    with pytest.raises(ValueError) as e: load_learner(f)
    msg = str(e.value)
    assert str(f) in msg and 'refused' in msg and 'Nothing from it was run' in msg and 'allow_pickle=True' in msg
    assert not marker.exists(), "the payload must not run"
    assert load_learner(path).dls.vocab == learn.dls.vocab, "our own export still loads"


# ---- data side: one class, items of different sizes, PIL's pixel limit -------------------------------
def _flat_folder(tmp_path):
    "Images straight in `images/`, the class only in the file name (cat_1.jpg, dog_0.jpg, ...)."
    folder = tmp_path/'images'
    folder.mkdir()
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)] * 3):
        Image.new('RGB', (16, 16), colour).save(folder/f'{"cat" if i % 2 else "dog"}_{i}.jpg')
    return folder


def test_one_class_only_is_refused_naming_the_class_and_get_y(tmp_path):
    """parent_label on a flat folder labels everything 'images': refused when the loaders are built, not trained at a
    loss of 0."""
    folder = _flat_folder(tmp_path)
    for build in (lambda: _dls(folder), lambda: ImageDataLoaders.from_folder(folder.parent, valid_pct=0.25, seed=0,
                                                                             item_tfms=Resize(16), bs=4, device='cpu')):
        with pytest.raises(ValueError) as e: build()
        msg = str(e.value)
        assert "only one class, 'images'" in msg and 'get_y' in msg, msg
        assert 'parent_label' in msg and 'RegexLabeller' in msg, msg
    by_name = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, item_tfms=Resize(16),
                        get_y=using_attr(RegexLabeller(r'^(cat|dog)_'), 'name'), splitter=RandomSplitter(0.25, seed=0))
    # the advice works
    assert list(by_name.dataloaders(folder, bs=4, device='cpu', num_workers=0).vocab) == ['cat', 'dog']
    on_purpose = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=['images'])), get_items=get_image_files,
                           get_y=parent_label, item_tfms=Resize(16), splitter=RandomSplitter(0.25, seed=0))
    # vocab= opts out
    assert list(on_purpose.dataloaders(folder, bs=4, device='cpu', num_workers=0).vocab) == ['images']


@pytest.mark.parametrize('num_workers', [0, 2])
def test_mismatched_sizes_error_names_the_shapes_the_items_and_resize(colour_folder, num_workers):
    """No Resize: iterating, one_batch and fit say which shapes (and files) differ and to add item_tfms=Resize - from
    workers too."""
    dls = _image_block(item_tfms=None).dataloaders(colour_folder, bs=4, device='cpu', num_workers=num_workers, seed=0)
    learn = Learner(dls, _tiny_cnn())
    def fit():
        with learn.no_bar(): learn.fit(1)
    for get in (lambda: next(iter(dls.train)), lambda: next(iter(dls.valid)), dls.one_batch, fit):
        with pytest.raises(RuntimeError) as e: get()
        msg = str(e.value)
        assert 'element 0 (image) has ' in msg and 'item_tfms=Resize(' in msg, msg
        assert re.search(r"\(3, 3\d, 40\) in \d samples?, e\.g\. \S+/(red|blue)/\1_\d\.jpg", msg), msg


# the folder's other images, over half the limit
@pytest.mark.filterwarnings('ignore::PIL.Image.DecompressionBombWarning')
def test_image_over_pils_pixel_limit_says_so_and_a_drafted_jpeg_still_loads(colour_folder, tmp_path_factory,
                                                                            monkeypatch):
    """PIL's decompression-bomb limit (lowered here to use a small file): the file, its size and the knob; not 'not an
    image'."""
    jpg, png = colour_folder/'red'/'panorama.jpg', tmp_path_factory.mktemp('other')/'panorama.png'
    Image.new('RGB', (100, 100), (0, 0, 200)).save(jpg)
    Image.new('RGB', (100, 100), (0, 0, 200)).save(png)
    from minifast.vision.core import load_image
    unlimited = np.asarray(load_image(jpg, draft_size=16))
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)   # PIL now refuses more than 2000 pixels
    for fn in (jpg, png):
        with pytest.raises(ImageReadError) as e: load_image(fn)
        msg = str(e.value)
        assert str(fn) in msg and '100x100 = 10000 pixels' in msg and 'PIL.Image.MAX_IMAGE_PIXELS' in msg, msg
        assert 'not an image' not in msg, msg
    # 50x50
    with pytest.raises(ImageReadError, match='even decoded at the reduced scale'): load_image(jpg, draft_size=40)
    drafted = load_image(jpg, draft_size=16)   # decoded at 1/4 scale: 25x25 = 625 pixels, within the limit
    assert drafted.size == (25, 25) and np.array_equal(np.asarray(drafted), unlimited)
    dls = _dls(colour_folder)   # training with Resize(16) decodes drafted: the panorama is part of the data
    assert any(o.name == 'panorama.jpg' for o in dls.train.items + dls.valid.items)
    assert sum(len(b[0]) for dl in (dls.train, dls.valid) for b in dl) == len(dls.train) * 4 + dls.valid.n
