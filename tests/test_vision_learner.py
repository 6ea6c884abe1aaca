"vision_learner: pretrained weights through torchvision's cache, the offline error, Lite0 transfer, the head."
import urllib.error

import pytest
import torch

from minifast.vision.augment import Resize
from minifast.vision.core import Normalize
from minifast.vision.data import ImageDataLoaders
from minifast.vision.learner import create_vision_model, efficientnet_lite0, resnet18, vision_learner, cnn_learner


@pytest.fixture
def dls(colour_folder):
    return ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=4, device='cpu')


def test_pretrained_weights_come_from_the_torch_hub_cache(dls, tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    planted = torchvision.models.resnet18(weights=None).state_dict()
    ckpt = tmp_path/'torch'/'hub'/'checkpoints'/url.rsplit('/', 1)[1]
    ckpt.parent.mkdir(parents=True)
    torch.save(planted, ckpt)
    learn = vision_learner(dls, resnet18)   # pretrained=True by default: must read the planted file, not download
    assert torch.equal(learn.model[0][0].weight, planted['conv1.weight'])
    assert torch.equal(learn.model[0][7][1].bn2.running_var, planted['layer4.1.bn2.running_var'])


def test_offline_download_error_says_what_to_do(dls, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'empty_cache'))
    def no_network(*args, **kwargs): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_network)
    with pytest.raises(RuntimeError) as e:
        vision_learner(dls, resnet18)
    msg = str(e.value)
    assert 'pretrained=False' in msg and 'checkpoints' in msg and 'efficientnet_lite0' in msg


def test_lite0_learner_transfer_learning(dls):
    learn = cnn_learner(dls, efficientnet_lite0)
    assert len(learn.opt.hypers) == 3
    assert isinstance(learn.dls.train.after_batch[0].tfms[-1], Normalize)
    assert learn.dls.train.after_batch[0].tfms[-1].mean == [0.5] * 3
    assert not any(isinstance(t, Normalize) for t in dls.train.after_batch[0]), "the caller's dls is unchanged"
    xb, _ = learn.dls.valid.one_batch()
    assert -1.01 <= float(xb.min()) and float(xb.max()) <= 1.01   # x * 2 - 1
    with learn.no_bar(): learn.fine_tune(1, freeze_epochs=1)
    assert len(learn.recorder.values) == 1


@pytest.mark.parametrize('arch,nf',
                         [('resnet18', 512), ('efficientnet_b0', 1280), ('regnet_y_400mf', 440),
                          ('convnext_tiny', 768)])
def test_bodies_are_cut_before_pooling(arch, nf):
    model = create_vision_model(arch, 5, pretrained=False)
    body, head = model
    assert body(torch.zeros(1, 3, 64, 64)).shape[1] == nf
    assert head[4].in_features == 2 * nf   # concat pool
    model.eval()
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)


@pytest.mark.parametrize('arch',
                         ['resnet18', 'resnet50', 'resnet152', 'convnext_tiny', 'efficientnet_b0', 'regnet_y_400mf',
                                  'efficientnet_lite0'])
def test_three_layer_groups_cover_the_model(arch):
    from minifast.vision.learner import get_arch, vision_splitter
    model = create_vision_model(arch, 3, pretrained=False)
    groups = vision_splitter(model, get_arch(arch).split_at)
    assert len(groups) == 3 and all(len(g) > 0 for g in groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}, "each parameter in one group"
    assert [id(p) for p in groups[2]] == [id(p) for p in model[1].parameters()], "the head is the last group"


def test_new_head_is_initialised():
    from minifast.vision.learner import create_head
    torch.manual_seed(0)
    head = create_head(512, 10, ps=0.4)
    lin1, lin2 = [m for m in head if isinstance(m, torch.nn.Linear)]
    assert (lin1.in_features, lin1.out_features, lin2.out_features) == (1024, 512, 10)
    for lin in (lin1, lin2):  # Kaiming normal, fan in: std sqrt(2 / fan_in); zero biases
        assert float(lin.weight.detach().std()) == pytest.approx((2 / lin.in_features) ** 0.5, rel=0.1)
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    assert [m.p for m in head if isinstance(m, torch.nn.Dropout)] == [0.2, 0.4]


def test_frozen_and_normalised_only_when_pretrained(dls):
    pre = vision_learner(dls, efficientnet_lite0)
    scratch = vision_learner(dls, efficientnet_lite0, pretrained=False)
    assert pre.opt.frozen_idx == 2 and (scratch.opt is None or scratch.opt.frozen_idx == 0)
    assert all(p.requires_grad for p in scratch.model.parameters())
    assert not any(isinstance(t, Normalize) for t in scratch.dls.train.after_batch[0])
    # the pretrained learner's body really carries the ImageNet weights, the other one does not
    from minifast.vision.models.efficientnet_lite import lite0_state_dict
    w = lite0_state_dict()['_conv_stem.weight']
    assert torch.equal(pre.model[0][0][0].weight, w) and not torch.equal(scratch.model[0][0][0].weight, w)


def _output_of(module, model, x):
    "What `module` (a part of `model`) outputs when `model(x)` runs."
    seen = {}
    hook = module.register_forward_hook(lambda m, inp, out: seen.update(out=out))
    try:
        with torch.no_grad(): model(x)
    finally: hook.remove()
    return seen['out']


@pytest.mark.parametrize('cut,block,nf', [(1, None, 32), (2, 0, 16), (3, 2, 24), (5, 7, 80), (-1, 15, 320)])
def test_lite0_int_cut_counts_body_stages_and_keeps_the_intermediate_features(cut, block, nf):
    from minifast.vision.models.efficientnet_lite import efficientnet_lite0 as lite0_model
    full = lite0_model(pretrained=True).eval()
    model = create_vision_model(efficientnet_lite0, 10, pretrained=True, cut=cut).eval()
    body = model[0]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): out = body(x)
    if block is None: expected = torch.nn.functional.relu6(_output_of(full._bn0, full, x))  # the stem, ReLU6 included
    else: expected = _output_of(full._blocks[block], full, x)   # the last block of the last stage kept
    assert out.shape[1] == nf
    torch.testing.assert_close(out, expected)
    with torch.no_grad(): assert model(x).shape == (2, 10)


@pytest.mark.parametrize('cut,layer', [(5, 'layer1'), (6, 'layer2'), (-1, 'layer3'), (8, 'layer4')])
def test_resnet_int_cut_matches_the_full_models_layers(cut, layer):
    import torchvision
    full = torchvision.models.resnet18(weights=None).eval()
    body = resnet18.body(full, cut)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): torch.testing.assert_close(body(x), _output_of(getattr(full, layer), full, x))
    model = create_vision_model(resnet18, 7, pretrained=False, cut=cut).eval()
    with torch.no_grad(): assert model(x).shape == (2, 7)


def test_function_cut_gets_the_full_model():
    from minifast.vision.models.efficientnet_lite import EfficientNetLite0
    got = []
    def cut(m):
        got.append(m)
        return torch.nn.Sequential(m._conv_stem, m._bn0)
    model = create_vision_model(efficientnet_lite0, 4, pretrained=False, cut=cut)
    assert isinstance(got[0], EfficientNetLite0) and model[0][0] is got[0]._conv_stem
    assert model[1][4].in_features == 2 * 32
    with pytest.raises(TypeError, match='must return the body'):
        create_vision_model(efficientnet_lite0, 4, pretrained=False, cut=lambda m: 3)


@pytest.mark.parametrize('cut', [0, 10, -9, 2.5, True])
def test_bad_cut_names_the_stages(cut):
    error = ValueError if isinstance(cut, int) and not isinstance(cut, bool) else TypeError
    with pytest.raises(error, match=f"cut={cut}"):
        create_vision_model(efficientnet_lite0, 4, pretrained=False, cut=cut)
    if error is ValueError:
        with pytest.raises(ValueError, match=r'9 stages \(stem, stage1, .*, head\)'):
            create_vision_model(efficientnet_lite0, 4, pretrained=False, cut=cut)


def test_cut_learner_has_three_non_empty_groups_and_exports(dls, tmp_path):
    from minifast.learner import load_learner
    learn = vision_learner(dls, efficientnet_lite0, cut=5, path=tmp_path)
    groups = learn.splitter(learn.model)
    assert len(groups) == 3 and all(groups), "a body cut before split_at is split half-way, no empty group"
    assert [id(p) for p in groups[0]] == [id(p) for p in learn.model[0][:2].parameters()]
    assert learn.opt.frozen_idx == 2
    with learn.no_bar(): learn.fit(1)
    learn.export('cut.pkl')
    loaded = load_learner(tmp_path/'cut.pkl')
    assert len(loaded.model[0]) == 5
    x, _ = learn.dls.valid.one_batch()
    learn.model.eval()
    with torch.no_grad(): torch.testing.assert_close(loaded.model(x), learn.model(x))


def test_function_cut_learner_has_body_and_head_groups_and_needs_pickle_to_export(dls, tmp_path):
    learn = vision_learner(dls, efficientnet_lite0, cut=lambda m: m._conv_stem, path=tmp_path)
    assert len(learn.opt.hypers) == 2 and learn.model_config is None
    with pytest.raises(ValueError, match='cut with a function'): learn.export('f.pkl')


# ---- channels-last ------------------------------------------------------------------------------------
def _conv_weights(model):
    # a 1x1 or depthwise kernel is both layouts
    return [p for p in model.parameters() if p.ndim == 4 and p.shape[2] * p.shape[3] > 1 and p.shape[1] > 1]


def test_vision_learner_stores_conv_weights_channels_last_by_default(dls):
    from minifast.learner import is_channels_last
    learn = vision_learner(dls, resnet18, pretrained=False)
    assert learn.channels_last and is_channels_last(learn.model)
    assert all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in _conv_weights(learn.model))
    plain = vision_learner(dls, resnet18, pretrained=False, channels_last=False)
    assert not plain.channels_last and all(p.is_contiguous() for p in _conv_weights(plain.model))


@pytest.mark.parametrize('arch', [resnet18, efficientnet_lite0])
def test_channels_last_model_computes_what_the_nchw_model_computes(dls, arch):
    learn = vision_learner(dls, arch, pretrained=False, channels_last=False)
    learn.model.eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = learn.model(x)
        out = learn.to_channelslast().model(x)
        assert learn.channels_last
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        assert torch.equal(learn.to_contiguous().model(x), ref) and not learn.channels_last


def test_to_channelslast_mid_training_converts_the_optimiser_state(dls):
    "Adam's moments follow the weights' layout; training then goes on as it would have in NCHW (up to rounding)."
    torch.manual_seed(0)
    a = vision_learner(dls, resnet18, pretrained=False, channels_last=False)
    b = vision_learner(dls, resnet18, pretrained=False, channels_last=False)
    b.model.load_state_dict(a.model.state_dict())
    xb, yb = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    def step(learn, seed):
        torch.manual_seed(seed)   # the same dropout masks in both
        learn.model.train()
        loss = learn.loss_func(learn.model(xb), yb)
        loss.backward(); learn.opt.step(); learn.opt.zero_grad()
    for learn in (a, b): learn.create_opt(); step(learn, 1)
    b.to_channelslast()
    w = b.model[0][0].weight
    state = b.opt.torch_opt.state[w]
    assert state['exp_avg'].is_contiguous(memory_format=torch.channels_last) and not state['exp_avg'].is_contiguous()
    for learn in (a, b): step(learn, 2)
    torch.testing.assert_close(b.model[0][0].weight, a.model[0][0].weight, rtol=1e-4, atol=1e-5)
    assert b.channels_last


def test_export_and_load_keep_the_memory_format(dls, tmp_path):
    from minifast.learner import load_learner
    for channels_last in (True, False):
        learn = vision_learner(dls, resnet18, pretrained=False, channels_last=channels_last)
        learn.export(tmp_path/f'm{channels_last}.pkl')
        loaded = load_learner(tmp_path/f'm{channels_last}.pkl')
        assert loaded.channels_last == channels_last
        x = torch.randn(2, 3, 32, 32)
        learn.model.eval()
        with torch.no_grad(): torch.testing.assert_close(loaded.model(x), learn.model(x), rtol=1e-4, atol=1e-4)


def test_a_registered_arch_family_plugs_in_without_new_code(monkeypatch):
    "A new family (here a tiny conv net) is one register_arch_family call; vision_learner builds, cuts and splits it."
    from torch import nn
    from minifast.vision import learner as vl
    monkeypatch.setattr(vl, 'arch_families', dict(vl.arch_families))
    built = []

    def build(name, pretrained=False, weights_path=None, progress=True):
        built.append((name, pretrained))
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.AdaptiveAvgPool2d(1))

    vl.register_arch_family('tiny', build, body=lambda m: m[:3])
    arch = vl.Arch('tiny_net', split_at=2, family='tiny')
    model = vl.create_vision_model(arch, 5, pretrained=False)
    assert built == [('tiny_net', False)] and len(model[0]) == 3
    assert [len(g) for g in arch.splitter(model[0])(model)] == [2, 2, len(list(model[1].parameters()))]
    with pytest.raises(ValueError, match=r"unknown family 'unet'.*register_arch_family"): vl.Arch('x', 2, family='unet')


# ---- n_in: images with other than three channels ---------------------------------------------------------------------
@pytest.mark.parametrize('arch', [resnet18, efficientnet_lite0])
@pytest.mark.parametrize('n_in, make', [(1, lambda x: x[:, :1]), (6, lambda x: torch.cat([x, x], 1))])
def test_n_in_body_gives_a_grey_or_stacked_image_the_output_of_its_rgb_image(arch, n_in, make):
    import copy
    from minifast.vision.learner import adapt_first_conv
    torch.manual_seed(0)
    body3 = create_vision_model(arch, 2, pretrained=False)[0].eval()
    body = adapt_first_conv(copy.deepcopy(body3), n_in).eval()
    rgb = torch.rand(2, 1, 32, 32).expand(-1, 3, -1, -1) if n_in == 1 else torch.rand(2, 3, 32, 32)
    x = make(rgb)
    assert x.shape[1] == n_in
    assert torch.allclose(body(x), body3(rgb), atol=1e-4)
    assert sum(p.numel() for p in body.parameters()) == sum(p.numel() for p in body3.parameters()) + \
        (n_in - 3) * next(m for m in body.modules() if isinstance(m, torch.nn.Conv2d)).weight[:, 0].numel()


def test_n_in_errors_name_the_problem():
    from torch import nn
    from minifast.vision.learner import adapt_first_conv
    with pytest.raises(ValueError, match='n_in=0'): adapt_first_conv(nn.Sequential(nn.Conv2d(3, 4, 3)), 0)
    with pytest.raises(ValueError, match='no convolution with 3 input channels'):
        adapt_first_conv(nn.Sequential(nn.Conv2d(5, 4, 3)), 1)


def test_grey_vision_learner_trains_without_rgb_stats_and_exports(colour_folder, tmp_path):
    from minifast.data.block import CategoryBlock, DataBlock
    from minifast.data.transforms import RandomSplitter, parent_label
    from minifast.learner import load_learner
    from minifast.vision.core import PILImageBW
    from minifast.vision.data import ImageBlock, get_image_files
    dls = DataBlock(blocks=(ImageBlock(PILImageBW), CategoryBlock), get_items=get_image_files, get_y=parent_label,
                    splitter=RandomSplitter(0.25, seed=0), item_tfms=Resize(32)).dataloaders(colour_folder, bs=4,
                                                                                          device='cpu')
    learn = vision_learner(dls, efficientnet_lite0, n_in=1, path=tmp_path)   # the offline ImageNet weights
    assert not any(isinstance(t, Normalize) for t in learn.dls.train.after_batch[0])
    xb = learn.dls.one_batch()[0]
    assert xb.shape[1] == 1 and learn.model(xb).shape == (4, 2)
    learn.fit(1, 1e-3)
    learn.export('grey.pkl')
    loaded = load_learner(tmp_path/'grey.pkl')
    item = get_image_files(colour_folder)[0]
    assert torch.allclose(loaded.predict(item)[2], learn.predict(item)[2], atol=1e-5)


def test_grey_unet_model_takes_one_channel_and_keeps_the_skip_connections():
    from minifast.vision.learner import create_unet_model
    torch.manual_seed(0)
    grey, rgb = (create_unet_model(resnet18, 3, img_size=(64, 64), pretrained=False, n_in=n) for n in (1, 3))
    assert grey(torch.rand(2, 1, 64, 64)).shape == (2, 3, 64, 64)
    assert len(grey._keeps) == len(rgb._keeps) > 2


# ---- custom_head ----------------------------------------------------------------------------------------------
def _grid_head(nf=1280, hw=1):
    from torch import nn
    from minifast.vision.learner import SigmoidRange
    return nn.Sequential(nn.Conv2d(nf, 4, 1), nn.Flatten(), nn.Linear(4 * hw * hw, 2), SigmoidRange(-1, 1))


def test_custom_head_is_the_model_head_and_trains_with_the_body_frozen(dls):
    torch.manual_seed(0)
    head = _grid_head()
    learn = vision_learner(dls, efficientnet_lite0, custom_head=head)
    assert learn.model[1] is head and learn.model_config is None
    x, _ = learn.dls.train.one_batch()
    assert learn.model(x).shape == (len(x), 2)
    trainable = {id(p) for p in learn.model.parameters() if p.requires_grad}
    assert all(id(p) in trainable for p in head.parameters())
    frozen_convs = [p for n, p in learn.model[0].named_parameters() if p.ndim == 4]
    assert frozen_convs and not any(p.requires_grad for p in frozen_convs)


def test_custom_head_with_y_range_is_refused():
    with pytest.raises(ValueError, match='SigmoidRange'):
        vision_learner(None, efficientnet_lite0, n_out=2, pretrained=False, custom_head=_grid_head(), y_range=(-1, 1))


def test_custom_head_learner_needs_pickle_to_export(dls, tmp_path):
    learn = vision_learner(dls, efficientnet_lite0, custom_head=_grid_head(), path=tmp_path)
    with pytest.raises(ValueError, match='custom_head'): learn.export('f.pkl')
