"""Images per second for one pass over `dls.train` of the built-in data set.

Item `Resize(160)` on the CPU (JPEG draft decoding), batch resize to 128 px on the device, with 0 and
2 worker processes; the baseline is the same pass with draft decoding off, in the same process.

    python benchmarks/bench_dataloader.py [--n-per-breed 40] [--bs 64] [--passes 3] [--device cpu]
"""
import argparse
import statistics
import time

import torch

from minifast.data.block import CategoryBlock, DataBlock
from minifast.data.toy_pets import toy_pets
from minifast.data.transforms import RandomSplitter, RegexLabeller, get_image_files, using_attr
from minifast.vision.augment import BatchResize, Resize, aug_transforms
from minifast.vision.data import ImageBlock


def make_dls(path, bs, workers, device, batch_tfms, draft=True):
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=RandomSplitter(seed=42),
                      get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'), item_tfms=Resize(160), batch_tfms=batch_tfms)
    dls = block.dataloaders(path, bs=bs, num_workers=workers, device=device, seed=0)
    if not draft:  # baseline: full-size decoding
        for t in dls.train_ds.dsets.pipelines[0]:
            if hasattr(t, 'draft_size'): t.draft_size = None
    return dls


def images_per_second(dls, passes):
    rates = []
    for _ in range(passes + 1):  # the first pass warms up (and starts persistent workers)
        start, n = time.perf_counter(), 0
        for xb, _ in dls.train: n += len(xb)
        if dls.device.type == 'cuda': torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--n-per-breed', type=int, default=40)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--passes', type=int, default=3)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args()
    path = toy_pets(n_per_breed=args.n_per_breed)/'images'
    print(f"built-in data: {len(get_image_files(path))} JPEGs; device {args.device}; torch threads {torch.get_num_threads()}")
    rows = []
    for label, tfms, draft in [('batch resize 128, no draft (baseline)', lambda: [BatchResize(128)], False),
                               ('batch resize 128', lambda: [BatchResize(128)], True),
                               ('aug_transforms(size=128)', lambda: aug_transforms(size=128), True)]:
        for workers in (0, 2):
            rate = images_per_second(make_dls(path, args.bs, workers, args.device, tfms(), draft), args.passes)
            rows.append((label, workers, rate))
    base = {w: r for l, w, r in rows if 'baseline' in l}
    print(f"\n{'pipeline':<40}{'workers':>8}{'images/s':>10}{'vs baseline':>13}")
    for label, workers, rate in rows:
        print(f"{label:<40}{workers:>8}{rate:>10.0f}{rate / base[workers]:>12.2f}x")


if __name__ == '__main__':
    main()
