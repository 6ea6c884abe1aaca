"The Learner: training, schedules, freezing, lr_find restoring state, interruptions, saving and export."
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
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
    "Through the whole training loop: 8 points, 4 classes, one batch; the loss must fall to nearly 0."
    from minifast.data.core import DataLoaders, Datasets
    from minifast.data.transforms import Categorize
    g = torch.Generator().manual_seed(0)
    xb, yb = torch.randn(8, 5, generator=g), torch.arange(8) % 4
    dsets = Datasets(list(range(8)), [[lambda i: xb[i]], [lambda i: 'abcd'[int(yb[i])], Categorize()]],
                     splits=(range(8), range(8)), kinds=('other', 'category'))
    dls = DataLoaders.from_dsets(dsets, bs=8, device='cpu', seed=0, num_workers=0)
    torch.manual_seed(0)
    learn = Learner(dls, nn.Sequential(nn.Linear(5, 64), nn.ReLU(), nn.Linear(64, 4)), lr=1e-2, metrics=accuracy)
    with learn.no_bar(): learn.fit(150)
    first, last = learn.recorder.values[0], learn.recorder.values[-1]
    assert first[1] > 1.0 and last[1] < 0.05, (first, last)  # valid = train here: the loss of the batch after training
    assert last[2] == 1.0
    with torch.no_grad(): assert float(F.cross_entropy(learn.model(xb), yb)) == pytest.approx(last[1], rel=1e-5)


def test_fit_learns_and_records(synth_dls):
    learn = Learner(synth_dls, make_mlp(), metrics=accuracy, lr=1e-2)
    with learn.no_bar(): learn.fit(3)
    rec = learn.recorder
    assert rec.metric_names == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'time']
    assert len(rec.values) == 3 and len(rec.losses) == 3 * len(synth_dls.train)
    assert rec.values[-1][2] > 0.9, rec.values
    assert rec.values[-1][1] < rec.values[0][1] * 1.5


@pytest.mark.parametrize('method,args', [('fit', (1, 1e-2)), ('fit_one_cycle', (1, 1e-2)), ('fit_flat_cos', (1, 1e-2)),
                                         ('fine_tune', (1,))])
def test_training_methods_return_none_like_fastai(synth_dls, method, args):
    "A notebook cell ending with `learn.fit(...)` shows the results table, not `Learner(model=...)`."
    learn = Learner(synth_dls, make_mlp(), metrics=accuracy)
    with learn.no_bar(): assert getattr(learn, method)(*args) is None
    assert len(learn.recorder.values) == 1


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
    learn.fit(2)  # with the progress callback: under pytest its bar is hidden, and a hidden bar reads nothing
    n_batches = 2 * (len(synth_dls.train) + len(synth_dls.valid))
    print(f"{calls['n']} host reads for {n_batches} batches")
    # train loss, valid loss, metric per epoch
    assert calls['n'] <= 3 * 2, f"{calls['n']} host reads for {n_batches} batches"


def test_no_host_sync_per_batch_while_the_guard_skips_steps(synth_dls, monkeypatch):
    """StepGuard decides on the device: with NaN losses and inf gradients in some batches, no code of minifast (the
    optimizer wrapper and the guard included) reads a tensor per batch; the Recorder reads the losses and the number of
    skipped steps together, once per epoch, and the metric once."""
    import sys
    class Spoil(Callback):
        order = 15
        def after_loss(self):
            if self.learn.training and self.learn.train_iter % 3 == 1:
                self.learn.loss_grad = self.learn.loss_grad * float('nan')
                self.learn.loss = self.learn.loss_grad.detach()
        def after_backward(self):
            if self.learn.train_iter % 3 == 2: self.learn.model[0].weight.grad[0, 0] = float('inf')
    learn = Learner(synth_dls, make_mlp(), metrics=accuracy, cbs=Spoil())
    calls = []
    for name in ('item', '__float__', '__int__', '__index__', '__bool__', 'tolist', 'numpy', 'cpu'):
        orig = getattr(torch.Tensor, name)
        def counting(self, *a, _orig=orig, _name=name, **k):
            caller = sys._getframe(1).f_code.co_filename
            # the loaders' collate, the synthetic data's getters and the loss's target check read CPU tensors only
            # (before they go to the device, and `if t.device.type == 'cpu'`): not a sync. Everything else counts,
            # the optimizer and the guard included.
            cpu_only = '/minifast/data/' in caller or caller.endswith(('losses.py', 'test_utils.py'))
            if '/minifast/' in caller and not cpu_only:
                calls.append((_name, caller.rsplit('/minifast/', 1)[1], sys._getframe(1).f_lineno))
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counting)
    with pytest.warns(RuntimeWarning, match='were skipped'): learn.fit(2)
    monkeypatch.undo()
    n = len(synth_dls.train)
    assert learn.recorder.skipped_steps == [len([i for i in range(e * n, (e + 1) * n) if i % 3]) for e in range(2)]
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    assert len(calls) <= 2 * 2, calls  # per epoch: losses and skipped steps in one read, the metric in another


def test_lr_find_sees_the_divergence_that_the_guard_stands_aside_for(synth_dls):
    "lr_find looks for the learning rate at which the loss blows up: StepGuard stands aside, then guards the next fit."
    learn = Learner(synth_dls, make_mlp())
    seen = []
    class Watch(Callback):
        def after_batch(self):
            if self.learn.training: seen.append(self.learn.step_guard.active)
    learn.add_cb(Watch())
    with learn.no_bar(): learn.lr_find(start_lr=1e-4, end_lr=1e8, num_it=80, show_plot=False)
    losses = learn.recorder.losses
    assert seen and not any(seen) and len(losses) < 80
    last = float(losses[-1])
    assert not np.isfinite(last) or last > 4 * float(min(losses))  # stopped at the divergence
    seen.clear()
    with learn.no_bar(): learn.fit(1)
    assert seen and all(seen)


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


def test_lr_find_runs_no_validation_batch(synth_dls):
    "The search trains only: validation would cost a pass over the valid set at every epoch boundary of the search."
    learn = Learner(synth_dls, make_mlp())
    n_train = len(synth_dls.train)   # 6 batches: 30 iterations cross 4 epoch boundaries

    class CountBatches(Callback):
        def before_fit(self): self.seen = {True: 0, False: 0}
        def before_batch(self): self.seen[self.learn.training] += 1
    counter = CountBatches()
    with learn.no_bar(), learn.added_cbs(counter): learn.lr_find(num_it=30, stop_div=False, show_plot=False)
    assert n_train < 30 and counter.seen == {True: 30, False: 0}


def test_run_valid_and_run_train_gate_only_the_batch_events(synth_dls):
    "A callback with run_valid=False still hears before/after_validate (as LRFinder needs), but no validation batch."
    class Log(Callback):
        run_valid = False
        def __init__(self): self.events = []
        def before_validate(self): self.events.append('before_validate')
        def after_validate(self): self.events.append('after_validate')
        def before_batch(self): self.events.append(('batch', self.learn.training))
    class LogTrainOff(Log): run_valid, run_train = True, False
    log, log_off = Log(), LogTrainOff()
    learn = Learner(synth_dls, make_mlp())
    with learn.no_bar(): learn.fit(1, cbs=[log, log_off])
    n_train, n_valid = len(synth_dls.train), len(synth_dls.valid)
    assert log.events == [('batch', True)] * n_train + ['before_validate', 'after_validate']
    assert log_off.events == ['before_validate'] + [('batch', False)] * n_valid + ['after_validate']


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


# --- events, cancelling, interruptions -------------------------------------------------------------------------

class EventLog(Callback):
    "Every event the learner sends, with whether it was a training batch."
    def __init__(self): self.events = []
    def __call__(self, event): self.events.append(event)


def _points_dls(bs):
    return make_synth_dls(n=64, bs=bs, n_valid=16)  # 48 training items, 16 validation items


def _raiser(event, exc, when=lambda learn: True):
    "A callback that raises `exc` at `event` when `when(learn)`."
    def method(self):
        if when(self.learn): raise exc()
    return type('Raiser', (Callback,), {event: method})()


TRAIN_BATCH = ['before_batch', 'after_pred', 'after_loss', 'before_backward', 'after_backward', 'before_step',
               'after_step', 'after_batch']
VALID_BATCH = ['before_batch', 'after_pred', 'after_loss', 'after_batch']


@pytest.mark.parametrize('exc_name, event, expected_epoch', [
    # a batch cancelled after the prediction: no loss, no backward, no step; after_batch still runs
    ('CancelBatchException', 'after_pred',
     ['before_train', 'before_batch', 'after_pred', 'after_cancel_batch', 'after_batch', *TRAIN_BATCH, 'after_train',
      'before_validate', *VALID_BATCH, 'after_validate']),
    ('CancelBackwardException', 'before_backward',
     ['before_train', 'before_batch', 'after_pred', 'after_loss', 'before_backward', 'after_cancel_backward',
      'after_backward', 'before_step', 'after_step', 'after_batch', *TRAIN_BATCH, 'after_train',
      'before_validate', *VALID_BATCH, 'after_validate']),
    ('CancelStepException', 'before_step',
     ['before_train', *TRAIN_BATCH[:5], 'before_step', 'after_cancel_step', 'after_step', 'after_batch', *TRAIN_BATCH,
      'after_train', 'before_validate', *VALID_BATCH, 'after_validate']),
    ('CancelTrainException', 'after_batch',
     ['before_train', *TRAIN_BATCH, 'after_cancel_train', 'after_train', 'before_validate', *VALID_BATCH,
      'after_validate']),
    ('CancelValidException', 'before_validate',
     ['before_train', *TRAIN_BATCH, *TRAIN_BATCH, 'after_train', 'before_validate', 'after_cancel_validate',
      'after_validate']),
])
def test_cancel_exceptions_skip_exactly_their_part(exc_name, event, expected_epoch):
    import minifast.callback.core as core
    exc = getattr(core, exc_name)
    first_batch = lambda learn: learn.training and learn.iter == 0 or event == 'before_validate'
    log = EventLog()
    learn = Learner(_points_dls(bs=24), make_mlp(), cbs=log)   # 2 training batches, 1 validation batch
    with learn.no_bar(): learn.fit(1, cbs=_raiser(event, exc, when=first_batch))
    assert log.events == ['before_fit', 'before_epoch', *expected_epoch, 'after_epoch', 'after_fit']


def test_cancel_epoch_and_fit():
    import minifast.callback.core as core
    log = EventLog()
    learn = Learner(_points_dls(bs=48), make_mlp(), cbs=log)
    skip_first = _raiser('before_epoch', core.CancelEpochException, when=lambda learn: learn.epoch == 0)
    with learn.no_bar(): learn.fit(2, cbs=skip_first)
    assert log.events[:4] == ['before_fit', 'before_epoch', 'after_cancel_epoch', 'after_epoch']
    assert log.events.count('before_train') == 1 and len(learn.recorder.values) == 1   # epoch 1 only
    log.events.clear()
    stop = _raiser('after_step', core.CancelFitException, when=lambda learn: learn.train_iter == 0)
    with learn.no_bar(): learn.fit(5, cbs=stop)
    assert log.events[-2:] == ['after_cancel_fit', 'after_fit'] and log.events.count('before_batch') == 1
    assert len(learn.recorder.values) == 1 and np.isnan(learn.recorder.values[0][1])  # the partial epoch: no validation


def _usable(learn, n_cbs):
    "The learner after an interrupted call: no stale state, trains, predicts."
    assert learn.exception is None and len(learn.cbs) == n_cbs and learn.progress.show_table
    assert torch.is_grad_enabled(), "the validation's no_grad was left"
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    with learn.no_bar(): learn.fit(1, lr=1e-2)
    assert all(np.isfinite(v) for v in learn.recorder.values[-1])
    preds, targs = learn.get_preds()
    assert preds.shape == (len(targs), 2) and torch.isfinite(preds).all()


@pytest.mark.parametrize('exc', [KeyboardInterrupt, torch.OutOfMemoryError, RuntimeError])
@pytest.mark.parametrize('event, training', [('after_pred', True), ('after_backward', True), ('before_step', True),
                                             ('after_batch', False), ('after_epoch', None)])
def test_an_interrupted_fit_leaves_a_usable_learner(exc, event, training):
    """Ctrl-C, an out-of-memory error or a bug, at any point of a one-cycle fit: the error reaches the caller, and the
    learner is as good as before it."""
    learn = Learner(make_synth_dls(), make_mlp(), metrics=accuracy)
    n_cbs = len(learn.cbs)
    when = (lambda l: l.epoch == 1) if training is None else (lambda l: l.training == training and l.iter == 1)
    with learn.no_bar(), pytest.raises(exc): learn.fit_one_cycle(3, 1e-2, cbs=_raiser(event, exc, when))
    assert learn.epoch == 1 if training is None else learn.epoch == 0
    _usable(learn, n_cbs)


@pytest.mark.parametrize('exc', [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_get_preds_leaves_a_usable_learner(exc):
    learn = Learner(make_synth_dls(), make_mlp())
    n_cbs = len(learn.cbs)
    with learn.added_cbs(_raiser('after_pred', exc, when=lambda l: l.iter == 1)), pytest.raises(exc): learn.get_preds()
    _usable(learn, n_cbs)


def test_lr_find_restores_after_ctrl_c(synth_dls):
    learn = Learner(synth_dls, make_mlp())
    with learn.no_bar(): learn.fit(1)
    model_before, opt_before = _state(learn.model), copy.deepcopy(learn.opt.state_dict())
    ctrl_c = _raiser('after_backward', KeyboardInterrupt, when=lambda l: l.train_iter == 5)
    with learn.no_bar(), learn.added_cbs(ctrl_c), pytest.raises(KeyboardInterrupt):
        learn.lr_find(num_it=30, show_plot=False)
    assert _same(model_before, learn.model.state_dict())
    torch.testing.assert_close(learn.opt.state_dict(), opt_before, rtol=0, atol=0)
    _usable(learn, len(learn.cbs))


# --- schedules of fine_tune and fit_flat_cos, default losses ------------------------------------------------------

def _cos(a, b, p): return b + (a - b) * (1 + np.cos(np.pi * p)) / 2


def _one_cycle(lr_max, div, pct, n, div_final=1e5):
    "Hand-computed 1cycle learning rates of `n` batches (read before each batch at pos = i / n)."
    lr_max = np.asarray(lr_max, dtype=float)
    def at(p):
        if p < pct: return _cos(lr_max / div, lr_max, p / pct)
        return _cos(lr_max, lr_max / div_final, (p - pct) / (1 - pct))
    return np.array([at(p) for p in np.arange(n) / n])


class GroupLrs(Callback):
    "Each layer group's learning rate and the frozen state before each training batch; weights at each fit's start."
    order = 70  # after the ParamScheduler (60) has set this batch's values
    def __init__(self): self.lrs, self.frozen, self.starts = [], [], []
    def before_fit(self): self.starts.append({k: v.clone() for k, v in self.learn.model.state_dict().items()})
    def before_batch(self):
        if not self.learn.training: return
        self.lrs.append([h['lr'] for h in self.learn.opt.hypers]); self.frozen.append(self.learn.opt.frozen_idx)


def test_fine_tune_schedules_and_freezing(colour_folder):
    from minifast.vision.data import ImageDataLoaders
    from minifast.vision.augment import Resize
    from minifast.vision.learner import vision_learner, resnet18
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=4, device='cpu')
    learn = vision_learner(dls, resnet18, pretrained=False)
    spy = GroupLrs()
    n = len(dls.train)
    with learn.no_bar(): learn.fine_tune(2, base_lr=1e-3, freeze_epochs=1, cbs=spy)
    lrs, frozen = np.array(spy.lrs), spy.frozen
    assert frozen == [2] * n + [0] * 2 * n, "first the head only, then everything"
    # frozen epoch: slice(base_lr) -> [base_lr/10, base_lr/10, base_lr], div 25, pct_start 0.99
    np.testing.assert_allclose(lrs[:n], _one_cycle([1e-4, 1e-4, 1e-3], 25., 0.99, n), rtol=1e-9)
    # then base_lr/2 for the head, divided by lr_mult=100 for the first group, geometric between; div 5, pct_start 0.3
    np.testing.assert_allclose(lrs[n:], _one_cycle([5e-6, 5e-5, 5e-4], 5., 0.3, 2 * n), rtol=1e-9)
    # the frozen epoch did not move the body's convolutions, the second fit did
    first, second, end = spy.starts[0], spy.starts[1], learn.model.state_dict()
    convs = [k for k in first if k.startswith('0.') and k.endswith('weight') and first[k].ndim == 4]
    assert all(torch.equal(first[k], second[k]) for k in convs)
    assert not any(torch.equal(second[k], end[k]) for k in convs)
    assert not torch.equal(first['1.8.weight'], second['1.8.weight']), "the head trained while the body was frozen"


def test_fit_flat_cos_schedule(synth_dls):
    learn = Learner(synth_dls, make_mlp())
    spy = GroupLrs()
    with learn.no_bar(): learn.fit_flat_cos(2, lr=1e-2, pct_start=0.5, cbs=spy)
    n = 2 * len(synth_dls.train)
    pos = np.arange(n) / n
    expected = [1e-2 if p < 0.5 else _cos(1e-2, 1e-2 / 1e5, (p - 0.5) / 0.5) for p in pos]
    np.testing.assert_allclose(np.array(spy.lrs)[:, 0], expected, rtol=1e-9)
    assert learn.recorder.moms[0] == learn.recorder.moms[-1], "no momentum schedule"


def test_default_loss_follows_the_target_kind():
    from types import SimpleNamespace
    from minifast.learner import default_loss_func
    from minifast.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat, MSELossFlat
    from minifast.data.core import DataLoaders
    class FakeDls: loss_func = DataLoaders.loss_func   # the rule under test, on loaders that only have kinds
    def fake(*kinds):
        dls = FakeDls(); dls.train, dls.n_inp = SimpleNamespace(kinds=kinds), 1
        return dls
    assert type(default_loss_func(fake('image', 'category'))) is CrossEntropyLossFlat
    assert type(default_loss_func(fake('image', 'multicategory'))) is BCEWithLogitsLossFlat
    assert type(default_loss_func(fake('image', 'regression'))) is MSELossFlat
    with pytest.raises(ValueError, match="'other'.*loss_func="): default_loss_func(fake('image', 'other'))
    with pytest.raises(ValueError, match='loss_func='): default_loss_func(fake('image'))


def test_save_load_with_optimiser_state(synth_dls, tmp_path):
    learn = Learner(synth_dls, make_mlp(), path=tmp_path)
    with learn.no_bar(): learn.fit(2, lr=1e-2)
    learn.save('with_opt'); learn.save('no_opt', with_opt=False)
    assert 'opt' not in torch.load(tmp_path/'models'/'no_opt.pth', weights_only=True)
    fresh = Learner(synth_dls, make_mlp(), path=tmp_path)
    fresh.load('with_opt')
    assert _same(learn.model.state_dict(), fresh.model.state_dict())
    torch.testing.assert_close(fresh.opt.state_dict(), learn.opt.state_dict(), rtol=0, atol=0)
    # the next step is the same for both: Adam's moments came back too
    x, y = synth_dls.valid.one_batch()
    for l in (learn, fresh):
        l.model.train(); l.loss_func(l.model(x), y).backward(); l.opt.step(); l.opt.zero_grad()
    assert _same(learn.model.state_dict(), fresh.model.state_dict())
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"): fresh.load('missing')
    (tmp_path/'models'/'junk.pth').write_bytes(b'not a torch file')
    with pytest.raises(ValueError, match=r'junk\.pth.*Nothing was loaded'): fresh.load('junk')
    # weights of another model: refused before anything changes (torch alone would copy what fits, then raise)
    other = Learner(synth_dls, nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.BatchNorm1d(16), nn.Linear(16, 3)),
                    path=tmp_path)
    other.save('three_classes')
    before = _state(fresh.model)
    with pytest.raises(ValueError, match=r"three_classes\.pth.*3\.weight: \(3, 16\) in the file, \(2, 16\)"):
        fresh.load('three_classes')
    assert _same(before, fresh.model.state_dict())


def test_get_preds_outputs_in_order(synth_dls):
    learn = Learner(synth_dls, make_mlp())
    with learn.no_bar(): learn.fit(1)
    inputs, preds, targs, decoded, losses = learn.get_preds(with_input=True, with_decoded=True, with_loss=True)
    xs, ys = zip(*list(synth_dls.valid))
    assert torch.equal(inputs, torch.cat(xs)) and torch.equal(targs, torch.cat(ys))
    learn.model.eval()
    with torch.no_grad(): logits = learn.model(inputs)
    torch.testing.assert_close(preds, torch.softmax(logits, 1))   # the loss's activation, over several batches
    assert torch.equal(decoded, preds.argmax(1))
    torch.testing.assert_close(losses, F.cross_entropy(logits, targs, reduction='none'))
    raw, _ = learn.get_preds(act=lambda x: x)
    torch.testing.assert_close(raw, logits)


def test_validate_matches_get_preds_with_the_loss_and_metrics_by_hand(synth_dls):
    from minifast.metrics import F1Score
    learn = Learner(synth_dls, make_mlp(), metrics=[accuracy, F1Score()], lr=1e-2)
    with learn.no_bar(): learn.fit(2)
    history, smoothed, lrs = [list(v) for v in learn.recorder.values], learn.recorder.losses, list(learn.recorder.lrs)
    weights = _state(learn.model)
    with learn.no_bar(): res = learn.validate()
    assert isinstance(res, list) and len(res) == 3 and all(isinstance(v, float) for v in res)
    np.testing.assert_allclose(res, learn.recorder.values[-1][1:4], rtol=1e-5)   # the last row of the table
    logits, targs = learn.get_preds(act=lambda x: x)
    pred = logits.argmax(1)
    tp, fp, fn = [int(((pred == a) & (targs == b)).sum()) for a, b in ((1, 1), (1, 0), (0, 1))]
    expected = [float(F.cross_entropy(logits, targs)), float((pred == targs).float().mean()),
                2 * tp / (2 * tp + fp + fn)]
    np.testing.assert_allclose(res, expected, rtol=1e-5)
    assert learn.recorder.values == history and learn.recorder.losses == smoothed and learn.recorder.lrs == lrs
    assert _same(weights, _state(learn.model)) and not learn.model.training


def test_validate_on_a_given_loader_weights_the_loss_by_batch_size(synth_dls):
    learn = Learner(synth_dls, make_mlp(), metrics=accuracy)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(13, 2, generator=g), torch.randint(0, 2, (13,), generator=g)
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]   # unequal batches: the mean is over items, not batches
    with learn.no_bar(): loss, acc = learn.validate(dl=batches)
    learn.model.eval()
    with torch.no_grad(): logits = learn.model(x)
    assert loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert acc == pytest.approx(float((logits.argmax(1) == y).float().mean()), rel=1e-6)
    assert learn.recorder.values == [], "no fit: still no history"


def test_validate_ds_idx_and_cbs(synth_dls):
    class Seen(Callback):
        def before_validate(self): self.seen_dl, self.n = self.learn.dl, 0
        def after_batch(self): self.n += 1
    learn = Learner(synth_dls, make_mlp())
    seen = Seen()
    with learn.no_bar(): res = learn.validate(ds_idx=0, cbs=seen)
    assert seen.seen_dl is synth_dls.train and seen.n == len(synth_dls.train) and len(res) == 1
    assert seen not in learn.cbs, "callbacks given to validate are removed after it"


def test_validate_without_targets_says_to_use_get_preds(synth_dls):
    learn = Learner(synth_dls, make_mlp())
    with pytest.raises(ValueError, match='get_preds'):
        with learn.no_bar(): learn.validate(dl=[(torch.randn(4, 2),)])
