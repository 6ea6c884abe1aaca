"""Tracker callbacks on scripted metric sequences: early stopping stops at the right epoch,
SaveModelCallback reloads the best weights, a NaN loss stops training with a clear message and
keeps the last good weights."""
import math
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from minifast.callback.core import Callback
from minifast.callback.tracker import EarlyStoppingCallback, SaveModelCallback, TerminateOnNaNCallback, TrackerCallback
from minifast.data.core import DataLoaders, Datasets
from minifast.data.transforms import Categorize
from minifast.learner import Learner
from minifast.metrics import Metric


class Scripted(Metric):
    "Plays back `values`, one per validation pass."
    def __init__(self, values, name='scripted'): self.values, self.name, self.epoch = list(values), name, -1
    def reset(self): self.epoch += 1
    def accumulate(self, pred, *yb): pass
    @property
    def value(self): return self.values[self.epoch]


def make_dls(n=64, n_valid=16, bs=16):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 2, generator=g)
    dsets = Datasets(list(range(n)), [[lambda i: X[i]], [lambda i: 'ab'[int(X[i, 0] > 0)], Categorize()]],
                     splits=(range(n - n_valid), range(n - n_valid, n)), kinds=('other', 'category'))
    return DataLoaders.from_dsets(dsets, bs=bs, device='cpu', seed=0, num_workers=0)


def learner(values=None, name='scripted', path=None, model=None):
    metrics = [Scripted(values, name=name)] if values is not None else []
    learn = Learner(make_dls(), model or nn.Linear(2, 2), metrics=metrics, path=path)
    learn.remove_cb(learn.progress)
    return learn


def stop_epoch(values, **kw):
    "Epochs run before early stopping, by brute force: the reference the callback is compared with."
    comp, min_delta, patience = kw.get('comp', np.greater), kw.get('min_delta', 0.), kw.get('patience', 1)
    best, wait = (-math.inf if comp is np.greater else math.inf), 0
    for e, v in enumerate(values):
        better = v > best + min_delta if comp is np.greater else v < best - min_delta
        if better: best, wait = v, 0
        else: wait += 1
        if wait >= patience: return e + 1
    return len(values)


@pytest.mark.parametrize('values,kw,expected', [
    ([0.5, 0.6, 0.7, 0.65, 0.66, 0.8], dict(patience=2), 5),  # best at 2; 3 and 4 worse: stop after epoch 4
    ([0.5, 0.6, 0.7, 0.65, 0.66, 0.8], dict(patience=3), 6),
    ([0.5, 0.6, 0.7, 0.65, 0.66, 0.8], dict(patience=1), 4),
    ([0.5, 0.55, 0.54, 0.7, 0.71, 0.9], dict(patience=2, min_delta=0.06), 3),  # +0.05 and +0.04 are too small
    ([0.5, 0.55, 0.54, 0.7, 0.71, 0.9], dict(patience=2), 6),
    ([0.9, 0.8, 0.85, 0.7, 0.75, 0.76], dict(patience=2, comp=np.less), 6),
])
def test_early_stopping_stops_at_the_right_epoch(values, kw, expected, capsys):
    assert stop_epoch(values, **kw) == expected  # the brute-force reference agrees with the hand count
    learn = learner(values)
    learn.fit(len(values), cbs=EarlyStoppingCallback(monitor='scripted', **kw))
    assert len(learn.recorder.values) == expected
    assert [row[2] for row in learn.recorder.values] == values[:expected]
    if expected < len(values): assert 'stopping early after epoch' in capsys.readouterr().out


def test_early_stopping_default_comp_for_loss_and_error():
    learn = learner([0.3, 0.2, 0.25, 0.1], name='error_rate')
    learn.fit(4, cbs=EarlyStoppingCallback(monitor='error_rate', patience=1))
    assert len(learn.recorder.values) == 3  # lower is better for an error: 0.25 after 0.2 stops
    assert EarlyStoppingCallback('valid_loss').comp is np.less and EarlyStoppingCallback('accuracy').comp is np.greater


def test_unknown_monitor_lists_the_columns():
    learn = learner([1.0], name='accuracy')
    with pytest.raises(ValueError, match=r"'acc'.*accuracy"): learn.fit(1, cbs=EarlyStoppingCallback(monitor='acc'))
    with pytest.raises(ValueError, match='patience'): EarlyStoppingCallback(patience=0)


class Snapshots(Callback):
    "The model's weights at the end of every epoch."
    order = 55
    def before_fit(self): self.states = []
    def after_epoch(self): self.states.append({k: v.clone() for k, v in self.learn.model.state_dict().items()})


def test_save_model_reloads_the_best_weights(tmp_path, capsys):
    values = [0.2, 0.5, 0.4, 0.9, 0.3]  # best at epoch 3
    learn = learner(values, path=tmp_path)
    save, snaps = SaveModelCallback(monitor='scripted', fname='best'), Snapshots()
    learn.fit(5, 0.1, cbs=[save, snaps])
    states = snaps.states
    now = learn.model.state_dict()
    assert all(torch.equal(now[k], states[3][k]) for k in now)
    assert not all(torch.equal(now[k], states[4][k]) for k in now)  # not merely the last epoch
    assert save.best_epoch == 3 and save.best == 0.9
    assert (tmp_path/'models'/'best.pth').exists()
    out = capsys.readouterr().out
    assert 'Better model found at epoch 3 with scripted value: 0.9' in out and 'epoch 2' not in out


def test_save_model_with_early_stopping_and_valid_loss(tmp_path):
    learn = learner(path=tmp_path, model=nn.Linear(2, 2))
    save = SaveModelCallback()
    learn.fit(3, 0.05, cbs=[save, EarlyStoppingCallback(patience=1)])
    losses = [row[1] for row in learn.recorder.values]
    assert save.best == pytest.approx(min(losses)) and save.best_epoch == int(np.argmin(losses))
    # the reloaded model gives back the best validation loss
    preds, targs = learn.get_preds()
    assert float(nn.functional.nll_loss(preds.log(), targs)) == pytest.approx(min(losses), rel=1e-4)


def test_save_model_every_epoch(tmp_path):
    learn = learner([0.1, 0.2, 0.3, 0.4], path=tmp_path)
    learn.fit(4, cbs=SaveModelCallback(monitor='scripted', fname='m', every_epoch=2, with_opt=True))
    assert sorted(p.name for p in (tmp_path/'models').iterdir()) == ['m_0.pth', 'm_2.pth']
    assert 'opt' in torch.load(tmp_path/'models'/'m_2.pth', weights_only=True)


class NaNAt(nn.Module):
    "A linear model whose output becomes NaN from the `at`-th training forward pass on."
    def __init__(self, at):
        super().__init__()
        self.lin, self.at, self.calls = nn.Linear(2, 2), at, 0
    def forward(self, x):
        if self.training: self.calls += 1
        out = self.lin(x)
        return out * float('nan') if self.training and self.calls >= self.at else out


class WeightsBeforeBatch(Callback):
    def before_batch(self):
        if self.learn.training: self.last = {k: v.clone() for k, v in self.learn.model.state_dict().items()}


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_weights():
    model = NaNAt(at=5)  # batches 1-4 train, the 5th (epoch 1, batch 1) gives a NaN loss
    learn = learner(model=model)
    nan_cb, weights = TerminateOnNaNCallback(), WeightsBeforeBatch()
    with pytest.warns(RuntimeWarning, match=r'loss is nan at epoch 1, training batch 1.*last good step') as caught:
        learn.fit(3, 0.1, cbs=[nan_cb, weights])
    assert len(caught) == 1, "the Recorder does not warn too: the bad batch is not recorded"
    assert nan_cb.stopped_at == (1, 1, 'training')
    assert all(math.isfinite(v) for v in learn.recorder.losses) and math.isfinite(learn.recorder.values[-1][0])
    assert model.calls == 5 and learn.epoch == 1  # nothing ran after the NaN batch
    now = learn.model.state_dict()
    assert all(torch.equal(now[k], weights.last[k]) for k in now)  # the NaN step never happened
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in learn.model.parameters())


def test_without_the_callback_the_guard_skips_the_nan_steps_and_the_recorder_says_so():
    """The default StepGuard skips every step with a NaN loss on the device: the weights stay those of the last good
    step, training goes on, and the Recorder warns once, at the end of the first epoch with skipped steps, with their
    number."""
    learn, weights = learner(model=NaNAt(at=5)), WeightsBeforeBatch()
    with pytest.warns(RuntimeWarning) as caught: learn.fit(3, 0.1, cbs=weights)
    assert learn.model.calls == 9  # every batch ran
    now = learn.model.state_dict()
    assert all(torch.equal(now[k], weights.last[k]) for k in now)  # the last 5 steps were skipped
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    assert learn.recorder.skipped_steps == [0, 2, 3]
    messages = [str(w.message) for w in caught if 'Recorder' in str(w.message)]
    assert len(messages) == 1, messages  # epochs 1 and 2 skip steps: one warning per fit
    assert re.match(r'Recorder: 2 of the 3 training steps of epoch 1 had a NaN or infinite loss or gradients '
                    r'and were skipped \(the first at training batch 1\): the weights, the optimiser state and '
                    r'BatchNorm.*'
                    r'Lower the learning rate.*cbs=TerminateOnNaNCallback\(\)', messages[0]), messages
    assert all(math.isfinite(v) for v in learn.recorder.losses)  # the NaN losses stay out of the smoothed loss
    assert all(math.isfinite(row[0]) and math.isfinite(row[1]) for row in learn.recorder.values)


@pytest.mark.parametrize('opt_func', ['RMSProp', 'Adam(foreach=True)'])
def test_an_optimiser_that_cannot_skip_on_the_device_spreads_nan_to_the_weights_and_the_recorder_says_so(opt_func):
    "The fallback: without a fused kernel the bad steps are taken; the Recorder warns once, after the epoch, says why."
    from functools import partial
    from minifast.optimizer import Adam, RMSProp
    learn = Learner(make_dls(), NaNAt(at=5), opt_func=RMSProp if opt_func == 'RMSProp' else partial(Adam, foreach=True))
    learn.remove_cb(learn.progress)
    with pytest.warns(RuntimeWarning) as caught: learn.fit(3, 0.1)
    assert not all(torch.isfinite(p).all() for p in learn.model.parameters())
    assert learn.recorder.skipped_steps == [0, 0, 0] and not learn.step_guard.active
    name = 'RMSprop' if opt_func == 'RMSProp' else 'AdamW'
    assert learn.step_guard.fallback.startswith(f'{name} cannot skip a step on the device')
    messages = [str(w.message) for w in caught if 'Recorder' in str(w.message)]
    assert len(messages) == 1, messages  # epochs 1 and 2 are NaN: one warning per fit
    assert re.match(r'Recorder: the training loss is nan and the validation loss is nan at epoch 1 '
                    r'\(from training batch 1 on\)\. A NaN or infinite loss is stepped into every weight, and the '
                    r'model does not recover\. Lower the learning rate.*cbs=TerminateOnNaNCallback\(\) '
                    rf'to stop at the first bad batch\. StepGuard could not skip '
                    rf'the bad steps: {name} cannot skip a step on the device; ', messages[0]), messages


def test_without_any_default_callback_nan_spreads_to_the_weights():
    "default_cbs=False: no StepGuard (and no Recorder): the weights take the NaN step, as with a plain PyTorch loop."
    from minifast.callback.core import TrainEvalCallback
    learn = Learner(make_dls(), NaNAt(at=5), default_cbs=False, cbs=TrainEvalCallback())
    learn.fit(2, 0.1)
    assert not hasattr(learn, 'step_guard')
    assert not all(torch.isfinite(p).all() for p in learn.model.parameters())


def test_a_nan_validation_loss_alone_is_reported_and_a_finite_fit_says_nothing():
    class NaNWhenEvaluating(nn.Linear):
        def forward(self, x): return super().forward(x) * (float('nan') if not self.training else 1.)
    learn = learner(model=NaNWhenEvaluating(2, 2))
    with pytest.warns(RuntimeWarning, match=r'Recorder: the validation loss is nan at epoch 0\. A NaN'): learn.fit(1)
    learn = learner()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        learn.fit(2, 0.1)


def test_tracker_min_delta_and_reset_on_fit():
    t = TrackerCallback(monitor='scripted', min_delta=0.1, reset_on_fit=False)
    learn = learner([0.5, 0.55, 0.7, 0.65])
    learn.fit(2, cbs=t)
    assert t.best == 0.5  # 0.55 is not better by more than 0.1
    learn.fit(2, cbs=t)
    assert t.best == 0.7  # kept from the previous fit, then beaten by 0.7


def test_a_cancelled_epoch_is_neither_logged_nor_counted(capsys, tmp_path):
    """An epoch skipped with CancelEpochException has no row: the table does not repeat the previous one, early
    stopping does not count it."""
    from minifast.callback.core import CancelEpochException
    from minifast.callback.misc import CSVLogger

    class SkipEpoch1(Callback):
        order = -20  # before every other callback, the Recorder's before_epoch too
        def before_epoch(self):
            if self.learn.epoch == 1: raise CancelEpochException()
    # with its progress table
    learn = Learner(make_dls(), nn.Linear(2, 2), metrics=[Scripted([0.5, 0.4, 0.3])], path=tmp_path)
    capsys.readouterr()
    early = EarlyStoppingCallback(monitor='scripted', patience=1)
    learn.fit(3, cbs=[SkipEpoch1(), early, CSVLogger('log.csv')])
    assert [len(v) for v in learn.recorder.values] == [3, 3]   # epochs 0 and 2
    assert early.stopped_epoch == 2   # 0.5 then 0.4: stopped after epoch 2, not after the skipped epoch 1
    rows = [l.split()[0] for l in capsys.readouterr().out.splitlines() if l[:1].isdigit()]
    assert rows == ['0', '2']
    assert [l.split(',')[0] for l in (learn.path/'log.csv').read_text().splitlines()] == ['epoch', '0', '2']


# ---- the contracts between callbacks: learn.step_state and declared capabilities ----------------------------------
def test_a_renamed_step_guard_still_skips_and_the_recorder_still_counts():
    "The Recorder reads learn.step_state, not an attribute named after the guard: a subclass with another name works."
    from minifast.callback.tracker import StepGuard

    class Guard(StepGuard): pass
    learn = Learner(make_dls(), NaNAt(at=5), cbs=Guard())
    learn.remove_cb(learn.step_guard)  # the default guard: only the renamed one is left
    learn.remove_cb(learn.progress)
    assert not hasattr(learn, 'step_guard') and isinstance(learn.guard, Guard)
    with pytest.warns(RuntimeWarning, match='were skipped'): learn.fit(3, 0.1)
    assert learn.recorder.skipped_steps == [0, 2, 3]
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    assert all(math.isfinite(v) for v in learn.recorder.losses)  # the Recorder knew the steps were guarded


def test_a_callback_declaring_expects_divergence_silences_the_guard_and_the_warning():
    "Any callback may declare the capability LRFinder has: the guard stands aside and the Recorder does not warn."
    class Probe(Callback):
        expects_divergence = True
    learn = learner(model=NaNAt(at=5))
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)  # no Recorder warning
        learn.fit(2, 0.1, cbs=Probe())
    assert not learn.step_guard.active and learn.recorder.skipped_steps == [0, 0]
    assert not learn.step_state.guarded


def test_a_callback_declaring_skips_bad_steps_makes_the_guard_stand_aside():
    "A callback that skips bad steps itself (as a gradient scaler does) is not checked twice."
    class OwnScaler(Callback):
        skips_bad_steps = True
    learn = learner()
    seen = []

    class Spy(Callback):
        order = 30
        def before_train(self): seen.append((self.learn.step_guard.active, self.learn.step_state.guarded))
    learn.fit(1, cbs=[OwnScaler(), Spy()])
    assert seen == [(False, False)]
    learn.fit(1, cbs=Spy())
    assert seen[-1] == (True, True)


def test_the_step_state_is_cleared_before_every_batch():
    "found_inf belongs to one step: a batch never sees the flag of the one before."
    seen = []

    class Look(Callback):
        order = 30
        def before_batch(self): seen.append(self.learn.step_state.found_inf)
        def after_step(self): assert self.learn.step_state.found_inf is not None  # set by the guard for this step
    learner().fit(1, cbs=Look())
    assert seen and all(f is None for f in seen)


def test_the_progress_table_can_be_hidden_through_its_public_method(capsys):
    learn = Learner(make_dls(), nn.Linear(2, 2))
    with learn.progress.table_hidden(): learn.fit(1)
    assert 'train_loss' not in capsys.readouterr().out and learn.progress.show_table
    with learn.no_results_table(): learn.fit(1)
    assert 'train_loss' not in capsys.readouterr().out
