"unet_learner and DynamicUnet: output at the input's size, skip connections, layer groups, freezing, training."
import pytest
import torch
from torch import nn

from conftest import make_square_masks
from minifast.losses import CrossEntropyLossFlat
from minifast.metrics import DiceMulti, foreground_acc
from minifast.vision.learner import create_unet_model, efficientnet_lite0, resnet18, unet_learner
from minifast.vision.models.unet import DynamicUnet, skip_stages


@pytest.fixture
def dls(tmp_path): return make_square_masks(tmp_path)


@pytest.mark.parametrize('upsample', ['shuffle', 'interpolate'])
def test_output_has_the_input_size_even_odd_ones(upsample):
    model = create_unet_model(resnet18, n_out=3, pretrained=False, upsample=upsample).eval()
    with torch.no_grad():
        for h, w in [(64, 64), (32, 48), (65, 37), (33, 33)]:
            assert model(torch.randn(2, 3, h, w)).shape == (2, 3, h, w)


def test_skips_are_the_last_stage_at_each_resolution():
    body = create_unet_model(resnet18, n_out=2, pretrained=False)[0]
    stages, channels, out = skip_stages(body, (64, 64))
    # resnet18's body: conv1, bn1, relu (1/2), maxpool, layer1 (1/4), layer2 (1/8), layer3 (1/16), layer4 (1/32)
    assert [s for s in stages] == [body[6], body[5], body[4], body[2]]
    assert channels == [256, 128, 64, 64] and out == (1, 512, 2, 2)


def test_hooks_feed_the_decoder_and_let_go_after_the_pass():
    model = create_unet_model(resnet18, n_out=2, pretrained=False).eval()
    seen = []
    model[1].blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[1].shape))
    with torch.no_grad(): model(torch.randn(1, 3, 64, 64))
    assert seen == [(1, 256, 4, 4)]   # layer3's output is the first skip
    assert all(k.out is None for k in model._keeps)


def test_timm_body_uses_its_feature_info():
    model = create_unet_model('resnet10t', n_out=2, pretrained=False).eval()
    with torch.no_grad(): assert model(torch.randn(1, 3, 40, 56)).shape == (1, 2, 40, 56)
    assert len(model[1].blocks) == 4


def test_three_layer_groups_and_freeze_trains_only_the_decoder(dls):
    learn = unet_learner(dls, efficientnet_lite0, n_out=2)   # Lite0's ImageNet weights are installed: offline
    groups = learn.splitter(learn.model)
    assert len(groups) == 3 and len(learn.opt.hypers) == 3
    body, decoder = learn.model
    assert {id(p) for p in groups[2]} == {id(p) for p in decoder.parameters()}
    assert sum(len(g) for g in groups) == len(list(learn.model.parameters()))
    bn = {id(p) for m in body.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert all(p.requires_grad == (id(p) in bn) for p in body.parameters())   # BatchNorm trains, as train_bn says
    assert all(p.requires_grad for p in decoder.parameters())
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    assert isinstance(learn.loss_func, CrossEntropyLossFlat) and learn.loss_func.axis == 1


def test_n_out_comes_from_the_codes_or_must_be_given(dls):
    with pytest.raises(ValueError, match='pass n_out='): unet_learner(dls, resnet18, pretrained=False)


def test_a_few_steps_reduce_the_loss_on_a_mask_task(dls):
    torch.manual_seed(0)
    learn = unet_learner(dls, efficientnet_lite0, n_out=2, metrics=[foreground_acc, DiceMulti()])
    xb, yb = dls.train.one_batch()
    def loss():   # in training mode: after 12 steps the BatchNorm running statistics are not settled yet
        learn.model.train()
        with torch.no_grad(): return float(learn.loss_func(learn.model(xb), yb))
    before = loss()
    with learn.no_bar(): learn.fit(4, lr=3e-3)
    after = loss()
    assert after < 0.5 * before, (before, after)   # measured: 0.78 -> 0.22
    loss, fg_acc, dice = learn.validate()
    assert 0 <= fg_acc <= 1 and 0 <= dice <= 1


def test_export_and_load_rebuild_the_unet(dls, tmp_path):
    from minifast.learner import load_learner
    learn = unet_learner(dls, resnet18, n_out=2, pretrained=False)
    learn.export(tmp_path/'unet.pkl')
    loaded = load_learner(tmp_path/'unet.pkl')
    xb = torch.randn(1, 3, 32, 32)
    learn.model.eval(); loaded.model.eval()
    with torch.no_grad(): assert torch.allclose(learn.model(xb), loaded.model(xb))
    assert isinstance(loaded.model, DynamicUnet) and loaded.loss_func.axis == 1
