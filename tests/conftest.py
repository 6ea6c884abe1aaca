import os

import matplotlib
import pytest

matplotlib.use('Agg')


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    "Every test gets its own MINIFAST_HOME, so nothing is read from or written to the user's ~/.minifast."
    monkeypatch.setenv('MINIFAST_HOME', str(tmp_path_factory.mktemp('minifast_home')))


def make_synth_dls(n=256, bs=32, seed=0, n_valid=64):
    "Two Gaussian blobs in 2-D labelled 'neg'/'pos', as DataLoaders on the CPU (fast, no files)."
    import torch
    from minifast.data.core import DataLoaders, Datasets
    from minifast.data.transforms import Categorize
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g)
    y = ((X[:, 0] + X[:, 1]) > 0).long()
    dsets = Datasets(list(range(n)), [[lambda i: X[i]], [lambda i: ['neg', 'pos'][int(y[i])], Categorize()]],
                     splits=(range(n - n_valid), range(n - n_valid, n)), kinds=('other', 'category'))
    return DataLoaders.from_dsets(dsets, bs=bs, device='cpu', seed=seed, num_workers=0)


def make_mlp():
    from torch import nn
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.BatchNorm1d(16), nn.Linear(16, 2))


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
