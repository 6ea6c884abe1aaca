"The Learner as fastai documents it: validate's fit events, one_batch, load, get_preds order, targets, metrics."
from functools import partial

import torch

from minifast.data.core import DataLoaders, Datasets
from minifast.test_utils import synth_dls, synth_mlp
from minifast.vision.all import (BCEWithLogitsLossFlat, Callback, CrossEntropyLossFlat, Learner, accuracy,
                                 accuracy_multi, first)


def _learner(**kwargs):
    return Learner(synth_dls(), synth_mlp(seed=0), loss_func=CrossEntropyLossFlat(), **kwargs)


def test_validate_sends_before_fit_and_after_fit():
    class Counting(Callback):
        def before_fit(self): self.events, self.n = ['before_fit'], 0
        def after_batch(self): self.n += 1
        def after_fit(self): self.events.append('after_fit')
    learn, cb = _learner(), Counting()
    with learn.no_bar(): learn.fit(1)
    history = [list(v) for v in learn.recorder.values]
    learn.validate(cbs=cb)
    assert cb.events == ['before_fit', 'after_fit'] and cb.n == len(learn.dls.valid)
    assert learn.recorder.values == history, "the training history is kept"


def test_one_batch_runs_outside_fit():
    learn = _learner()
    learn.one_batch(0, learn.dls.one_batch())
    assert learn.pred.shape == (32, 2) and learn.loss.ndim == 0
    learn.one_batch(0, first(learn.dls.train))
    assert torch.isfinite(learn.loss)


def test_load_without_opt_leaves_an_optimiser_that_fits(tmp_path):
    learn = _learner(path=tmp_path)
    with learn.no_bar(): learn.fit(1)
    learn.save('m')
    fresh = Learner(synth_dls(), synth_mlp(seed=1), loss_func=CrossEntropyLossFlat(), path=tmp_path)
    fresh.load('m', with_opt=False)
    assert fresh.opt is not None
    before = [p.detach().clone() for p in fresh.model.parameters()]
    with fresh.no_bar(): fresh.fit(1, 1e-2)
    assert any(not torch.equal(a, p) for a, p in zip(before, fresh.model.parameters()))


def test_get_preds_on_a_shuffled_loader_is_in_dataset_order():
    learn = _learner()
    dl = learn.dls.train
    assert dl.shuffle
    preds, targs = learn.get_preds(dl=dl)
    ds = dl.dataset
    assert len(targs) == len(ds)
    assert torch.equal(targs, torch.stack([ds[i][1] for i in range(len(ds))]))
    xs = torch.stack([ds[i][0] for i in range(len(ds))])
    learn.model.eval()
    with torch.no_grad(): expected = torch.softmax(learn.model(xs), dim=-1)
    assert torch.allclose(preds, expected, atol=1e-5)


def test_several_targets_reach_the_loss_whole():
    g = torch.Generator().manual_seed(0)
    X, y1, y2 = torch.randn(40, 3, generator=g), torch.randn(40, generator=g), torch.randn(40, generator=g)
    dsets = Datasets(list(range(40)), [[lambda i: X[i]], [lambda i: y1[i]], [lambda i: y2[i]]],
                     splits=(range(32), range(32, 40)), n_inp=1)
    dls = DataLoaders.from_dsets(dsets, bs=8, device='cpu', num_workers=0, seed=0)
    seen = []
    def two_targets(pred, a, b):
        seen.append((a.shape, b.shape))
        return ((pred[:, 0] - a) ** 2 + (pred[:, 1] - b) ** 2).mean()
    learn = Learner(dls, torch.nn.Linear(3, 2), loss_func=two_targets)
    with learn.no_bar(): learn.fit(1)
    assert seen and all(s == (torch.Size([8]), torch.Size([8])) for s in seen)


def test_metrics_set_to_a_bare_callable_after_construction():
    learn = _learner()
    learn.metrics = accuracy
    assert learn.metrics == [accuracy]
    with learn.no_bar(): learn.fit(1)
    assert learn.recorder.metric_names[-2] == 'accuracy' and len(learn.validate()) == 2


def test_metrics_set_to_a_partial_of_accuracy_multi_validates():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 2, generator=g)
    Y = torch.stack([X[:, 0] > 0, X[:, 1] > 0], dim=1).float()
    dsets = Datasets(list(range(40)), [[lambda i: X[i]], [lambda i: Y[i]]], splits=(range(32), range(32, 40)))
    dls = DataLoaders.from_dsets(dsets, bs=8, device='cpu', num_workers=0, seed=0)
    learn = Learner(dls, torch.nn.Linear(2, 2), loss_func=BCEWithLogitsLossFlat())
    learn.metrics = partial(accuracy_multi, thresh=0.1)
    loss, acc = learn.validate()
    with torch.no_grad(): probs = torch.sigmoid(learn.model(X[32:]))
    assert abs(acc - float(((probs > 0.1).float() == Y[32:]).float().mean())) < 1e-6
