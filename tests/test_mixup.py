"""MixUp and CutMix: the loss of a mixed batch is the per-item mix of both targets' losses (cross-entropy, label
smoothing, multi-label), validation and get_preds are untouched, the loss function comes back even after an error,
and the callbacks compose with bf16 autocast, StepGuard and gradient accumulation without reading the device."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minifast.callback.core import Callback
from minifast.callback.misc import GradientAccumulation
from minifast.callback.mixup import CutMix, MixUp
from minifast.core import set_seed
from minifast.data.core import DataLoaders, Datasets
from minifast.data.transforms import Categorize
from minifast.learner import Learner
from minifast.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat, LabelSmoothingCrossEntropy


def image_dls(n=48, n_valid=16, bs=8, multi_label=False):
    g = torch.Generator().manual_seed(0)
    X = torch.rand(n, 3, 8, 8, generator=g)
    Y = (torch.rand(n, 4, generator=g) > 0.5).float()
    target = [lambda i: Y[i]] if multi_label else [lambda i: 'abc'[i % 3], Categorize()]
    dsets = Datasets(list(range(n)), [[lambda i: X[i]], target], splits=(range(n - n_valid), range(n - n_valid, n)),
                     kinds=('image', 'other' if multi_label else 'category'))
    return DataLoaders.from_dsets(dsets, bs=bs, device='cpu', seed=0, num_workers=0)


def cnn(n_out=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, n_out))


def make_learner(cbs=None, multi_label=False, **kw):
    learn = Learner(image_dls(multi_label=multi_label), cnn(4 if multi_label else 3), cbs=cbs, **kw)
    learn.remove_cb(learn.progress)
    return learn


class Probe(Callback):
    "Keep, for the first training batch, the batch before mixing and what the learner computed after the loss."
    order, run_valid = -5, False
    def before_fit(self): self.seen = None
    def before_batch(self):
        if self.seen is None: self.raw = (self.learn.xb[0].clone(), self.learn.yb[0].clone())
    def after_loss(self):
        if self.seen is None:
            mix = next(c for c in self.learn.cbs if isinstance(c, (MixUp, CutMix)))
            self.seen = dict(x=self.learn.xb[0].detach().clone(), y=self.learn.yb[0].clone(),
                             pred=self.learn.pred.detach().clone(), loss=self.learn.loss.clone(),
                             lam=mix.lam.clone(), shuffle=mix.shuffle.clone(), yb1=mix.yb1[0].clone())


def first_batch(learn, seed=0):
    probe = Probe()
    set_seed(seed)
    learn.fit(1, 1e-3, cbs=probe)
    return probe.raw, probe.seen


@pytest.mark.parametrize('loss_func, per_item', [
    (CrossEntropyLossFlat(), lambda p, t: F.cross_entropy(p, t, reduction='none')),
    (LabelSmoothingCrossEntropy(eps=0.1), lambda p, t: 0.9 * F.cross_entropy(p, t, reduction='none')
     - 0.1 / p.shape[1] * F.log_softmax(p, 1).sum(1)),
])
@pytest.mark.parametrize('cb_class', [MixUp, CutMix])
def test_the_loss_of_a_mixed_batch_mixes_both_targets_losses_per_item(cb_class, loss_func, per_item):
    learn = make_learner(cbs=cb_class(), loss_func=loss_func)
    (x, y), s = first_batch(learn)
    lam, shuffle, pred = s['lam'], s['shuffle'], s['pred']
    assert lam.shape == (x.shape[0],) and torch.equal(s['yb1'], y[shuffle]) and torch.equal(s['y'], y)
    expected = (lam * per_item(pred, y) + (1 - lam) * per_item(pred, y[shuffle])).mean()
    torch.testing.assert_close(s['loss'], expected, rtol=1e-5, atol=1e-6)
    if cb_class is MixUp:
        assert (lam >= 0.5).all()
        w = lam[:, None, None, None]
        torch.testing.assert_close(s['x'], w * x + (1 - w) * x[shuffle])
    else:  # each pixel comes from the item or from its partner; lam is the share kept
        from_item, from_partner = (s['x'] == x).all(1), (s['x'] == x[shuffle]).all(1)
        assert (from_item | from_partner).all()
        moved = shuffle != torch.arange(len(shuffle))
        torch.testing.assert_close(from_item.float().mean((1, 2))[moved], lam[moved])


def test_multi_label_targets_are_mixed_and_the_loss_is_the_same_mix():
    learn = make_learner(cbs=MixUp(), multi_label=True, loss_func=BCEWithLogitsLossFlat())
    (x, y), s = first_batch(learn)
    lam, y1 = s['lam'][:, None], y[s['shuffle']]
    torch.testing.assert_close(s['y'], lam * y + (1 - lam) * y1)
    bce = [F.binary_cross_entropy_with_logits(s['pred'], t, reduction='none').mean(1) for t in (y, y1)]
    torch.testing.assert_close(s['loss'], (s['lam'] * bce[0] + (1 - s['lam']) * bce[1]).mean())


def test_the_same_seed_gives_the_same_draws():
    draws = [first_batch(make_learner(cbs=CutMix()), seed=3)[1] for _ in range(2)]
    assert torch.equal(draws[0]['lam'], draws[1]['lam']) and torch.equal(draws[0]['x'], draws[1]['x'])


@pytest.mark.parametrize('cb_class', [MixUp, CutMix])
def test_validation_and_get_preds_are_untouched(cb_class):
    learn = make_learner()
    learn.fit(1, 1e-2)
    plain = learn.validate(), learn.get_preds(with_loss=True)
    with learn.added_cbs(cb_class()):
        mixed = learn.validate(), learn.get_preds(with_loss=True)
    assert plain[0] == mixed[0]
    for a, b in zip(plain[1], mixed[1]): assert torch.equal(a, b)
    # during a fit, the validation loss of the results table is the plain one too
    learn.fit(1, 1e-2, cbs=cb_class())
    assert learn.recorder.values[-1][1] == pytest.approx(learn.validate()[0], rel=1e-5)


class Boom(Callback):
    order, run_valid = 30, False
    def after_loss(self): raise RuntimeError('boom')


@pytest.mark.parametrize('cb_class', [MixUp, CutMix])
def test_the_loss_function_is_restored_after_an_error_inside_fit(cb_class):
    learn = make_learner()
    lf = learn.loss_func
    with pytest.raises(RuntimeError, match='boom'): learn.fit(1, cbs=[cb_class(), Boom()])
    assert learn.loss_func is lf
    learn.fit(1, cbs=cb_class())
    assert learn.loss_func is lf


def test_bf16_autocast_on_the_cpu_trains_with_mixup():
    learn = make_learner(cbs=MixUp()).to_bf16()
    (x, y), s = first_batch(learn)
    assert s['pred'].dtype == torch.float32 and torch.isfinite(s['loss'])
    l = [F.cross_entropy(s['pred'], t, reduction='none') for t in (y, y[s['shuffle']])]
    torch.testing.assert_close(s['loss'], (s['lam'] * l[0] + (1 - s['lam']) * l[1]).mean())


def test_step_guard_skips_a_step_whose_mixed_loss_is_not_finite():
    class NaNInput(Callback):
        order, run_valid = 1, False   # after the mixing: the loss of the mixed batch is NaN
        def before_batch(self):
            if self.learn.train_iter == 2: self.learn.xb = (self.learn.xb[0] * float('nan'),)
    learn = make_learner(cbs=[MixUp(), NaNInput()])
    with pytest.warns(RuntimeWarning, match='1 of the 4 training steps'): learn.fit(1, 1e-2)
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


@pytest.mark.parametrize('cb_class', [MixUp, CutMix])
def test_gradient_accumulation_composes(cb_class):
    class CountSteps(Callback):
        order, run_valid = 60, False
        def before_fit(self): self.n = 0
        def after_step(self): self.n += 1
    counter = CountSteps()
    learn = make_learner(cbs=[cb_class(), GradientAccumulation(16), counter])
    lf = learn.loss_func
    learn.fit(1, 1e-2)
    assert counter.n == 2 and learn.loss_func is lf   # 32 training items, batches of 8, a step every 16
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


@pytest.mark.parametrize('cb_class', [MixUp, CutMix])
def test_mixing_reads_nothing_back_to_the_host(cb_class, monkeypatch):
    learn = make_learner()
    cb = cb_class()
    cb.learn = learn
    learn.xb, learn.yb, learn.training = (torch.rand(8, 3, 8, 8),), (torch.arange(8) % 3,), True
    cb.before_batch()   # the first call builds Beta's parameters on the device, once
    def refuse(*args): raise AssertionError('a host sync in before_batch')
    for name in ('item', 'tolist', '__bool__', '__int__', '__float__', '__index__'):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    cb.before_batch()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match='alpha'): MixUp(alpha=0)
    learn = Learner(image_dls(), cnn(), cbs=CutMix())
    learn.xb, learn.yb, learn.training = (torch.rand(8, 5),), (torch.zeros(8, dtype=torch.long),), True
    with pytest.raises(ValueError, match='height and width'): learn.cut_mix.before_batch()
