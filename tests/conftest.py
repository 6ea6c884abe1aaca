import matplotlib
import pytest

matplotlib.use('Agg')


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    "Every test gets its own MINIFAST_HOME, so nothing is read from or written to the user's ~/.minifast."
    monkeypatch.setenv('MINIFAST_HOME', str(tmp_path_factory.mktemp('minifast_home')))


def make_synth_dls(n=256, bs=32, seed=0, n_valid=64):
    "Two Gaussian blobs in 2-D labelled 'neg'/'pos', as DataLoaders on the CPU (fast, no files)."
    from minifast.test_utils import synth_dls
    return synth_dls(n=n, bs=bs, seed=seed, n_valid=n_valid)


def make_mlp():
    "A 2-16-2 MLP with BatchNorm, initialised from the global RNG."
    from minifast.test_utils import synth_mlp
    return synth_mlp()


@pytest.fixture
def synth_dls(): return make_synth_dls()


@pytest.fixture
def colour_folder(tmp_path):
    "A tiny folder `label/i.jpg` of red and blue images of slightly different sizes."
    from PIL import Image
    for label, colour in (('red', (220, 20, 20)), ('blue', (20, 20, 220))):
        (tmp_path/label).mkdir()
        for i in range(8): Image.new('RGB', (40, 30 + i), colour).save(tmp_path/label/f'{label}_{i}.jpg')
    return tmp_path
