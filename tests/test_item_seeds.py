"""An item's random draws depend on the loader's seed and the epoch, not on where it is built: the same batches with
no workers, with workers started each epoch, and with workers that persist across epochs."""
import pytest
import torch

from minifast.data.core import DataLoader, Datasets
from minifast.data.transforms import Transform


class Jitter(Transform):
    "Training-time noise from the generator the loader passes: what a random crop or flip draws, in miniature."
    def __call__(self, x, split_idx=None, generator=None):
        return x + torch.rand(x.shape, generator=generator)


def _epochs(num_workers, persistent, n_epochs=3):
    dsets = Datasets(list(range(10)), [[lambda i: torch.full((2,), float(i))]], splits=(range(10), []))
    dl = DataLoader(dsets.train, bs=4, shuffle=True, seed=7, device='cpu', after_item=[[Jitter()]],
                    num_workers=num_workers, persistent_workers=persistent)
    return [torch.cat([b[0] for b in dl]) for _ in range(n_epochs)]


@pytest.mark.parametrize('num_workers,persistent', [(2, False), (2, True), (1, True)])
def test_the_same_batches_with_or_without_workers_persistent_or_not(num_workers, persistent):
    reference = _epochs(0, False)
    got = _epochs(num_workers, persistent)
    for epoch, (a, b) in enumerate(zip(reference, got)): assert torch.equal(a, b), f"epoch {epoch}"


def test_each_epoch_and_each_item_draws_anew():
    e0, e1, _ = _epochs(0, False)
    noise0, noise1 = e0 - e0.floor(), e1 - e1.floor()
    assert not torch.equal(e0, e1)                               # another order and other draws each epoch
    assert len({round(v, 6) for v in noise0[:, 0].tolist()}) == 10   # every item its own draw
    assert not torch.equal(noise0.sort(0).values, noise1.sort(0).values)
    assert torch.equal(_epochs(0, False)[1], e1)                 # and all of it from the loader's seed
