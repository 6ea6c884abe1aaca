"`set_seed(s)` before building the data and the learner makes a run repeatable, as in fastai: batches and weights."
import pytest
import torch

from minifast.vision.all import (CrossEntropyLossFlat, ImageDataLoaders, Learner, RandomResizedCrop, aug_transforms,
                                 get_image_files, is_cat, nn, set_seed, toy_pets)


@pytest.fixture(scope='module')
def pets(tmp_path_factory):
    "74 toy pet images (2 per breed)."
    return toy_pets(tmp_path_factory.mktemp('seed')/'pets', n_per_breed=2)


def _tiny_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def _run(path, seed):
    "A fastbook-style run given no seed but `set_seed(seed)`: random split, crops, batch augmentation, shuffling."
    set_seed(seed)
    dls = ImageDataLoaders.from_name_func(path, get_image_files(path/'images'), is_cat,
                                          item_tfms=RandomResizedCrop(24, min_scale=0.5),
                                          batch_tfms=aug_transforms(size=24), bs=8, num_workers=0, device='cpu')
    xb, yb = dls.one_batch()
    learn = Learner(dls, _tiny_model(), loss_func=CrossEntropyLossFlat())
    init = [p.detach().clone() for p in learn.model.parameters()]
    with learn.no_bar(): learn.fit(1, 1e-2)
    return dict(train_items=list(dls.train.items), valid_items=list(dls.valid.items), xb=xb, yb=yb, init=init,
                trained=[p.detach().clone() for p in learn.model.parameters()])


def _same_tensors(a, b): return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_set_seed_repeats_the_initial_weights():
    set_seed(42); a = _tiny_model().state_dict()
    set_seed(42); b = _tiny_model().state_dict()
    assert _same_tensors(list(a.values()), list(b.values()))


# The lead removes this mark when data/core's `_random_seed` and data/transforms' `RandomSplitter` draw from torch.
def test_set_seed_repeats_the_split_the_batches_and_the_trained_weights(pets):
    one, two = _run(pets, 42), _run(pets, 42)
    assert one['train_items'] == two['train_items'] and one['valid_items'] == two['valid_items'], "split differs"
    assert torch.equal(one['yb'], two['yb']), "shuffling differs"
    assert torch.equal(one['xb'], two['xb']), "augmented pixels differ"
    assert _same_tensors(one['init'], two['init']), "initial weights differ"
    assert _same_tensors(one['trained'], two['trained']), "trained weights differ"
    other = _run(pets, 43)
    assert not torch.equal(one['xb'], other['xb']) and not _same_tensors(one['trained'], other['trained'])
