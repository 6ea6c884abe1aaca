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


@pytest.mark.parametrize('arch,nf', [('resnet18', 512), ('efficientnet_b0', 1280), ('regnet_y_400mf', 440), ('convnext_tiny', 768)])
def test_bodies_are_cut_before_pooling(arch, nf):
    model = create_vision_model(arch, 5, pretrained=False)
    body, head = model
    assert body(torch.zeros(1, 3, 64, 64)).shape[1] == nf
    assert head[4].in_features == 2 * nf   # concat pool
    model.eval()
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)


@pytest.mark.parametrize('arch', ['resnet18', 'resnet50', 'resnet152', 'convnext_tiny', 'efficientnet_b0', 'regnet_y_400mf',
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
