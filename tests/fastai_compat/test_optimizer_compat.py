"""fastai's documented optimiser behaviour (docs.fast.ai/optimizer.html), checked against formulas written out by hand.

(Named `test_optimizer_compat.py`: `tests/test_optimizer.py` already takes the module name `test_optimizer`.)
"""
import inspect

import numpy as np
import pytest
import torch
from torch import nn

from minifast.optimizer import Adam, RMSProp, SGD


def _bare(values=(1., 2., 3.), grad=(0.1, 0.2, 0.3)):
    w = torch.tensor(values, requires_grad=True)
    w.grad = torch.tensor(grad)
    return w


@pytest.mark.parametrize('opt_func', [SGD, Adam, RMSProp])
def test_a_bare_tensor_is_one_parameter(opt_func):
    "fastai's docs build `SGD(tensor, lr=0.1)`: the tensor is one parameter (not a list of its rows)."
    w = _bare()
    opt = opt_func(w, lr=0.1)
    assert len(opt.layer_groups) == 1 and len(opt.layer_groups[0]) == 1 and opt.layer_groups[0][0] is w
    before = w.detach().clone()
    opt.step()
    assert not torch.equal(before, w.detach())


def test_sgd_on_a_bare_tensor_steps_by_the_formula():
    w = _bare()
    opt = SGD(w, 0.1)  # lr positional, as in fastai's `SGD(params, lr)`
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.99, 1.98, 2.97]))


def test_sgd_on_a_tuple_of_tensors_as_in_the_fastai_book():
    "fastbook chapter 4: `params = weights, bias` then an optimiser over them."
    weights, bias = _bare((1., 2.), (1., -1.)), _bare((0.5,), (2.,))
    SGD((weights, bias), lr=0.5).step()
    torch.testing.assert_close(weights.detach(), torch.tensor([0.5, 2.5]))
    torch.testing.assert_close(bias.detach(), torch.tensor([-0.5]))


def test_sgd_momentum_and_decoupled_weight_decay():
    "fastai: `p *= 1 - lr * wd`, then `m = mom * m + g` (no dampening), `p -= lr * m`."
    w = _bare((1., -1.), (0.5, 0.5))
    opt = SGD(w, lr=0.1, mom=0.9, wd=0.1)
    p, m = torch.tensor([1., -1.]), torch.zeros(2)
    for g in (torch.tensor([0.5, 0.5]), torch.tensor([-1., 2.])):
        w.grad = g.clone(); opt.step()
        p = p * (1 - 0.1 * 0.1); m = 0.9 * m + g; p = p - 0.1 * m
    torch.testing.assert_close(w.detach(), p)


def test_adam_steps_by_fastais_formula():
    "fastai's Adam: dampened averages, bias-corrected, eps outside the square root, decoupled wd."
    w = _bare((1., -1.), (0.5, 0.5))
    lr, mom, sqr_mom, eps, wd = 0.01, 0.9, 0.99, 1e-5, 0.01
    opt = Adam(w, lr=lr)
    p, m, v = torch.tensor([1., -1.]), torch.zeros(2), torch.zeros(2)
    for step, g in enumerate((torch.tensor([0.5, 0.5]), torch.tensor([-1., 2.])), start=1):
        w.grad = g.clone(); opt.step()
        p = p * (1 - lr * wd)
        m, v = mom * m + (1 - mom) * g, sqr_mom * v + (1 - sqr_mom) * g**2
        p = p - lr / (1 - mom**step) * m / ((v / (1 - sqr_mom**step)).sqrt() + eps)
    torch.testing.assert_close(w.detach(), p)


def test_rmsprop_with_momentum_steps_by_fastais_formula():
    "fastai's RMSProp: `m = mom * m + g`, `v = sqr_mom * v + (1 - sqr_mom) * g**2`, `p -= lr * m / (sqrt(v) + eps)`."
    w = _bare((1., -1.), (0.5, 0.5))
    lr, mom, sqr_mom, eps = 0.01, 0.9, 0.99, 1e-8
    opt = RMSProp(w, lr=lr, mom=mom)
    p, m, v = torch.tensor([1., -1.]), torch.zeros(2), torch.zeros(2)
    for g in (torch.tensor([0.5, 0.5]), torch.tensor([-1., 2.]), torch.tensor([0.3, -0.1])):
        w.grad = g.clone(); opt.step()
        m, v = mom * m + g, sqr_mom * v + (1 - sqr_mom) * g**2
        p = p - lr * m / (v.sqrt() + eps)
    torch.testing.assert_close(w.detach(), p)
    # torch's RMSprop averages the normalised steps instead: a different trajectory
    w2 = torch.tensor([1., -1.], requires_grad=True)
    torch_opt = torch.optim.RMSprop([w2], lr=lr, alpha=sqr_mom, eps=eps, momentum=mom)
    for g in (torch.tensor([0.5, 0.5]), torch.tensor([-1., 2.]), torch.tensor([0.3, -0.1])):
        w2.grad = g.clone(); torch_opt.step()
    assert not torch.allclose(w2.detach(), p)


def test_rmsprop_built_without_momentum_ignores_a_scheduled_mom():
    "fastai picks RMSProp's steps when it is built: with `mom=0` a later `mom` (one-cycle sets it) changes nothing."
    w, ref = _bare((1., -1.), (0.5, 0.5)), _bare((1., -1.), (0.5, 0.5))
    opt, ref_opt = RMSProp(w, lr=0.01), RMSProp(ref, lr=0.01)
    opt.set_hyper('mom', 0.95)
    for g in (torch.tensor([0.5, 0.5]), torch.tensor([-1., 2.])):
        w.grad, ref.grad = g.clone(), g.clone()
        opt.step(); ref_opt.step()
    torch.testing.assert_close(w.detach(), ref.detach(), rtol=0, atol=0)


@pytest.mark.parametrize('opt_func', [SGD, Adam, RMSProp])
def test_lr_slice_is_spread_over_the_parameter_groups(opt_func):
    "fastai's `set_hyper`: `slice(hi)` gives the other groups `hi / 10`; `slice(lo, hi)` is spread evenly in log scale."
    groups = [[nn.Parameter(torch.zeros(2))] for _ in range(3)]
    opt = opt_func(groups, lr=slice(1e-2))
    assert [h['lr'] for h in opt.hypers] == [1e-3, 1e-3, 1e-2]
    opt.set_hyper('lr', slice(1e-5, 1e-3))
    np.testing.assert_allclose([h['lr'] for h in opt.hypers], [1e-5, 1e-4, 1e-3])
    np.testing.assert_allclose(sorted({pg['lr'] for pg in opt.torch_opt.param_groups}), [1e-5, 1e-4, 1e-3])
    opt.set_hypers(lr=slice(0.1))
    assert [h['lr'] for h in opt.hypers] == [0.01, 0.01, 0.1]


def test_lr_slice_with_one_group_is_its_stop():
    w = _bare()
    assert SGD(w, lr=slice(1e-4, 1e-2)).hypers[0]['lr'] == 1e-2
    assert SGD(w, lr=slice(1e-2)).hypers[0]['lr'] == 1e-2


@pytest.mark.parametrize('opt_func, defaults', [
    (SGD, dict(mom=0., wd=0., decouple_wd=True)),
    (Adam, dict(mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01, decouple_wd=True)),
    (RMSProp, dict(sqr_mom=0.99, mom=0., eps=1e-8, wd=0., decouple_wd=True))])
def test_defaults_are_fastais(opt_func, defaults):
    params = inspect.signature(opt_func).parameters
    assert list(params)[:2] == ['layer_groups', 'lr']  # fastai: (params, lr, ...), both positional
    assert {k: params[k].default for k in defaults} == defaults


def test_fit_learning_rates_take_slice_0_hi_as_slice_hi():
    "fastai treats a slice starting at 0 like `slice(hi)`: the last group gets hi, the others hi / 10."
    from minifast.callback.schedule import lr_range
    assert lr_range(slice(0, 1e-3), 3).tolist() == pytest.approx([1e-4, 1e-4, 1e-3])
    assert lr_range(slice(0, 1e-3), 3).tolist() == lr_range(slice(1e-3), 3).tolist()
    assert lr_range(slice(0, 0), 2).tolist() == [0, 0]   # no update anywhere
