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
