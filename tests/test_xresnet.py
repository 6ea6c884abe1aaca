"minifast.layers and xresnet: Module without super().__init__, init_cnn, ResNet-D blocks, parameter counts, training."
import copy
import math

import pytest
import torch
from torch import nn

from minifast.layers import ConvLayer, Module, NormType, ResBlock, init_cnn
from minifast.vision.models.xresnet import XResNet, xresnet18, xresnet34, xresnet50, xresnet101


def n_params(m): return sum(p.numel() for p in m.parameters())


# Parameter counts by formula, from the layer table of the ResNet paper (He et al. 2016, table 1).
def conv(ni, nf, k): return ni * nf * k * k          # bias-free: a norm follows
def bn(c): return 2 * c


def stem_7x7(): return conv(3, 64, 7) + bn(64)
def stem_3conv(): return conv(3, 32, 3) + bn(32) + conv(32, 32, 3) + bn(32) + conv(32, 64, 3) + bn(64)


def shortcut(ni, nf): return conv(ni, nf, 1) + bn(nf) if ni != nf else 0   # ResNet-D: the pool has no parameters


def basic(ni, nf): return conv(ni, nf, 3) + bn(nf) + conv(nf, nf, 3) + bn(nf) + shortcut(ni, nf)


def bottleneck(ni, w):
    return conv(ni, w, 1) + bn(w) + conv(w, w, 3) + bn(w) + conv(w, 4 * w, 1) + bn(4 * w) + shortcut(ni, 4 * w)


def resnet_count(stem, expansion, layers, n_out=1000):
    total, ni = stem, 64
    for width, n_blocks in zip([64, 128, 256, 512], layers):
        for _ in range(n_blocks):
            total += basic(ni, width) if expansion == 1 else bottleneck(ni, width)
            ni = width * expansion
    return total + ni * n_out + n_out


def test_module_subclass_without_super_init_registers_parameters_and_submodules():
    class Net(Module):   # as fastbook chapters 13-14 write it
        def __init__(self, n_in, n_out):
            self.lin = nn.Linear(n_in, n_out)
            self.scale = nn.Parameter(torch.full((n_out,), 2.0))
            self.register_buffer('offset', torch.ones(n_out))
        def forward(self, x): return self.lin(x) * self.scale + self.offset

    class Deeper(Net):
        def __init__(self): super().__init__(4, 3); self.extra = nn.Linear(3, 1)
        def forward(self, x): return self.extra(super().forward(x))

    net = Net(4, 3)
    assert sorted(n for n, _ in net.named_parameters()) == ['lin.bias', 'lin.weight', 'scale']
    assert list(dict(net.named_children())) == ['lin'] and 'offset' in net.state_dict()
    x = torch.randn(5, 4)
    assert torch.allclose(net(x), net.lin(x) * 2 + 1)
    assert torch.equal(copy.deepcopy(net)(x), net(x))
    deeper = Deeper()
    assert n_params(deeper) == 4 * 3 + 3 + 3 + 3 + 1 and deeper(x).shape == (5, 1)
    loaded = Net(4, 3)
    loaded.load_state_dict(net.state_dict())
    assert torch.equal(loaded(x), net(x))


def test_module_subclass_that_calls_super_init_keeps_what_it_set_before():
    class Late(Module):
        def __init__(self):
            self.a = nn.Linear(2, 2)
            super().__init__()   # must not wipe `a`
    assert [n for n, _ in Late().named_parameters()] == ['a.weight', 'a.bias']


def test_conv_layer_norm_types():
    cl = ConvLayer(3, 8, stride=2)
    assert [type(m) for m in cl] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] and cl[0].bias is None
    assert cl(torch.randn(2, 3, 16, 16)).shape == (2, 8, 8, 8)
    assert (ConvLayer(3, 8, norm_type=NormType.BatchZero)[1].weight == 0).all()
    assert (ConvLayer(3, 8, norm_type=NormType.InstanceZero)[1].weight == 0).all()
    assert isinstance(ConvLayer(3, 8, ndim=3, norm_type=NormType.Instance)[1], nn.InstanceNorm3d)
    weight_norm = ConvLayer(3, 8, norm_type=NormType.Weight, act_cls=None)
    assert len(weight_norm) == 1 and weight_norm[0].bias is not None
    assert hasattr(weight_norm[0], 'parametrizations')


def test_init_cnn_zeroes_every_bias_and_keeps_zero_norm_weights():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Sequential(nn.Linear(8, 4)),
                      ResBlock(1, 8, 8), ConvLayer(8, 8, norm_type=None))
    with torch.no_grad():
        for p in m.parameters(): p.add_(1.0)   # every bias non-zero before
    m[3].convpath[1][1].weight.data.zero_()
    init_cnn(m)
    biases = [p for n, p in m.named_parameters() if n.endswith('bias')]
    assert len(biases) == 6 and all((b == 0).all() for b in biases)
    assert (m[3].convpath[1][1].weight == 0).all()   # the zero-initialised norm survives
    w = m[0].weight   # kaiming normal, fan_in = 27: std sqrt(2/27)
    assert 0.5 * math.sqrt(2 / 27) < w.std().item() < 1.5 * math.sqrt(2 / 27)
    assert (xresnet18(n_out=3)[-1].bias == 0).all()


def test_resblock_resnet_d_shortcut_pools_then_convolves():
    rb = ResBlock(4, 64, 128, stride=2)   # bottleneck 256 -> 512 channels, halving the size
    pool, conv_layer = rb.idpath
    assert isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 2 and pool.stride == 2
    assert conv_layer[0].kernel_size == (1, 1) and conv_layer[0].stride == (1, 1)
    assert [c[0].stride for c in rb.convpath] == [(1, 1), (2, 2), (1, 1)]   # ResNet-B: stride on the 3x3
    assert (rb.convpath[-1][1].weight == 0).all() and rb.convpath[-1][-1].__class__ is nn.BatchNorm2d
    assert rb(torch.randn(2, 256, 9, 9)).shape == (2, 512, 5, 5)
    assert len(ResBlock(1, 64, 64).idpath) == 0
    assert [type(m) for m in ResBlock(1, 32, 32, stride=2).idpath] == [nn.AvgPool2d]
    with pytest.raises(NotImplementedError, match='reduction=16'): ResBlock(1, 8, 8, reduction=16)


@pytest.mark.parametrize('builder,expansion,layers', [(xresnet18, 1, [2, 2, 2, 2]), (xresnet50, 4, [3, 4, 6, 3])])
def test_xresnet_parameter_counts_match_the_paper_table(builder, expansion, layers):
    assert n_params(builder(n_out=1000)) == resnet_count(stem_3conv(), expansion, layers)
    assert n_params(builder(n_out=10)) == resnet_count(stem_3conv(), expansion, layers, n_out=10)


def test_xresnet50_differs_from_torchvision_resnet50_only_by_the_stem():
    tvm = pytest.importorskip('torchvision.models')
    tv = n_params(tvm.resnet50(weights=None))
    assert tv == 25_557_032 == resnet_count(stem_7x7(), 4, [3, 4, 6, 3])   # the formula is right for torchvision
    diff = stem_3conv() - stem_7x7()   # the ResNet-D shortcut pools before its conv: same parameters
    assert n_params(xresnet50()) == tv + diff
    assert n_params(xresnet18()) == n_params(tvm.resnet18(weights=None)) + diff


@pytest.mark.parametrize('size', [64, 128])
@pytest.mark.parametrize('builder', [xresnet18, xresnet34, xresnet50])
def test_xresnet_output_shapes(builder, size):
    torch.manual_seed(0)
    m = builder(n_out=7).eval()
    with torch.no_grad(): out = m(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_xresnet101_depth_and_custom_input_channels():
    m = xresnet101(n_out=5, c_in=1)
    assert [len(m[i]) for i in range(4, 8)] == [3, 4, 23, 3]
    with torch.no_grad(): assert m.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 5)
    with pytest.raises(ValueError, match='odd'): XResNet(ResBlock, 1, [1, 1, 1, 1], ks=4)


@pytest.mark.parametrize('builder', [xresnet18, xresnet34, xresnet50, xresnet101])
def test_pretrained_xresnet_raises_a_clear_value_error(builder):
    with pytest.raises(ValueError, match=f'no pretrained {builder.__name__} weights.*from scratch'):
        builder(pretrained=True)


def test_chapter7_learner_trains_xresnet50_on_synthetic_32px_images():
    from minifast.data.core import DataLoaders, Datasets
    from minifast.data.transforms import Categorize
    from minifast.learner import Learner
    from minifast.losses import CrossEntropyLossFlat
    from minifast.metrics import accuracy
    g = torch.Generator().manual_seed(0)
    ys = torch.arange(16) % 2
    xs = torch.randn(16, 3, 32, 32, generator=g) + ys.view(-1, 1, 1, 1).float()   # class shifts the brightness
    dsets = Datasets(list(range(16)), [[lambda i: xs[i]], [lambda i: 'ab'[int(ys[i])], Categorize()]],
                     splits=(range(16), range(16)), kinds=('other', 'category'))
    dls = DataLoaders.from_dsets(dsets, bs=8, device='cpu', seed=0, num_workers=0)
    torch.manual_seed(0)
    learn = Learner(dls, xresnet50(n_out=dls.c), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with learn.no_bar(): learn.fit(2, 1e-3)
    values = learn.recorder.values
    assert len(values) == 2 and all(math.isfinite(v) for row in values for v in row[:2])
    assert values[1][0] < values[0][0], values   # the training loss falls (0.52 -> 0.26 with this seed)
    with torch.no_grad(): out = learn.model.eval()(xs[:8])
    assert out.shape == (8, 2) and dls.c == 2
