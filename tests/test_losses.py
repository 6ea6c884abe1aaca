"""minifast.losses against torch.nn.functional: values and gradients, every option, large logits,
shapes, the *Flat wrappers, and the error messages."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from minifast.losses import (BCEWithLogitsLossFlat, CrossEntropyLossFlat, L1LossFlat, LabelSmoothingCrossEntropyFlat,
                             MSELossFlat, cross_entropy, log_softmax, nll_loss, softmax)

N, C = 12, 5
OPTIONS = {
    'plain': {},
    'weight': dict(weight=True),
    'smooth': dict(label_smoothing=0.1),
    'ignore': dict(ignore=True),
    'ignore_class': dict(ignore_index=2),  # an ignore_index that is also a valid class
    'weight+smooth': dict(weight=True, label_smoothing=0.25),
    'weight+ignore': dict(weight=True, ignore=True),
    'all': dict(weight=True, ignore=True, label_smoothing=0.3),
    'all_class': dict(weight=True, ignore_index=0, label_smoothing=0.05),
}


def make_case(scale, option, dtype, shape=(N, C), seed=0):
    "Random logits at `scale`, targets, and the keyword arguments for both implementations."
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    t = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), generator=g)
    opts = dict(OPTIONS[option])
    kw = {}
    if opts.pop('weight', False):
        kw['weight'] = (torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.2).to(dtype)
    if opts.pop('ignore', False):
        t.view(-1)[::3] = -100
    kw.update(opts)
    return x, t, kw


def grads_and_value(fn, x, t, kw, reduction):
    x = x.clone().requires_grad_()
    out = fn(x, t, reduction=reduction, **kw)
    # a fixed random cotangent so 'none' checks every element's gradient, not just their sum
    g = torch.Generator().manual_seed(1)
    cot = torch.rand(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    (out * cot).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize('scale', [1, 30, 1e4])
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('option', list(OPTIONS))
def test_cross_entropy_matches_torch_float64(scale, reduction, option):
    x, t, kw = make_case(scale, option, torch.float64)
    ours, our_grad = grads_and_value(cross_entropy, x, t, kw, reduction)
    ref, ref_grad = grads_and_value(F.cross_entropy, x, t, kw, reduction)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    assert torch.isfinite(ours).all() and torch.isfinite(our_grad).all()
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(our_grad, ref_grad, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize('scale', [1, 30, 1e4])
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('option', ['plain', 'all', 'all_class'])
def test_cross_entropy_matches_torch_float32(scale, reduction, option):
    x, t, kw = make_case(scale, option, torch.float32)
    ours, our_grad = grads_and_value(cross_entropy, x, t, kw, reduction)
    ref, ref_grad = grads_and_value(F.cross_entropy, x, t, kw, reduction)
    assert ours.dtype == torch.float32
    assert torch.isfinite(ours).all() and torch.isfinite(our_grad).all()
    torch.testing.assert_close(ours, ref, rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(our_grad, ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('option', ['plain', 'all'])
def test_cross_entropy_nd_input(reduction, option):
    "Scores (N, C, H, W) with targets (N, H, W), and (N, C, L) with (N, L)."
    for shape in [(3, C, 4, 6), (2, C, 7)]:
        x, t, kw = make_case(3, option, torch.float64, shape=shape)
        ours, our_grad = grads_and_value(cross_entropy, x, t, kw, reduction)
        ref, ref_grad = grads_and_value(F.cross_entropy, x, t, kw, reduction)
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(our_grad, ref_grad, rtol=1e-6, atol=1e-12)


def test_cross_entropy_unbatched():
    x = torch.randn(C, dtype=torch.float64)
    for red in ('mean', 'sum', 'none'):
        for t in (torch.tensor(3), torch.tensor(-100)):
            ours = cross_entropy(x, t, reduction=red, label_smoothing=0.1)
            ref = F.cross_entropy(x, t, reduction=red, label_smoothing=0.1)
            assert ours.shape == ref.shape
            torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-12, equal_nan=True)


def test_all_ignored_mean_is_nan_like_torch():
    x, t = torch.randn(4, C, dtype=torch.float64), torch.full((4,), -100)
    assert torch.isnan(cross_entropy(x, t)) and torch.isnan(F.cross_entropy(x, t))
    assert cross_entropy(x, t, reduction='sum') == 0


def test_integer_target_dtypes_and_half_input():
    x, t, _ = make_case(30, 'plain', torch.float32)
    for dtype in (torch.int32, torch.uint8, torch.int16):
        torch.testing.assert_close(cross_entropy(x, t.to(dtype)), F.cross_entropy(x, t))
    for dtype in (torch.float16, torch.bfloat16):  # computed in float32, like autocast does
        out = cross_entropy((x * 1000).to(dtype), t)
        assert out.dtype == torch.float32 and torch.isfinite(out)
        torch.testing.assert_close(out, F.cross_entropy((x * 1000).to(dtype).float(), t))


def test_nll_loss_matches_torch():
    for option in ('plain', 'weight+ignore', 'ignore_class'):
        x, t, kw = make_case(5, option, torch.float64, shape=(N, C, 3))
        kw.pop('label_smoothing', None)
        lp = torch.log_softmax(x, 1)
        for red in ('mean', 'sum', 'none'):
            torch.testing.assert_close(nll_loss(lp, t, reduction=red, **kw), F.nll_loss(lp, t, reduction=red, **kw),
                                       rtol=1e-6, atol=1e-12)


def test_log_softmax_and_softmax():
    for scale in (1, 30, 1e4):
        x, _, _ = make_case(scale, 'plain', torch.float64, shape=(4, 3, C))
        for dim in (0, 1, -1):
            torch.testing.assert_close(log_softmax(x, dim), torch.log_softmax(x, dim), rtol=1e-6, atol=1e-12)
            torch.testing.assert_close(softmax(x, dim), torch.softmax(x, dim), rtol=1e-6, atol=1e-12)


def test_naive_softmax_log_overflows_but_ours_does_not():
    "Why the max is subtracted: at scale 1e4 exp overflows float32, and the naive loss is inf/nan."
    x, t, _ = make_case(1e4, 'plain', torch.float32)
    naive_probs = x.exp() / x.exp().sum(-1, keepdim=True)
    naive = -naive_probs[torch.arange(len(t)), t].log()
    assert torch.isinf(x.exp()).any()
    assert not torch.isfinite(naive).all()
    for red in ('mean', 'sum', 'none'):
        ours = cross_entropy(x, t, reduction=red, label_smoothing=0.1)
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours, F.cross_entropy(x, t, reduction=red, label_smoothing=0.1),
                                   rtol=2e-5, atol=1e-5)


def test_gradient_is_softmax_minus_onehot():
    x, t, _ = make_case(3, 'plain', torch.float64)
    xg = x.clone().requires_grad_()
    cross_entropy(xg, t).backward()
    expected = (torch.softmax(x, -1) - F.one_hot(t, C)) / len(t)
    torch.testing.assert_close(xg.grad, expected, rtol=1e-6, atol=1e-12)


def test_written_from_scratch(monkeypatch):
    "Our cross_entropy must not call torch's own cross_entropy, log_softmax or nll_loss."
    def forbidden(*args, **kwargs): raise AssertionError('called a torch loss building block')
    for mod, name in [(F, 'cross_entropy'), (F, 'log_softmax'), (F, 'nll_loss'), (F, 'softmax'), (torch, 'log_softmax'),
                      (torch, 'softmax'), (torch, 'logsumexp'), (torch.Tensor, 'log_softmax'),
                      (torch.Tensor, 'logsumexp'),
                      (torch.Tensor, 'softmax'), (torch._C._nn, 'nll_loss_nd'), (torch._C._nn, 'cross_entropy_loss')]:
        monkeypatch.setattr(mod, name, forbidden)
    x, t, kw = make_case(30, 'all', torch.float32, shape=(4, C, 3))
    xg = x.clone().requires_grad_()
    cross_entropy(xg, t, **kw).backward()
    CrossEntropyLossFlat(axis=1)(x, t)
    assert torch.isfinite(xg.grad).all()


@pytest.mark.parametrize('call, exc, words', [
    (lambda x, t: cross_entropy(x, t.float()), TypeError, ['target', 'torch.float32', 'long()']),
    (lambda x, t: cross_entropy(x, t.bool()), TypeError, ['target', 'torch.bool']),
    (lambda x, t: cross_entropy(x.long(), t), TypeError, ['input', 'float']),
    (lambda x, t: cross_entropy(x, t[:-1]), ValueError, ['target', '(12, 5)', '(11,)', '(12,)']),
    (lambda x, t: cross_entropy(x, t[:, None]), ValueError, ['target', '(12, 1)']),
    (lambda x, t: cross_entropy(x, torch.where(t == 0, 7, t)), ValueError, ['target', '7', '5 classes', '[0, 5)']),
    (lambda x, t: cross_entropy(x, torch.where(t == 0, -1, t)), ValueError, ['target', '-1']),
    (lambda x, t: cross_entropy(x, t, weight=torch.ones(4)), ValueError, ['weight', '(5)', '(4,)']),
    (lambda x, t: cross_entropy(x, t, reduction='avg'), ValueError, ['reduction', "'avg'"]),
    (lambda x, t: cross_entropy(x, t, label_smoothing=1.5), ValueError, ['label_smoothing', '1.5']),
    (lambda x, t: nll_loss(x, t.float()), TypeError, ['nll_loss', 'target']),
    (lambda x, t: CrossEntropyLossFlat()(x, t[:-1]), ValueError, ['CrossEntropyLossFlat', '(12, 5)', '(11,)']),
    (lambda x, t: CrossEntropyLossFlat(reduction='mena'), ValueError, ['CrossEntropyLossFlat', "'mena'"]),
    (lambda x, t: CrossEntropyLossFlat(torch.ones(5), 3), TypeError, ['positional']),
    (lambda x, t: MSELossFlat()(x, t), ValueError, ['MSELossFlat', '(12, 5)', '(12,)']),
    (lambda x, t: BCEWithLogitsLossFlat()(x, t), ValueError, ['BCEWithLogitsLossFlat', '(12, 5)', '(12,)']),
])
def test_errors_name_the_culprit(call, exc, words):
    x, t, _ = make_case(1, 'plain', torch.float32)
    t[0] = 0
    with pytest.raises(exc) as info: call(x, t)
    for word in words: assert word in str(info.value), (word, str(info.value))


def test_ignore_index_may_be_out_of_range():
    x, t, _ = make_case(1, 'plain', torch.float64)
    t[:3] = 99
    torch.testing.assert_close(cross_entropy(x, t, ignore_index=99), F.cross_entropy(x, t, ignore_index=99))


# --- the *Flat wrappers -----------------------------------------------------------------------------------------

def test_cross_entropy_flat_axis1_on_images():
    x, t, kw = make_case(4, 'all', torch.float64, shape=(2, C, 3, 4))
    loss = CrossEntropyLossFlat(axis=1, **kw)
    torch.testing.assert_close(loss(x, t), F.cross_entropy(x, t, **kw), rtol=1e-6, atol=1e-12)
    per_pixel = CrossEntropyLossFlat(axis=1, reduction='none', **kw)(x, t)
    assert per_pixel.shape == (2 * 3 * 4,)
    torch.testing.assert_close(per_pixel, F.cross_entropy(x, t, reduction='none', **kw).reshape(-1),
                               rtol=1e-6, atol=1e-12)
    unflat = CrossEntropyLossFlat(axis=1, reduction='none', flatten=False, **kw)(x, t)
    torch.testing.assert_close(unflat, F.cross_entropy(x, t, reduction='none', **kw), rtol=1e-6, atol=1e-12)
    # classes last, as a channels-last model would give them
    x_last = x.permute(0, 2, 3, 1)
    torch.testing.assert_close(CrossEntropyLossFlat(**kw)(x_last, t), F.cross_entropy(x, t, **kw),
                               rtol=1e-6, atol=1e-12)


def test_cross_entropy_flat_activation_decodes_and_repr():
    x, t, _ = make_case(3, 'plain', torch.float32, shape=(2, C, 3, 4))
    loss = CrossEntropyLossFlat(axis=1)
    torch.testing.assert_close(loss.activation(x), torch.softmax(x, dim=1))
    assert torch.equal(loss.decodes(loss.activation(x)), x.argmax(1)) and loss.decodes(x).shape == (2, 3, 4)
    assert repr(loss) == "CrossEntropyLossFlat(axis=1, flatten=True, reduction='mean')"
    r = repr(CrossEntropyLossFlat(weight=torch.tensor([1., 2.]), label_smoothing=0.1, ignore_index=3))
    assert r.startswith('CrossEntropyLossFlat(axis=-1') and 'weight=[1.0, 2.0]' in r and 'label_smoothing=0.1' in r
    assert 'ignore_index=3' in r
    assert 'thresh=0.5' in repr(BCEWithLogitsLossFlat())


def test_cross_entropy_flat_positional_weight_and_buffer():
    x, t, kw = make_case(2, 'weight', torch.float32)
    loss = CrossEntropyLossFlat(kw['weight'])
    torch.testing.assert_close(loss(x, t), F.cross_entropy(x, t, weight=kw['weight']))
    assert 'weight' in dict(loss.named_buffers())
    torch.testing.assert_close(loss(x, t[:, None]), F.cross_entropy(x, t, weight=kw['weight']))  # (N, 1) targets


def test_label_smoothing_flat():
    x, t, _ = make_case(3, 'plain', torch.float64)
    torch.testing.assert_close(LabelSmoothingCrossEntropyFlat()(x, t), F.cross_entropy(x, t, label_smoothing=0.1))
    torch.testing.assert_close(LabelSmoothingCrossEntropyFlat(eps=0.3, reduction='sum')(x, t),
                               F.cross_entropy(x, t, label_smoothing=0.3, reduction='sum'))


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_bce_flat_matches_torch(reduction):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64) * 10
    t = torch.randint(0, 2, (6, 4), generator=g)
    w, pw = torch.rand(4, generator=g, dtype=torch.float64), torch.rand(4, generator=g, dtype=torch.float64) * 3
    ours = BCEWithLogitsLossFlat(weight=w, pos_weight=pw, reduction=reduction)(x, t)
    ref = F.binary_cross_entropy_with_logits(x, t.double(), weight=w, pos_weight=pw, reduction=reduction)
    torch.testing.assert_close(ours, ref.reshape(-1) if reduction == 'none' else ref)
    # classes on axis 1 of (N, C, H, W): pos_weight follows the class axis
    xi = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)
    ti = torch.randint(0, 2, xi.shape, generator=g).bool()
    ours = BCEWithLogitsLossFlat(axis=1, pos_weight=pw, reduction=reduction)(xi, ti)
    ref = F.binary_cross_entropy_with_logits(xi.movedim(1, -1), ti.movedim(1, -1).double(), pos_weight=pw,
                                             reduction=reduction)
    torch.testing.assert_close(ours, ref.reshape(-1) if reduction == 'none' else ref)


def test_bce_flat_activation_decodes():
    loss = BCEWithLogitsLossFlat(thresh=0.7)
    x = torch.tensor([[-2., 0.5, 1.0, 3.]])
    torch.testing.assert_close(loss.activation(x), torch.sigmoid(x))
    assert loss.decodes(loss.activation(x)).tolist() == [[False, False, True, True]]  # sigmoid: .12 .62 .73 .95
    # single-output binary classifier: (N, 1) scores against (N,) labels
    x1, t1 = torch.randn(5, 1), torch.tensor([0, 1, 1, 0, 1])
    torch.testing.assert_close(BCEWithLogitsLossFlat()(x1, t1),
                               F.binary_cross_entropy_with_logits(x1[:, 0], t1.float()))


def test_regression_flat_losses():
    g = torch.Generator().manual_seed(4)
    pred, targ = torch.randn(7, 1, generator=g), torch.randn(7, generator=g)
    for cls, fn in ((MSELossFlat, F.mse_loss), (L1LossFlat, F.l1_loss)):
        for red in ('mean', 'sum', 'none'):
            torch.testing.assert_close(cls(reduction=red)(pred, targ), fn(pred[:, 0], targ, reduction=red))
        torch.testing.assert_close(cls()(pred, targ.half()), fn(pred[:, 0], targ.half().float()))  # targets floatified
        assert cls().decodes(pred) is pred and cls().activation(pred) is pred
    # 4 / 4 elements
    assert MSELossFlat()(torch.tensor([[1., 2.], [3., 4.]]), torch.tensor([[1., 2.], [3., 6.]])) == 1.0


def test_flat_losses_are_modules_and_move():
    loss = CrossEntropyLossFlat(weight=torch.ones(3)).to(torch.float64)
    assert isinstance(loss, torch.nn.Module) and loss.weight.dtype == torch.float64
    assert list(itertools.chain(loss.parameters())) == []


def test_flat_loss_moves_its_weight_to_the_input_device_once():
    loss = CrossEntropyLossFlat(weight=torch.ones(3))
    x, t = torch.randn(4, 3, device='meta'), torch.randint(0, 3, (4,), device='meta')
    loss(x, t)
    assert loss.weight.device.type == 'meta' and dict(loss.named_buffers())['weight'] is loss.weight
    bce = BCEWithLogitsLossFlat(pos_weight=torch.ones(3))
    bce(x, t[:, None].expand(4, 3))
    assert bce.pos_weight.device.type == 'meta' and bce.weight is None
