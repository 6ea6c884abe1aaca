"The Learner: training, schedules, freezing, lr_find restoring state, interruptions, saving and export."
import copy

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_mlp, make_synth_dls
from minifast.callback.core import Callback
from minifast.learner import Learner
from minifast.metrics import accuracy
from minifast.optimizer import SGD


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_model_overfits_a_tiny_batch():
    torch.manual_seed(0)
    xb, yb = torch.randn(8, 5), torch.arange(8) % 4
    dls = make_synth_dls()
    learn = Learner(dls, nn.Sequential(nn.Linear(5, 64), nn.ReLU(), nn.Linear(64, 4)), lr=1e-2)
    with learn.no_bar():
        learn.create_opt()
        for _ in range(200):
            loss = learn.loss_func(learn.model(xb), yb)
            loss.backward(); learn.opt.step(); learn.opt.zero_grad()
    with torch.no_grad(): assert float(learn.loss_func(learn.model(xb), yb)) < 0.05


def test_fit_learns_and_records(synth_dls):
    learn = Learner(synth_dls, make_mlp(), metrics=accuracy, lr=1e-2)
    with learn.no_bar(): learn.fit(3)
    rec = learn.recorder
    assert rec.metric_names == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'time']
    assert len(rec.values) == 3 and len(rec.losses) == 3 * len(synth_dls.train)
    assert rec.values[-1][2] > 0.9, rec.values
    assert rec.values[-1][1] < rec.values[0][1] * 1.5


def test_recorder_debiased_smoothing(synth_dls):
    learn = Learner(synth_dls, make_mlp())
    seen = []

    class Spy(Callback):
        order = 40  # before the Recorder
        def after_loss(self):
            if self.learn.training: seen.append(float(self.learn.loss))
    with learn.no_bar(): learn.fit(1, cbs=Spy())
    beta, avg, expected = 0.98, 0., []
    for i, l in enumerate(seen, 1):
        avg = beta * avg + (1 - beta) * l
        expected.append(avg / (1 - beta ** i))
    np.testing.assert_allclose(learn.recorder.losses, expected, rtol=1e-5)


def test_no_host_sync_per_batch(synth_dls, monkeypatch):
    "Losses and metrics stay on the device during an epoch: minifast reads them per epoch, not per batch."
    import sys
    learn = Learner(synth_dls, make_mlp(), metrics=accuracy)
    calls = {'n': 0}
    for name in ('item', '__float__', 'tolist', '__bool__'):
        orig = getattr(torch.Tensor, name)
        def counting(self, *a, _orig=orig, **k):
            caller = sys._getframe(1).f_code.co_filename
            # torch's optimizers read their CPU step counters, and the loss checks target ranges on CPU tensors
            # only: neither waits for a GPU. Everything else minifast reads is counted.
            if '/minifast/' in caller and not caller.endswith(('optimizer.py', 'losses.py')): calls['n'] += 1
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counting)
    with learn.no_bar(): learn.fit(2)
    n_batches = 2 * (len(synth_dls.train) + len(synth_dls.valid))
    assert calls['n'] <= 5 * 2, f"{calls['n']} host reads for {n_batches} batches"


def test_one_cycle_schedule_values(synth_dls):
    learn = Learner(synth_dls, make_mlp())
    with learn.no_bar(): learn.fit_one_cycle(2, lr_max=1e-2, div=25., div_final=1e5, pct_start=0.25)
    lrs, moms = np.array(learn.recorder.lrs), np.array(learn.recorder.moms)
    n = len(lrs)
    def cos(a, b, p): return b + (a - b) * (1 + np.cos(np.pi * p)) / 2
    pos = np.arange(n) / n   # the schedule is read before each batch
    expected = [cos(1e-2 / 25, 1e-2, p / 0.25) if p < 0.25 else cos(1e-2, 1e-2 / 1e5, (p - 0.25) / 0.75) for p in pos]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)
    exp_moms = [cos(0.95, 0.85, p / 0.25) if p < 0.25 else cos(0.85, 0.95, (p - 0.25) / 0.75) for p in pos]
    np.testing.assert_allclose(moms, exp_moms, rtol=1e-9)
    assert lrs[0] == pytest.approx(1e-2 / 25) and lrs[3] == pytest.approx(1e-2)


def test_slice_gives_discriminative_lrs(colour_folder):
    from minifast.vision.data import ImageDataLoaders
    from minifast.vision.augment import Resize
    from minifast.vision.learner import vision_learner, resnet18
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=4, device='cpu')
    learn = vision_learner(dls, resnet18, pretrained=False)
    with learn.no_bar(): learn.fit(1, lr=slice(1e-6, 1e-4))
    np.testing.assert_allclose([h['lr'] for h in learn.opt.hypers], [1e-6, 1e-5, 1e-4], rtol=1e-9)
    torch_lrs = sorted({g['lr'] for g in learn.opt.torch_opt.param_groups})
    np.testing.assert_allclose(torch_lrs, [1e-6, 1e-5, 1e-4], rtol=1e-9)
    with learn.no_bar(): learn.fit(1, lr=slice(3e-3))
    np.testing.assert_allclose([h['lr'] for h in learn.opt.hypers], [3e-4, 3e-4, 3e-3], rtol=1e-9)


def test_freeze_keeps_batchnorm_trainable(colour_folder):
    from minifast.vision.data import ImageDataLoaders
    from minifast.vision.augment import Resize
    from minifast.vision.learner import vision_learner, resnet18
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=4, device='cpu')
    learn = vision_learner(dls, resnet18, pretrained=False)
    learn.freeze()
    body, head = learn.model
    for m in body.modules():
        for p in m.parameters(recurse=False):
            assert p.requires_grad == isinstance(m, nn.BatchNorm2d), type(m)
    assert all(p.requires_grad for p in head.parameters())
    before = _state(body)
    with learn.no_bar(): learn.fit(1, lr=1e-2)
    after = body.state_dict()
    convs = [k for k in before if 'weight' in k and before[k].ndim == 4]
    assert all(torch.equal(before[k], after[k]) for k in convs), "frozen convolutions must not change"
    bns = [k for k in before if k.endswith('running_mean')]
    assert any(not torch.equal(before[k], after[k]) for k in bns)


@pytest.mark.parametrize('fail_at', [None, 7])
def test_lr_find_restores_exactly(synth_dls, fail_at):
    learn = Learner(synth_dls, make_mlp(), lr=1e-3)
    with learn.no_bar(): learn.fit(1)
    model_before, opt_before = _state(learn.model), copy.deepcopy(learn.opt.state_dict())

    class Boom(Callback):
        order = 80
        def after_batch(self):
            if self.learn.training and self.learn.train_iter == fail_at: raise RuntimeError('boom mid-search')
    with learn.no_bar():
        if fail_at is None:
            res = learn.lr_find(num_it=30, show_plot=False)
            assert 1e-7 < res.valley < 10
        else:
            with learn.added_cbs(Boom()), pytest.raises(RuntimeError, match='boom'):
                learn.lr_find(num_it=30, show_plot=False)
    assert _same(model_before, learn.model.state_dict())
    opt_after = learn.opt.state_dict()
    torch.testing.assert_close(opt_after, opt_before, rtol=0, atol=0)
    with learn.no_bar(): learn.fit(1)  # still trains


def test_lr_find_writes_no_files(synth_dls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    learn = Learner(synth_dls, make_mlp(), path=tmp_path)
    with learn.no_bar(): learn.lr_find(num_it=20, show_plot=False)
    assert list(tmp_path.iterdir()) == []
    assert learn.opt is None, "no optimiser before lr_find: none after"


def test_ctrl_c_mid_epoch_leaves_a_usable_learner(synth_dls):
    learn = Learner(synth_dls, make_mlp())

    class CtrlC(Callback):
        def after_backward(self):
            if self.learn.train_iter == 3: raise KeyboardInterrupt
    with learn.no_bar(), pytest.raises(KeyboardInterrupt):
        learn.fit(2, cbs=CtrlC())
    assert learn.exception is None and not any(isinstance(c, CtrlC) for c in learn.cbs)
    with learn.no_bar(): learn.fit(1)
    preds, targs = learn.get_preds()
    assert preds.shape == (64, 2) and torch.isfinite(preds).all()


def test_exception_in_user_callback_runs_cleanup(synth_dls):
    events = []

    class Tracker(Callback):
        def after_epoch(self): events.append(('after_epoch', self.learn.exception is not None))
        def after_fit(self): events.append(('after_fit', self.learn.exception is not None))

    class Bad(Callback):
        def after_pred(self):
            if self.learn.training: raise ValueError('user bug')
    learn = Learner(synth_dls, make_mlp(), cbs=Tracker())
    with learn.no_bar(), pytest.raises(ValueError, match='user bug'): learn.fit(1, cbs=Bad())
    assert events == [('after_epoch', True), ('after_fit', True)]
    assert learn.recorder.values == [], "a failed epoch is not logged"


def test_get_preds_on_a_list_of_batches(synth_dls):
    learn = Learner(synth_dls, make_mlp())
    x, y = synth_dls.valid.one_batch()
    preds, targs = learn.get_preds(dl=[(x, y)])
    assert torch.equal(targs, y) and preds.shape == (len(y), 2)
    torch.testing.assert_close(preds.sum(1), torch.ones(len(y)))  # softmax applied


def test_save_is_atomic_and_load_restores(synth_dls, tmp_path, monkeypatch):
    learn = Learner(synth_dls, make_mlp(), path=tmp_path)
    with learn.no_bar(): learn.fit(1)
    path = learn.save('stage1')
    saved = _state(learn.model)
    with learn.no_bar(): learn.fit(1)
    good_bytes = path.read_bytes()

    def failing_save(obj, f, *a, **k):
        f.write(b'partial'); raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='previous file'):
        learn.save('stage1')
    monkeypatch.undo()
    assert path.read_bytes() == good_bytes
    assert [p.name for p in path.parent.iterdir()] == ['stage1.pth'], "no temporary file left behind"
    learn.load('stage1')
    assert _same(saved, learn.model.state_dict())


def test_negative_learning_rate_is_refused(synth_dls):
    learn = Learner(synth_dls, make_mlp())
    with pytest.raises(ValueError, match='lr'):
        with learn.no_bar(): learn.fit(1, lr=-1e-3)
    with learn.no_bar(): learn.fit(1, lr=0.)   # zero is allowed and changes nothing but BatchNorm stats


def test_sgd_opt_func(synth_dls):
    learn = Learner(synth_dls, make_mlp(), opt_func=SGD, lr=0.1)
    with learn.no_bar(): learn.fit(2)
    assert learn.recorder.values[-1][1] < 0.5


def test_summary_shows_shapes_params_and_frozen_state(colour_folder):
    from minifast.vision.data import ImageDataLoaders
    from minifast.vision.augment import Resize
    from minifast.vision.learner import vision_learner, resnet18
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=4, device='cpu')
    learn = vision_learner(dls, resnet18, pretrained=False)
    learn.freeze()
    text = learn.summary()
    total = sum(p.numel() for p in learn.model.parameters())
    trainable = sum(p.numel() for p in learn.model.parameters() if p.requires_grad)
    assert f"Total params: {total:,}" in text and f"Trainable params: {trainable:,}" in text
    assert trainable < total and 'frozen up to layer group 2' in text
    linears = [l for l in text.splitlines() if l.startswith('Linear')]
    assert '(2, 2)' in linears[-1] and 'True' in linears[-1], "the head's last layer: 2 classes, trainable"
    assert any(l.startswith('Conv2d') and '(2, 64, 16, 16)' in l and 'False' in l for l in text.splitlines())


def test_test_dl_runs_the_validation_pipeline(colour_folder):
    from minifast.vision.data import ImageDataLoaders
    from minifast.vision.augment import Resize
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(24), bs=4, device='cpu')
    files = sorted(colour_folder.glob('red/*.jpg'))[:3]
    tdl = dls.test_dl(files)
    (xb,) = tdl.one_batch()
    assert xb.shape == (3, 3, 24, 24)
    assert torch.equal(xb, tdl.one_batch()[0]), "no random augmentation on test items"
    xb2, yb2 = dls.test_dl(files, with_labels=True).one_batch()
    assert [dls.vocab[int(i)] for i in yb2] == ['red'] * 3
