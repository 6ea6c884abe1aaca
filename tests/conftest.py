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


@pytest.fixture
def colour_learner(colour_folder):
    "A `Learner` (a 4-channel conv, pooled, then linear) on `colour_folder` at 24 px, CPU; closes its figures after."
    import matplotlib.pyplot as plt
    import torch
    from torch import nn
    from minifast.learner import Learner
    from minifast.vision.augment import Resize
    from minifast.vision.data import ImageDataLoaders
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(24), bs=4,
                                       device='cpu')
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    yield Learner(dls, model)
    plt.close('all')


def make_square_masks(folder, n=12, size=32, seed=0, bs=4):
    """DataLoaders (CPU, no workers) of `n` images `size` px with one bright square on a dark noisy background, each
    with its mask (a LongTensor, 1 on the square), without MaskBlock: validation is the last quarter."""
    import numpy as np
    import torch
    from PIL import Image
    from minifast.data.core import Datasets, DataLoaders
    from minifast.vision.augment import Resize
    from minifast.vision.core import IntToFloatTensor, PILImage, ToTensor
    rng, masks = np.random.default_rng(seed), {}
    for i in range(n):
        img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        s = int(rng.integers(size // 4, size // 2)); y, x = rng.integers(0, size - s, 2)
        img[y:y + s, x:x + s] = 230
        mask = torch.zeros(size, size, dtype=torch.long); mask[y:y + s, x:x + s] = 1
        Image.fromarray(img).save(folder/f'{i}.png'); masks[f'{i}.png'] = mask
    n_valid = n // 4
    dsets = Datasets(sorted(folder.glob('*.png'), key=lambda p: int(p.stem)),
                     [[PILImage.create], [lambda p: masks[p.name]]], splits=(range(n - n_valid), range(n - n_valid, n)),
                     kinds=('image', 'mask'))
    return DataLoaders.from_dsets(dsets, bs=bs, device='cpu', num_workers=0, seed=seed,
                                  after_item=[[Resize(size), ToTensor()]], after_batch=[[IntToFloatTensor()]])
