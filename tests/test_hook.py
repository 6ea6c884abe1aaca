"Hooks, HookCallback and ActivationStats (minifast.callback.hook)."
import matplotlib
import pytest
import torch
from torch import nn

from minifast.callback.hook import ActivationStats, Hook, HookCallback, Hooks, hook_output, hook_outputs
from minifast.learner import Learner
from minifast.test_utils import synth_dls, synth_mlp

matplotlib.use('Agg')


def _fit(learn, n=1):
    with learn.no_bar(), learn.no_results_table(): learn.fit(n)


def _no_hooks(model):
    return all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_hook_output_equals_a_plain_forward_hook():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    x = torch.randn(2, 3, 8, 8)
    seen = []
    handle = model[1].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        with hook_output(model[1]) as h: model(x)
    finally: handle.remove()
    assert torch.equal(h.stored, seen[0])
    assert _no_hooks(model)


def test_hook_cpu_and_detach_options():
    lin = nn.Linear(3, 2)
    with Hook(lin, lambda m, i, o: o, detach=False) as h: lin(torch.randn(4, 3))
    assert h.stored.requires_grad
    with Hook(lin, lambda m, i, o: i[0], cpu=True) as h: lin(torch.ones(4, 3))
    assert h.stored.device.type == 'cpu' and torch.equal(h.stored, torch.ones(4, 3))


@pytest.mark.parametrize('make', [
    lambda m: Hook(m[0], lambda *a: None),
    lambda m: Hooks(m, lambda *a: None),
    lambda m: hook_output(m[0]),
    lambda m: hook_outputs(list(m)),
    lambda m: hook_output(m[0], grad=True),
])
def test_every_hook_is_removed_after_an_exception_inside_the_with(make):
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    with pytest.raises(RuntimeError, match='boom'):
        with make(model): raise RuntimeError('boom')
    assert _no_hooks(model)


def test_gradient_hook_stores_the_gradient_of_the_output():
    lin = nn.Linear(3, 2)
    x = torch.randn(5, 3, requires_grad=True)
    with hook_output(lin, grad=True) as hg:
        (lin(x) * torch.arange(2.)).sum().backward()
    assert torch.equal(hg.stored[0], torch.arange(2.).expand(5, 2))


def test_hooks_store_in_module_order():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    with hook_outputs(model) as hs:
        out = model(x)
        assert len(hs) == 3
        assert torch.equal(hs.stored[2], out.detach())
        assert torch.equal(hs.stored[1], torch.relu(hs.stored[0]))


class _Count(HookCallback):
    def before_fit(self):
        self.n = 0
        super().before_fit()

    def hook(self, m, i, o): self.n += 1


def test_hook_callback_every_hooks_only_every_nth_training_batch():
    dls = synth_dls(n=256, bs=32, n_valid=64)  # 6 training batches
    cb = _Count(modules=None, every=2)
    learn = Learner(dls, synth_mlp(seed=0), cbs=cb)
    _fit(learn)
    assert cb.n == 3 * 3  # batches 0, 2, 4; three layers with parameters
    assert _no_hooks(learn.model)


def test_hook_callback_include_paramless_and_remove_end():
    cb = _Count(include_paramless=True, remove_end=False)
    learn = Learner(synth_dls(), synth_mlp(seed=0), cbs=cb)
    _fit(learn)
    assert len(cb.hooks) == 4  # Linear, ReLU, BatchNorm, Linear
    assert not _no_hooks(learn.model)
    cb.remove()
    assert _no_hooks(learn.model)


def test_hook_callback_removes_its_hooks_when_training_fails():
    class Boom(_Count):
        def after_batch(self): raise RuntimeError('boom')
    learn = Learner(synth_dls(), synth_mlp(seed=0), cbs=Boom(remove_end=False))
    with pytest.raises(RuntimeError, match='boom'): _fit(learn)
    assert _no_hooks(learn.model)


def test_activation_stats_match_values_computed_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    dls = synth_dls(n=96, bs=64, n_valid=32)  # one training batch: the whole training set
    learn = Learner(dls, model, lr=0., cbs=ActivationStats(with_hist=True))
    _fit(learn, 2)
    x = torch.cat([b[0] for b in dls.train])
    acts = [model[0](x), model[2](model[1](model[0](x)))]
    stats = learn.activation_stats.stats
    assert len(stats) == 2 and len(stats[0]) == 2  # two epochs of one batch; two layers
    for row in stats:
        for d, a in zip(row, acts):
            a = a.detach()
            assert d['mean'] == pytest.approx(a.mean().item(), abs=1e-5)
            assert d['std'] == pytest.approx(a.std().item(), abs=1e-5)
            assert d['near_zero'] == pytest.approx((a <= 0.05).float().mean().item(), abs=1e-6)
            assert torch.equal(d['hist'], torch.histc(a, 40, 0., 10.))
    assert torch.allclose(learn.activation_stats.hist(1), torch.histc(acts[1].detach(), 40, 0., 10.).log1p()[:, None]
                          .expand(40, 2))


def test_activation_stats_in_fit_on_synthetic_data():
    dls = synth_dls()
    learn = Learner(dls, synth_mlp(seed=0), cbs=ActivationStats(with_hist=True))
    _fit(learn, 2)
    cb = learn.activation_stats
    assert len(cb.stats) == 2 * len(dls.train)
    assert cb.layer_stats(-1).shape == (3, 2 * len(dls.train))
    assert torch.isfinite(cb.layer_stats(0)).all()
    fig = cb.plot_layer_stats(0)
    assert len(fig.axes) == 3
    ax = cb.color_dim(0)
    assert ax.images[0].get_array().shape == (40, 2 * len(dls.train))
    assert _no_hooks(learn.model)
    import matplotlib.pyplot as plt
    plt.close('all')


def test_activation_stats_stay_on_the_device_until_the_epoch_ends():
    class Peek(ActivationStats):
        def after_batch(self):
            super().after_batch()
            self.pending_sizes = getattr(self, 'pending_sizes', []) + [len(self._pending)]
    dls = synth_dls()
    learn = Learner(dls, synth_mlp(seed=0), cbs=Peek())
    _fit(learn)
    assert learn.peek.pending_sizes[:len(dls.train)] == list(range(1, len(dls.train) + 1))
    assert learn.peek._pending == []


def test_activation_stats_hist_needs_with_hist():
    learn = Learner(synth_dls(), synth_mlp(seed=0), cbs=ActivationStats())
    _fit(learn)
    with pytest.raises(ValueError, match='with_hist=True'): learn.activation_stats.hist(0)


# ---- class activation maps (minifast.vision.cam, built on these hooks) ------------------------------------------
from minifast.vision.cam import class_activation_map, grad_cam, show_cam  # noqa: E402


def _body_head_cnn(seed=0):
    "A vision_learner-shaped model: Sequential(body, head) with a pool -> linear head."
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.ReLU())
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4))
    return nn.Sequential(body, head)


def test_cam_equals_an_independent_einsum_over_the_body_output():
    model = _body_head_cnn()
    x = torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        act = model[0](x[None])[0]
        pred = int(model(x[None]).argmax())
    W = model[1][2].weight.detach()
    for cls in range(4):
        expected = sum(W[cls, k] * act[k] for k in range(act.shape[0]))
        assert torch.allclose(class_activation_map(model, x, cls=cls), expected, atol=1e-5)
    assert torch.allclose(class_activation_map(model, x), torch.einsum('ck,kij->cij', W, act)[pred], atol=1e-5)
    assert class_activation_map(model, x).shape == (6, 6)


def test_grad_cam_on_the_last_conv_layer_is_cam_up_to_a_positive_scale():
    model = _body_head_cnn()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    for cls in range(4):
        cam = class_activation_map(model, x, cls=cls)
        g = grad_cam(model, x, model[0][3], cls=cls)
        scale = (g * cam).sum() / (cam * cam).sum()
        assert scale > 0
        assert torch.allclose(g, scale * cam, atol=1e-6)
        assert scale.item() == pytest.approx(1 / 36)  # the mean over the 6x6 pixels
    assert all(p.grad is None for p in model.parameters())


def test_cam_restores_the_mode_and_leaves_no_hooks():
    model = _body_head_cnn().train()
    x = torch.randn(3, 12, 12)
    class_activation_map(model, x)
    grad_cam(model, x)
    assert model.training and _no_hooks(model)


def test_cam_errors_name_the_problem():
    model = _body_head_cnn()
    with pytest.raises(ValueError, match='batch of one'): class_activation_map(model, torch.randn(2, 3, 12, 12))
    with pytest.raises(ValueError, match='6 channels'): class_activation_map(model, torch.randn(3, 12, 12),
                                                                             layer=model[0][1])
    assert _no_hooks(model)


def test_show_cam_overlays_the_map_on_the_decoded_image(colour_learner, colour_folder):
    learn, dls = colour_learner, colour_learner.dls
    ax = show_cam(learn, colour_folder/'red'/'red_0.jpg')
    assert len(ax.images) == 2
    assert ax.images[1].get_array().shape == (24, 24)
    assert ax.images[0].get_array().shape[:2] == (24, 24)
    ax = show_cam(learn, dls.test_dl([colour_folder/'blue'/'blue_1.jpg']).one_batch()[0], method='grad_cam', cls=0)
    assert len(ax.images) == 2
    with pytest.raises(ValueError, match="'cam' or 'grad_cam'"): show_cam(learn, colour_folder/'red'/'red_0.jpg',
                                                                           method='gradcam')


# ---- ActivationStats' fused statistics (sum, norm, count) and sampled histograms ---------------------------------
def _hook_once(cb, o):
    "What ActivationStats' hook stores for output `o`, then the statistics `_flush` derives from it."
    from types import SimpleNamespace
    cb.learn = SimpleNamespace(training=True)
    s, q, c, n, h = cb.hook(None, None, o)
    cb._pending = [(s[None], q[None], c[None], (n,), None if h is None else h[None])]
    cb.stats = []
    cb._flush()
    return cb.stats[0][0]


@pytest.mark.parametrize('fmt', [torch.contiguous_format, torch.channels_last])
def test_activation_stats_are_exact_on_a_large_channels_last_output(fmt):
    g = torch.Generator().manual_seed(0)
    o = (torch.randn(8, 16, 32, 32, generator=g) * 2 + 3).relu().contiguous(memory_format=fmt)
    d = _hook_once(ActivationStats(with_hist=True, hist_sample=None), o)
    ref = o.double()
    assert d['mean'] == pytest.approx(ref.mean().item(), rel=1e-6)
    assert d['std'] == pytest.approx(ref.std().item(), rel=1e-5)
    assert d['near_zero'] == (o <= 0.05).sum().item() / o.numel()
    assert torch.equal(d['hist'], torch.histc(o, 40, 0., 10.))  # hist_sample=None: every value counted


def test_activation_stats_hist_of_a_sample_is_scaled_to_the_layer_and_close_to_the_full_one():
    g = torch.Generator().manual_seed(1)
    o = (torch.randn(8, 16, 32, 32, generator=g) * 2 + 3).contiguous(memory_format=torch.channels_last)
    d = _hook_once(ActivationStats(with_hist=True, hist_sample=4096), o)
    full = torch.histc(o, 40, 0., 10.)
    assert not torch.equal(d['hist'], full)  # a sample, not every value
    assert d['hist'].sum().item() == pytest.approx(full.sum().item(), rel=0.02)
    assert ((d['hist'] - full).abs().sum() / full.sum()).item() < 0.1
    assert d['mean'] == pytest.approx(o.double().mean().item(), rel=1e-6)  # the statistics stay exact


def test_activation_stats_of_bfloat16_outputs_are_those_of_the_values():
    o = torch.randn(4, 8, 16, 16, generator=torch.Generator().manual_seed(2)).bfloat16()
    d = _hook_once(ActivationStats(), o)
    ref = o.double()
    assert d['mean'] == pytest.approx(ref.mean().item(), abs=1e-6)
    assert d['std'] == pytest.approx(ref.std().item(), rel=1e-5)
    assert d['near_zero'] == (ref <= 0.05).sum().item() / o.numel()


def test_activation_stats_hist_sample_must_be_positive():
    with pytest.raises(ValueError, match='hist_sample=0'): ActivationStats(hist_sample=0)
