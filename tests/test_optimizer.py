"Tests for minifast.optimizer against torch.optim and hand-computed updates."
import copy

import numpy as np
import pytest
import torch
from torch import nn

from minifast.optimizer import Adam, OptimWrapper, RMSProp, SGD, norm_params, params_for_wd


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.LayerNorm(8),
                         nn.Linear(8, 1))


def layer_groups(model):
    "Three layer groups: first linear + batchnorm, middle linear + layernorm, head."
    return [[*model[0].parameters(), *model[1].parameters()], [*model[3].parameters(), *model[4].parameters()],
            list(model[5].parameters())]


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 5, generator=g) for _ in range(n)]


def train(model, opt, xs):
    for x in xs:
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


def same_params(m1, m2):
    return all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


def test_adam_equals_torch_adamw():
    m1, m2 = make_model(), make_model()
    xs = batches(6)
    train(m1, Adam(layer_groups(m1), lr=3e-2, mom=0.8, sqr_mom=0.95, eps=1e-6, wd=0.1), xs)
    # the wrapper picks torch's fused kernel (see test_fast_kernels): the same steps as torch's fused AdamW
    train(m2, torch.optim.AdamW(m2.parameters(), lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, fused=True),
          xs)
    assert not torch.equal(m1[0].weight, make_model()[0].weight)  # it did train
    for a, b in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_adam_defaults_are_fastai_ones():
    opt = Adam(make_model().parameters())
    assert opt.hypers == [dict(lr=1e-3, mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01)]
    pg = opt.torch_opt.param_groups[0]
    assert isinstance(opt.torch_opt, torch.optim.AdamW)
    assert (pg['betas'], pg['eps'], pg['weight_decay']) == ((0.9, 0.99), 1e-5, 0.01)


def test_adam_l2_equals_torch_adam():
    m1, m2 = make_model(), make_model()
    xs = batches(4)
    opt = Adam(m1.parameters(), lr=1e-2, wd=0.05, decouple_wd=False)
    assert type(opt.torch_opt) is torch.optim.Adam
    train(m1, opt, xs)
    train(m2, torch.optim.Adam(m2.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.05, fused=True),
          xs)
    for a, b in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_no_wd_params_keep_zero_weight_decay():
    model = make_model()
    decay, no_decay = params_for_wd(model)
    opt = Adam(layer_groups(model), no_wd=no_decay)
    opt.set_hyper('wd', 0.1)
    no_ids = {id(p) for p in no_decay}
    for pg in opt.torch_opt.param_groups:
        in_no_wd = {id(p) in no_ids for p in pg['params']}
        assert len(in_no_wd) == 1  # each torch group is all-decay or all-no-decay
        assert pg['weight_decay'] == (0. if in_no_wd.pop() else 0.1)
    assert [h['wd'] for h in opt.hypers] == [0.1, 0.1, 0.1]


def test_no_wd_params_are_not_decayed():
    "With lr>0, wd>0 and a zero gradient, only the decayed params shrink, by exactly 1 - lr*wd (Adam step is 0)."
    model = make_model()
    _, no_decay = params_for_wd(model)
    opt = Adam(layer_groups(model), lr=0.1, wd=0.5, no_wd=no_decay)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters(): p.grad = torch.zeros_like(p)
    opt.step()
    no_ids = {id(p) for p in no_decay}
    for b, p in zip(before, model.parameters()):
        expected = b if id(p) in no_ids else b * (1 - 0.1 * 0.5)
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-7)


def test_params_for_wd_and_norm_params():
    model = make_model()
    decay, no_decay = params_for_wd(model)
    assert {id(p) for p in decay} == {id(model[i].weight) for i in (0, 3, 5)}
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    norm = {id(model[i].weight) for i in (1, 4)} | {id(model[i].bias) for i in (1, 4)}
    assert {id(p) for p in norm_params(model)} == norm
    gn = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4), nn.InstanceNorm2d(4, affine=True))
    assert len(norm_params(gn)) == 4


def test_discriminative_lrs_reach_torch_groups():
    model = make_model()
    _, no_decay = params_for_wd(model)
    opt = Adam(layer_groups(model), lr=np.array([1e-6, 1e-5, 1e-4]), no_wd=no_decay)
    assert [h['lr'] for h in opt.hypers] == [1e-6, 1e-5, 1e-4]
    assert len(opt.torch_opt.param_groups) == 6
    assert [pg['lr'] for pg in opt.torch_opt.param_groups] == [1e-6, 1e-6, 1e-5, 1e-5, 1e-4, 1e-4]
    opt.set_hypers(lr=(1., 2., 3.), mom=0.5)
    assert [pg['lr'] for pg in opt.torch_opt.param_groups] == [1., 1., 2., 2., 3., 3.]
    assert all(pg['betas'] == (0.5, 0.99) for pg in opt.torch_opt.param_groups)


def test_discriminative_lrs_update_each_group_by_its_lr():
    "SGD without momentum: each group's step is exactly lr_i * grad."
    model = make_model()
    lrs = [0.1, 0.01, 0.001]
    opt = SGD(layer_groups(model), lr=lrs)
    before = [[p.detach().clone() for p in g] for g in layer_groups(model)]
    model(batches(1)[0]).pow(2).mean().backward()
    grads = [[p.grad.clone() for p in g] for g in layer_groups(model)]
    opt.step()
    for lr, g, b, gr in zip(lrs, layer_groups(model), before, grads):
        for p, p0, d in zip(g, b, gr): torch.testing.assert_close(p, p0 - lr * d, rtol=0, atol=1e-7)


def test_set_hyper_errors():
    opt = Adam(layer_groups(make_model()))
    with pytest.raises(ValueError, match='2 values.*3 layer groups'): opt.set_hyper('lr', [1e-3, 1e-2])
    with pytest.raises(ValueError, match='lr must be >= 0'): opt.set_hyper('lr', -1e-3)
    with pytest.raises(ValueError, match='lr'): Adam(make_model().parameters(), lr=-1.)
    with pytest.raises(ValueError, match="no hyper-parameter 'sqr_mom'"):
        SGD(make_model().parameters()).set_hyper('sqr_mom', .9)
    with pytest.raises(ValueError, match='hypers'):
        OptimWrapper(torch.optim.SGD, make_model().parameters(), {}, momentum=0.9)


def test_lr_zero_means_no_update():
    model = make_model()
    opt = Adam(model.parameters(), lr=0., wd=0.1)
    before = copy.deepcopy(model)
    train(model, opt, batches(2))
    assert same_params(model, before)


def test_freeze_keeps_norm_params_trainable():
    model = make_model()
    opt = Adam(layer_groups(model), norm_params=norm_params(model))
    opt.freeze()
    assert opt.frozen_idx == 2
    norms = {id(p) for p in norm_params(model)}
    for i, g in enumerate(layer_groups(model)):
        for p in g: assert p.requires_grad == (i == 2 or id(p) in norms)
    opt.freeze(train_bn=False)
    assert [p.requires_grad for p in model.parameters()] == [False] * 8 + [True] * 2
    opt.freeze_to(1)
    assert opt.frozen_idx == 1 and all(p.requires_grad for g in layer_groups(model)[1:] for p in g)
    opt.unfreeze()
    assert opt.frozen_idx == 0 and all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match='3 layer groups'): opt.freeze_to(4)


def test_frozen_params_do_not_move():
    "Frozen params (grad None) are skipped by torch, weight decay included."
    model = make_model()
    opt = Adam(layer_groups(model), lr=0.1, wd=0.5, norm_params=norm_params(model))
    opt.freeze()
    frozen = [model[0].weight, model[0].bias, model[3].weight, model[3].bias]
    before = [p.detach().clone() for p in frozen]
    head_before = model[5].weight.detach().clone()
    bn_before = model[1].weight.detach().clone()
    train(model, opt, batches(3))
    assert all(torch.equal(a, p) for a, p in zip(before, frozen))
    assert not torch.equal(head_before, model[5].weight)
    assert not torch.equal(bn_before, model[1].weight)


def test_freeze_clears_stale_grads():
    model = make_model()
    opt = SGD(layer_groups(model), lr=0.1)
    model(batches(1)[0]).sum().backward()
    opt.freeze()
    before = model[0].weight.detach().clone()
    opt.step()
    assert model[0].weight.grad is None and torch.equal(before, model[0].weight)


@pytest.mark.parametrize('make_opt', [lambda g: Adam(g, lr=1e-2), lambda g: SGD(g, lr=1e-2, mom=0.9, wd=0.1),
                                      lambda g: RMSProp(g, lr=1e-3, mom=0.5, wd=0.1)])
def test_state_dict_round_trip(make_opt):
    m1 = make_model()
    opt1 = make_opt(layer_groups(m1))
    train(m1, opt1, batches(3))
    opt1.set_hyper('lr', [1e-3, 2e-3, 3e-3])
    m2 = copy.deepcopy(m1)
    opt2 = make_opt(layer_groups(m2))
    opt2.load_state_dict(opt1.state_dict())
    assert opt2.hypers == opt1.hypers
    assert [pg['lr'] for pg in opt2.torch_opt.param_groups] == [pg['lr'] for pg in opt1.torch_opt.param_groups]
    xs = batches(3, seed=2)
    train(m1, opt1, xs)
    train(m2, opt2, xs)
    assert same_params(m1, m2)
    # and without the saved state the steps differ (so the check above can fail)
    m3 = copy.deepcopy(m2)
    fresh = make_opt(layer_groups(m3))
    fresh.set_hyper('lr', [1e-3, 2e-3, 3e-3])
    train(m1, opt1, xs)
    train(m3, fresh, xs)
    assert not same_params(m1, m3)


def test_load_state_dict_checks_groups():
    opt = Adam(layer_groups(make_model()))
    with pytest.raises(ValueError, match='1 layer groups but this optimizer has 3'):
        opt.load_state_dict(Adam(make_model().parameters()).state_dict())


def test_sgd_decoupled_wd_matches_hand_computed_update():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4))
    lr, mom, wd = 0.1, 0.9, 0.2
    opt = SGD([w], lr=lr, mom=mom, wd=wd)
    assert opt.torch_opt.param_groups[0]['weight_decay'] == 0.  # torch's is L2: kept off
    p, buf = w.detach().clone(), None
    for step in range(3):
        g = torch.randn(4)
        w.grad = g.clone()
        opt.step()
        p = p * (1 - lr * wd)                        # decoupled decay first
        buf = g if buf is None else mom * buf + g    # torch's momentum buffer (dampening 0)
        p = p - lr * buf
        torch.testing.assert_close(w.detach(), p, rtol=0, atol=1e-7)


def test_sgd_l2_wd_is_torch_weight_decay():
    opt = SGD(make_model().parameters(), wd=0.3, decouple_wd=False)
    assert opt.torch_opt.param_groups[0]['weight_decay'] == 0.3


def test_rmsprop_without_momentum_equals_torch_rmsprop():
    "Without momentum fastai's and torch's RMSProp agree (with it they differ: tests/fastai_compat)."
    m1, m2 = make_model(), make_model()
    xs = batches(4)
    train(m1, RMSProp(m1.parameters(), lr=1e-3, sqr_mom=0.9, eps=1e-6, decouple_wd=False, wd=0.01), xs)
    train(m2, torch.optim.RMSprop(m2.parameters(), lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=0.01), xs)
    for a, b in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_rmsprop_refuses_torch_options_fastai_has_not():
    with pytest.raises(ValueError, match='centered=True'): RMSProp(make_model().parameters(), centered=True)


def test_layer_groups_input_forms():
    model = make_model()
    assert len(Adam(model.parameters()).layer_groups) == 1
    assert len(Adam([list(model[0].parameters()), model[5].parameters()]).layer_groups) == 2
    with pytest.raises(TypeError, match='layer_groups'): Adam([[1.0, 2.0]])
    with pytest.raises(ValueError, match='no parameters'): Adam([[], []])


def test_fast_kernels():
    """fused by default where torch has it (Adam, AdamW, SGD, also on the CPU), foreach otherwise; an explicit choice
    passes through."""
    m1, m2 = make_model(), make_model()
    for opt in (Adam(m1.parameters()), Adam(m1.parameters(), decouple_wd=False), SGD(m1.parameters(), mom=0.9)):
        assert opt.torch_opt.defaults['fused'] is True and not opt.torch_opt.defaults['foreach'] and opt.can_skip_step
    opt = Adam(m1.parameters(), foreach=True)
    assert opt.torch_opt.defaults['foreach'] is True and not opt.torch_opt.defaults.get('fused')
    assert not opt.can_skip_step
    assert not RMSProp(m1.parameters()).can_skip_step  # fastai's step, written with foreach ops
    opt = Adam(m1.parameters(), lr=1e-2, fused=True)
    assert opt.torch_opt.defaults['fused'] is True and not opt.torch_opt.defaults['foreach']
    xs = batches(3)
    train(m1, opt, xs)
    train(m2, torch.optim.AdamW(m2.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-5, fused=True), xs)
    assert same_params(m1, m2)


FUSED_AND_FOREACH = {
    'adamw': lambda g, **k: Adam(g, lr=3e-2, wd=0.1, **k),
    'adam_l2': lambda g, **k: Adam(g, lr=3e-2, wd=0.1, decouple_wd=False, **k),
    'sgd_mom_wd': lambda g, **k: SGD(g, lr=0.1, mom=0.9, wd=0.1, **k),
    'sgd_l2': lambda g, **k: SGD(g, lr=0.1, mom=0.9, wd=0.1, decouple_wd=False, **k),
    'sgd': lambda g, **k: SGD(g, lr=0.1, **k),
}


@pytest.mark.parametrize('name', list(FUSED_AND_FOREACH))
def test_fused_and_foreach_take_the_same_steps(name):
    """The default (fused, also on the CPU) and foreach take the same step from the same state, up to float
    rounding: weights and moments, at each of 12 steps. (Over many steps the two drift apart by more than rounding:
    Adam divides by the root of tiny second moments, which turns a rounding difference in a near-zero gradient into
    one of order lr.)"""
    make_opt = FUSED_AND_FOREACH[name]
    model = make_model()
    fused = make_opt(layer_groups(model))
    assert fused.torch_opt.defaults['fused']
    for x in batches(12):
        twin = copy.deepcopy(model)
        foreach = make_opt(layer_groups(twin), foreach=True)
        assert foreach.torch_opt.defaults['foreach']
        foreach.load_state_dict(fused.state_dict())
        for m, o in ((model, fused), (twin, foreach)):
            m(x).pow(2).mean().backward(); o.step(); o.zero_grad()
        for a, b in zip(model.parameters(), twin.parameters()): torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        s1, s2 = fused.torch_opt.state_dict()['state'], foreach.torch_opt.state_dict()['state']
        assert s1.keys() == s2.keys()
        for i in s1:
            assert s1[i].keys() == s2[i].keys()
            for k in s1[i]: torch.testing.assert_close(s1[i][k].float(), s2[i][k].float(), rtol=1e-6, atol=1e-7)
    assert not same_params(model, make_model())


def test_fused_and_foreach_train_alike():
    "Five steps of the same training, fused and foreach, end at the same weights up to the drift described above."
    m1, m2 = make_model(), make_model()
    xs = batches(5)
    train(m1, Adam(layer_groups(m1), lr=1e-3), xs)
    train(m2, Adam(layer_groups(m2), lr=1e-3, foreach=True), xs)
    for a, b in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def full_state(model, opt):
    "Weights, BatchNorm buffers and the torch optimizer's state (moments, step counts), cloned."
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {i: {k: v.clone() for k, v in s.items()} for i, s in opt.torch_opt.state_dict()['state'].items()})


def same_state(a, b):
    (ma, oa), (mb, ob) = a, b
    return (ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma) and oa.keys() == ob.keys()
            and all(oa[i].keys() == ob[i].keys() and all(torch.equal(oa[i][k], ob[i][k]) for k in oa[i]) for i in oa))


def bad_step(model, opt, value):
    "A batch whose loss is `value` (NaN or inf): stepped with found_inf from the gradients, then zero_grad."
    (model(batches(1, seed=9)[0]).pow(2).mean() * value).backward()
    found_inf = opt.flag_non_finite_grads(torch.zeros(()))
    assert found_inf.item() == 1
    opt.step(found_inf=found_inf)
    opt.zero_grad()


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
@pytest.mark.parametrize('name', list(FUSED_AND_FOREACH))
def test_a_step_with_found_inf_changes_nothing_and_training_goes_on_as_without_it(name, value):
    """Weights, moments and step counts are exactly those before the bad step, and the next steps are those of a run
    without it."""
    make_opt = FUSED_AND_FOREACH[name]
    m1, m2 = make_model(), make_model()
    opt1, opt2 = make_opt(layer_groups(m1)), make_opt(layer_groups(m2))
    xs = batches(6)
    train(m1, opt1, xs[:3]); train(m2, opt2, xs[:3])
    before = full_state(m1, opt1)
    m1.eval()  # BatchNorm's running statistics are StepGuard's business: the optimizer does not touch them
    bad_step(m1, opt1, value)
    m1.train()
    assert same_state(full_state(m1, opt1), before)
    train(m1, opt1, xs[3:]); train(m2, opt2, xs[3:])
    assert same_state(full_state(m1, opt1), full_state(m2, opt2))
    # a good step with found_inf = 0 is the ordinary step
    for m, o in ((m1, opt1), (m2, opt2)): m(xs[0]).pow(2).mean().backward()
    opt1.step(found_inf=opt1.flag_non_finite_grads(torch.zeros(()))); opt2.step()
    assert same_state(full_state(m1, opt1), full_state(m2, opt2))


def test_sgd_with_momentum_whose_first_step_is_skipped_then_trains_as_without_it():
    """torch's fused SGD would allocate the momentum buffers of a first step uninitialised, also when it skips it: they
    start at zero."""
    m1, m2 = make_model(), make_model()
    opt1, opt2 = SGD(layer_groups(m1), lr=0.1, mom=0.9), SGD(layer_groups(m2), lr=0.1, mom=0.9)
    m1.eval(); bad_step(m1, opt1, float('nan')); m1.train()
    assert same_params(m1, m2)
    zeros = [torch.equal(s['momentum_buffer'], torch.zeros_like(s['momentum_buffer']))
             for s in opt1.torch_opt.state.values()]
    assert all(zeros)
    xs = batches(4)
    train(m1, opt1, xs); train(m2, opt2, xs)
    assert same_params(m1, m2)


def test_flag_non_finite_grads():
    """1 for a NaN, +inf or -inf anywhere in a gradient (a parameter without one is left out), 0 otherwise; the
    gradients keep their values."""
    model = make_model()
    opt = Adam(layer_groups(model))
    model(batches(1)[0]).pow(2).mean().backward()
    model[5].bias.grad = None
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert opt.flag_non_finite_grads(torch.zeros(())).item() == 0
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, [p for p in model.parameters() if p.grad is not None]))
    assert opt.flag_non_finite_grads(torch.ones(())).item() == 1  # a flag already set (a bad loss) stays set
    for bad in (float('nan'), float('inf'), -float('inf')):
        g = model[3].weight.grad
        old, g[2, 1] = g[2, 1].item(), bad
        found = torch.zeros(())
        assert opt.flag_non_finite_grads(found) is found and found.item() == 1
        g[2, 1] = old


def test_found_inf_needs_an_optimizer_that_can_skip_on_the_device():
    model = make_model()
    for opt in (RMSProp(model.parameters()), Adam(model.parameters(), foreach=True)):
        model(batches(1)[0]).pow(2).mean().backward()
        with pytest.raises(ValueError, match='cannot skip a step on the device'): opt.step(found_inf=torch.zeros(()))
        opt.zero_grad()


def test_fused_sgd_with_momentum_steps_after_unfreeze():
    """torch's fused SGD fails when only some parameters of a group have a momentum buffer (after unfreeze): not through
    the wrapper."""
    m1, m2 = make_model(), make_model()
    opts = [SGD(layer_groups(m), lr=0.1, mom=0.9, wd=0.01, **k) for m, k in ((m1, {}), (m2, {'foreach': True}))]
    for o in opts: o.freeze()
    xs = batches(4)
    train(m1, opts[0], xs[:2]); train(m2, opts[1], xs[:2])
    for o in opts: o.unfreeze()
    train(m1, opts[0], xs[2:]); train(m2, opts[1], xs[2:])
    for a, b in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
