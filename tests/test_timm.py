"vision_learner with timm models by name: the body, stats, layer groups, local weights, offline error, export."
import pytest
import torch

timm = pytest.importorskip('timm')

from minifast.learner import load_learner  # noqa: E402
from minifast.vision.augment import Resize  # noqa: E402
from minifast.vision.core import Normalize  # noqa: E402
from minifast.vision.data import ImageDataLoaders  # noqa: E402
from minifast.vision.learner import create_vision_model, get_arch, vision_learner  # noqa: E402


@pytest.fixture
def dls(colour_folder):
    return ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=2, device='cpu')


def test_a_name_minifast_does_not_know_goes_to_timm_and_its_own_names_stay():
    assert get_arch('resnet10t').name == 'timm:resnet10t'
    assert get_arch('resnet10t.c3_in1k').name == 'timm:resnet10t.c3_in1k'   # a weight tag is kept
    assert get_arch('resnet18').family.name == 'resnet'                     # torchvision, as before
    assert get_arch('timm:resnet18').family.name == 'timm'                  # unless asked for timm's
    with pytest.raises(ValueError, match='timm has no model'): get_arch('timm:no_such_net')
    with pytest.raises(ValueError, match='unknown architecture'): get_arch('no_such_net')


@pytest.mark.parametrize('name', ['resnet10t', 'mobilenetv3_small_050'])
def test_timm_body_head_stats_and_three_layer_groups(name):
    model = create_vision_model(name, 3, pretrained=False)
    body, head = model
    cfg = body.pretrained_cfg
    assert list(get_arch(name).stats) == [list(cfg['mean']), list(cfg['std'])]
    model.eval()
    feats = body(torch.zeros(2, 3, 32, 32))
    assert feats.ndim == 4 and head[4].in_features == 2 * feats.shape[1]   # concat pool of the body's channels
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    groups = get_arch(name).splitter(body)(model)
    assert len(groups) == 3 and all(len(g) > 0 for g in groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}, "each parameter in one group"
    assert [id(p) for p in groups[2]] == [id(p) for p in head.parameters()], "the head is the last group"
    last_stage = body.get_submodule(body.feature_info[-1]['module'])
    assert {id(p) for p in last_stage.parameters()} <= {id(p) for p in groups[1]}, "the last stage is in group 2"


def test_slice_spreads_learning_rates_over_the_timm_body(dls):
    learn = vision_learner(dls, 'resnet10t', pretrained=False)
    opt = learn.create_opt()
    opt.set_hyper('lr', slice(1e-5, 1e-3))
    lrs = [h['lr'] for h in opt.hypers]
    assert len(lrs) == 3 and lrs[0] == pytest.approx(1e-5) and lrs[1] == pytest.approx(1e-4) and lrs[2] == 1e-3


def test_weights_path_loads_a_locally_saved_timm_state_dict(dls, tmp_path):
    torch.manual_seed(1)
    saved = timm.create_model('resnet10t').state_dict()   # with its classifier, as timm publishes them
    torch.save(saved, tmp_path/'resnet10t.pth')
    learn = vision_learner(dls, 'resnet10t', weights_path=tmp_path/'resnet10t.pth')
    body = learn.model[0]
    for k, v in body.state_dict().items(): assert torch.equal(v, saved[k]), k
    assert set(saved) - set(body.state_dict()) == {'fc.weight', 'fc.bias'}, "only the classifier is left out"
    norm = learn.dls.train.after_batch[0].tfms[-1]
    assert isinstance(norm, Normalize) and norm.mean == list(body.pretrained_cfg['mean'])
    assert not any(p.requires_grad for p in body.conv1[0].parameters()), "pretrained: the body is frozen"


def test_offline_timm_download_error_says_what_to_do(dls, tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)   # what a machine without internet sees, at once
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path/'hf_cache'))
    with pytest.raises(RuntimeError) as e:
        vision_learner(dls, 'resnet10t')
    msg = str(e.value)
    assert 'pretrained=False' in msg and str(tmp_path/'hf_cache') in msg and 'weights_path=' in msg


def test_timm_learner_exports_its_name_and_predicts_identically_after_load(dls, colour_folder, tmp_path):
    learn = vision_learner(dls, 'mobilenetv3_small_050', pretrained=False)
    assert learn.channels_last
    with learn.no_bar(): learn.fit(1)
    assert learn.model_config['arch'] == 'timm:mobilenetv3_small_050'
    learn2 = load_learner(learn.export(tmp_path/'model.pkl'))
    assert learn2.model_config['arch'] == 'timm:mobilenetv3_small_050' and learn2.channels_last
    for fname in [colour_folder/'red'/'red_0.jpg', colour_folder/'blue'/'blue_5.jpg']:
        label, idx, probs = learn.predict(fname)
        label2, idx2, probs2 = learn2.predict(fname)
        assert label == label2 and int(idx) == int(idx2)
        assert torch.equal(probs, probs2)


def test_timm_is_an_optional_extra_that_minifast_imports_lazily():
    import configparser
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).parents[1]
    cfg = configparser.ConfigParser()
    cfg.read(root/'setup.cfg')
    assert 'timm' not in cfg['options']['install_requires']
    assert 'timm' in cfg['options.extras_require']['timm'] and 'timm' in cfg['options.extras_require']['dev']
    code = "import sys, minifast.vision.all; print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == 'False', 'importing minifast must not import timm'


def test_without_timm_a_timm_name_says_how_to_install_it(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'timm', None)   # `import timm` now raises ImportError
    assert get_arch('resnet18').family.name == 'resnet'
    with pytest.raises(ValueError, match=r'unknown architecture.*pip install minifast\[timm\]'): get_arch('resnet10t')
    with pytest.raises(ImportError, match=r'pip install minifast\[timm\]'): get_arch('timm:resnet10t')
