"""MixedPrecision on the CPU: bfloat16 trains like float32, weights/optimiser/predictions stay float32,
fp16 falls back to bf16 with one warning, the gradient scaler unscales exactly and skips a step whose
gradients are inf, autocast is always left, and the CUDA choices by construction."""
import warnings

import pytest
import torch
from torch import nn

from minifast.callback.core import Callback
from minifast.callback.fp16 import MixedPrecision, amp_config
from minifast.data.core import DataLoaders, Datasets
from minifast.data.transforms import Categorize
from minifast.learner import Learner


def make_dls(n=256, n_valid=64, bs=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    y = (X[:, 0] - X[:, 1] + 0.5 * X[:, 2] > 0).long()
    dsets = Datasets(list(range(n)), [[lambda i: X[i]], [lambda i: ['a', 'b'][int(y[i])], Categorize()]],
                     splits=(range(n - n_valid), range(n - n_valid, n)), kinds=('other', 'category'))
    return DataLoaders.from_dsets(dsets, bs=bs, device='cpu', seed=seed, num_workers=0)


def make_learner(seed=0, **kw):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.BatchNorm1d(32), nn.Linear(32, 2))
    learn = Learner(make_dls(), model, **kw)
    learn.remove_cb(learn.progress)
    return learn


def dtypes_seen(learn):
    seen = []
    learn.model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    return seen


def test_bf16_on_cpu_trains_like_fp32():
    ref = make_learner(); ref.fit(4, 1e-2)
    learn = make_learner().to_bf16()
    seen = dtypes_seen(learn)
    learn.fit(4, 1e-2)
    assert set(seen) == {torch.bfloat16}  # autocast really was on, in training and validation
    ref_loss, loss = ref.recorder.values[-1][1], learn.recorder.values[-1][1]
    assert loss < 0.5 * ref.recorder.values[0][0]  # it learnt
    assert loss == pytest.approx(ref_loss, abs=0.03)
    ref_w, w = ref.model[0].weight, learn.model[0].weight
    assert (w - ref_w).abs().max() < 0.1 * ref_w.abs().max()  # Adam amplifies bf16 rounding a little
    # weights, gradients' home and optimiser state are float32; predictions come out float32
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    state = [v for s in learn.opt.torch_opt.state.values() for v in s.values()
             if torch.is_tensor(v) and v.is_floating_point()]
    assert state and all(v.dtype == torch.float32 for v in state)
    preds, _ = learn.get_preds()
    assert preds.dtype == torch.float32 and seen[-1] == torch.bfloat16
    assert learn.mixed_precision.scaler is None


def test_predictions_are_float32_before_the_loss():
    class Check(Callback):
        order = 20
        def after_pred(self): self.dtype = self.learn.pred.dtype
    learn = make_learner().to_bf16()
    learn.add_cb(Check())
    learn.fit(1, 1e-3)
    assert learn.check.dtype == torch.float32


def test_fp16_on_cpu_falls_back_to_bf16_with_one_warning():
    learn = make_learner().to_fp16()
    seen = dtypes_seen(learn)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        learn.fit(1, 1e-3)
        learn.fit(1, 1e-3)
    msgs = [str(w.message) for w in caught if 'MixedPrecision' in str(w.message)]
    assert len(msgs) == 1 and 'bfloat16' in msgs[0] and 'to_bf16' in msgs[0]
    assert set(seen) == {torch.bfloat16}


def test_to_fp32_removes_the_callback_and_autocast():
    learn = make_learner().to_bf16().to_fp32()
    assert not any(isinstance(c, MixedPrecision) for c in learn.cbs)
    seen = dtypes_seen(learn)
    learn.fit(1, 1e-3)
    assert set(seen) == {torch.float32}


def test_cuda_choices_by_construction():
    assert amp_config('cuda', 'fp16') == (torch.float16, True, None)
    assert amp_config('cuda', 'bf16') == (torch.bfloat16, False, None)
    assert amp_config('cpu', 'bf16') == (torch.bfloat16, False, None)
    assert amp_config('cuda', 'bf16', use_scaler=True)[1] is True
    with pytest.raises(ValueError, match="'half'"): MixedPrecision('half')


class InfGradAt(Callback):
    "Put an inf in one gradient after the backward pass of training batch `at`; snapshot the weights around the step."
    order = 30
    def __init__(self, at): self.at, self.i, self.snaps = at, 0, {}
    def after_backward(self):
        if self.i == self.at: self.learn.model[0].weight.grad[0, 0] = float('inf')
        self.before = [p.detach().clone() for p in self.learn.model.parameters()]
    def after_step(self):
        self.snaps[self.i] = all(torch.equal(b, p) for b, p in zip(self.before, self.learn.model.parameters()))
        self.i += 1


def test_scaler_skips_a_step_whose_gradients_are_inf():
    learn = make_learner().to_bf16(use_scaler=True, init_scale=2.**10)
    learn.add_cb(InfGradAt(at=2))
    learn.fit(1, 1e-2)
    mp, n = learn.mixed_precision, len(learn.dls.train)
    assert mp.skipped_steps == 1 and mp.skipped_per_epoch == [1]
    names = learn.recorder.metric_names
    # visible in the recorder
    assert 'skipped_steps' in names and learn.recorder.values[0][names.index('skipped_steps') - 1] == 1
    assert learn.inf_grad_at.snaps[2] is True  # unchanged by the bad step
    assert not any(learn.inf_grad_at.snaps[i] for i in range(n) if i != 2)  # every other step moved the weights
    assert mp.scaler.get_scale() == 2.**9  # backed off once
    # the scaler's business, not checked twice
    assert not learn.step_guard.active and learn.recorder.skipped_steps == [0]
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    steps = [s['step'] for s in learn.opt.torch_opt.state.values()]
    assert all(int(s) == n - 1 for s in steps)


def test_without_a_scaler_the_step_guard_skips_a_step_whose_gradients_are_inf():
    "bf16 needs no gradient scaler: StepGuard then checks the gradients (on the device) and skips the bad step."
    learn = make_learner().to_bf16()
    learn.add_cb(InfGradAt(at=2))
    msg = r'Recorder: 1 of the \d+ training steps of epoch 0 .*the first at training batch 2'
    with pytest.warns(RuntimeWarning, match=msg):
        learn.fit(1, 1e-2)
    n = len(learn.dls.train)
    assert learn.mixed_precision.scaler is None and learn.step_guard.active
    assert 'skipped_steps' not in learn.recorder.metric_names and learn.recorder.skipped_steps == [1]
    assert learn.inf_grad_at.snaps[2] is True and not any(learn.inf_grad_at.snaps[i] for i in range(n) if i != 2)
    steps = [s['step'] for s in learn.opt.torch_opt.state.values()]
    assert all(int(s) == n - 1 for s in steps)


def test_scaler_unscales_exactly():
    "Scaling by a power of two and back is exact: with and without the scaler, training ends at the same weights."
    a = make_learner().to_bf16(); a.fit(2, 1e-2)
    b = make_learner().to_bf16(use_scaler=True); b.fit(2, 1e-2)
    assert b.mixed_precision.skipped_steps == 0 and b.mixed_precision.scaler.get_scale() == 2.**16
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6, rtol=0)


def test_gradient_clip_clips_the_unscaled_gradients():
    "GradientClip under a gradient scaler clips the true gradients: the same weights as without a scaler."
    from minifast.callback.misc import GradientClip
    a = make_learner(cbs=GradientClip(0.01)).to_bf16(); a.fit(2, 1e-2)
    b = make_learner(cbs=GradientClip(0.01)).to_bf16(use_scaler=True); b.fit(2, 1e-2)
    c = make_learner().to_bf16(); c.fit(2, 1e-2)
    assert b.mixed_precision.skipped_steps == 0 and b.step_state.unscale is None  # the hook is removed after fit
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6, rtol=0)
    assert any(not torch.allclose(pa, pc, atol=1e-4) for pa, pc in zip(a.model.parameters(), c.model.parameters())), \
        "the clip changes training: the comparison above can fail"


def test_a_step_cancelled_after_unscaling_leaves_the_scaler_usable():
    "Unscaled by GradientClip, then cancelled by a later callback: the next steps unscale and step again."
    from minifast.callback.core import CancelStepException
    from minifast.callback.misc import GradientClip
    class SkipOdd(Callback):
        order = 5  # after GradientClip (0) has unscaled, before MixedPrecision (10) steps
        def before_step(self):
            if self.learn.train_iter % 2: raise CancelStepException()
    learn = make_learner(cbs=[GradientClip(1.), SkipOdd()]).to_bf16(use_scaler=True)
    learn.fit(1, 1e-2)
    steps = [int(s['step']) for s in learn.opt.torch_opt.state.values()]
    assert steps and all(s == (len(learn.dls.train) + 1) // 2 for s in steps)


def test_autocast_is_left_when_the_forward_pass_fails():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)
        def forward(self, x): raise RuntimeError('boom in forward')
    learn = Learner(make_dls(), Boom()).to_bf16()
    with pytest.raises(RuntimeError, match='boom'): learn.fit(1)
    assert not torch.is_autocast_enabled('cpu')


def test_imports_as_in_fastbook():
    "`from fastai.callback.fp16 import *` in fastbook: the same line gives MixedPrecision here, and vision.all too."
    ns = {}
    exec('from minifast.callback.fp16 import *', ns)
    assert ns['MixedPrecision'] is MixedPrecision
    exec('from minifast.vision.all import *', ns)
    assert ns['MixedPrecision'] is MixedPrecision and callable(ns['vision_learner']) and callable(ns['load_learner'])
    learn = make_learner()
    assert learn.to_fp16() is learn and isinstance(learn.mixed_precision, MixedPrecision)
    assert learn.to_fp32() is learn and not hasattr(learn, 'mixed_precision')
