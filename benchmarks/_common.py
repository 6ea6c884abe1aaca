"""What several benchmarks share: a resnet18 learner on random tensors, and a device synchronisation."""
import torch

from minifast.data.core import DataLoaders, Datasets
from minifast.data.transforms import Categorize
from minifast.vision.learner import resnet18, vision_learner


def device_sync(device):
    "A function that waits for `device`'s queued work (a no-op on the CPU), to call before each time stamp."
    def sync():
        if device.type == 'cuda': torch.cuda.synchronize(device)
    return sync


def random_resnet18_learner(bs, size, n_batches, device):
    """An unfrozen `vision_learner(resnet18, pretrained=False)` without its progress bar, on `n_batches`
    training batches (and one validation batch) of `bs` seeded random `size` px images in 10 classes."""
    n_train = bs * n_batches
    base = torch.rand(bs, 3, size, size, generator=torch.Generator().manual_seed(0))
    labels = [f'c{i % 10}' for i in range(n_train + bs)]
    dsets = Datasets(list(range(n_train + bs)),
                     [[lambda i: base[i % len(base)]], [lambda i: labels[i], Categorize()]],
                     splits=(range(n_train), range(n_train, n_train + bs)), kinds=('image', 'category'))
    dls = DataLoaders.from_dsets(dsets, bs=bs, device=device, seed=0, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False)
    learn.unfreeze()
    learn.remove_cb(learn.progress)
    return learn
