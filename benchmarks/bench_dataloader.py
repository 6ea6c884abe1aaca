"""Images per second for one pass over `dls.train` of the built-in data set.

Item `Resize(160)` on the CPU (JPEG draft decoding), batch resize to 128 px on the device, with 0 and
2 worker processes; the baseline is the same pass with draft decoding off, in the same process.

    python benchmarks/bench_dataloader.py [--n-per-breed 40] [--bs 64] [--passes 3] [--device cpu] [--threads 1]
                                          [--stages] [--busy 2]

Besides wall-clock images/s, each row gives the CPU time per image of the whole pass (this process, all
its threads, plus the worker processes), which other programs running at the same time disturb much
less: 1000 / (CPU ms per image) is the rate one otherwise idle core would reach. With 0 workers, the last
columns give the wall-clock time of collating one batch in the pass (median and worst): it is where waiting
for torch's threads showed (`torch.stack` on a busy machine). `--stages` adds where the CPU time of one image
goes, step by step, in this process with one thread. `--busy N` runs N busy-looping processes during the
passes, to see the loader on a machine busy with other work, reproducibly.

With 0 workers the images are decoded and resized in the main process, between the batch transforms.
After each multi-threaded torch operation, the threads of torch's OpenMP pool keep spinning for a
while; on a machine that is busy with other work they take CPU time from the main process and
can slow the pass down several times. `--threads 1` (or `OMP_WAIT_POLICY=PASSIVE` in the environment)
shows the pass without that effect.
"""
import argparse
import multiprocessing
import os
import statistics
import time

import torch

from minifast.data import core
from minifast.data.block import CategoryBlock, DataBlock
from minifast.data.toy_pets import toy_pets
from minifast.data.transforms import Pipeline, RandomSplitter, RegexLabeller, get_image_files, using_attr
from minifast.vision.augment import BatchResize, Resize, aug_transforms
from minifast.vision.core import IntToFloatTensor, ToTensor, load_image
from minifast.vision.data import ImageBlock

try: import psutil   # to add the CPU time of the worker processes
except ImportError: psutil = None


def make_dls(path, bs, workers, device, batch_tfms, draft=True):
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=RandomSplitter(seed=42),
                      get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'), item_tfms=Resize(160),
                      batch_tfms=batch_tfms)
    dls = block.dataloaders(path, bs=bs, num_workers=workers, device=device, seed=0)
    if not draft:  # baseline: full-size decoding
        for t in dls.train_ds.dsets.pipelines[0]:
            if hasattr(t, 'draft_size'): t.draft_size = None
    return dls


def cpu_seconds():
    "CPU time so far of this process (all threads) and of its live child processes (the persistent workers)."
    total = time.process_time()
    if psutil is not None:
        for child in psutil.Process().children(recursive=True):
            try: total += sum(child.cpu_times()[:2])
            except psutil.Error: pass
    return total


_collate_ms = []   # wall-clock ms of each collation done in this process (0 workers)

def _timed_collate(collate):
    def timed(self, samples):
        start = time.perf_counter()
        try: return collate(self, samples)
        finally: _collate_ms.append((time.perf_counter() - start) * 1000)
    return timed

core._ItemStage.collate = _timed_collate(core._ItemStage.collate)


def images_per_second(dls, passes):
    """Median over `passes` passes (after one warm-up pass) of (images/s, CPU ms per image), and the collation times
    (ms) of those passes."""
    rates, cpu_ms = [], []
    for i in range(passes + 1):  # the first pass warms up (and starts persistent workers)
        if i == 1: _collate_ms.clear()
        start, start_cpu, n = time.perf_counter(), cpu_seconds(), 0
        for xb, _ in dls.train: n += len(xb)
        if dls.device.type == 'cuda': torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - start))
        cpu_ms.append((cpu_seconds() - start_cpu) * 1000 / n)
    return statistics.median(rates[1:]), statistics.median(cpu_ms[1:]), list(_collate_ms)


def _spin():
    while True: pass


def stage_costs(path, bs, n=256):
    "CPU ms per image of each step, on `n` images, in this process."
    files = get_image_files(path)[:n]
    def timed(fn, items):
        start = time.process_time()
        out = [fn(o) for o in items]
        return out, (time.process_time() - start) * 1000 / len(items)
    _, full = timed(lambda f: load_image(f), files)
    imgs, draft = timed(lambda f: load_image(f, draft_size=160), files)
    g = torch.Generator().manual_seed(0)
    resized, resize = timed(lambda im: Resize(160)(im, split_idx=0, generator=g), imgs)
    tensors, to_tensor = timed(ToTensor(), resized)
    start = time.process_time()
    stage = core._ItemStage(None, [], 0)
    # as the loader does
    batches = [stage.collate([(t,) for t in tensors[i:i + bs]])[0] for i in range(0, len(tensors), bs)]
    collate = (time.process_time() - start) * 1000 / len(tensors)
    rows = [('decode JPEG, full size', full), ('decode JPEG, draft mode (>= 160 px)', draft),
            ('Resize(160), random crop (PIL)', resize),
            ('ToTensor (uint8 CHW)', to_tensor), ('collate', collate)]
    for label, tfms in [('batch resize to 128 (uint8 in, float out)', [IntToFloatTensor(), BatchResize(128)]),
                        ('aug_transforms(size=128) (uint8 in, float out)',
                         [IntToFloatTensor(), *aug_transforms(size=128)])]:
        pipe = Pipeline(tfms)
        _, ms = timed(lambda b: pipe(b, split_idx=0, generator=g), batches)
        rows.append((label, ms / bs))
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--n-per-breed', type=int, default=40)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--passes', type=int, default=3)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=None,
                   help="torch.set_num_threads in this process (default: torch's choice)")
    p.add_argument('--stages', action='store_true', help='also print the CPU time of each step per image')
    p.add_argument('--busy', type=int, default=0,
                   help='busy-looping processes to run during the passes (a machine busy with other work)')
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    path = toy_pets(n_per_breed=args.n_per_breed)/'images'
    load = ', '.join(f'{v:.1f}' for v in os.getloadavg())
    print(f"built-in data: {len(get_image_files(path))} JPEGs; device {args.device}; "
          f"torch threads {torch.get_num_threads()}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; {os.cpu_count()} CPUs, load average {load}"
          + (f"; {args.busy} busy-looping processes during the passes" if args.busy else ''))
    rows = []
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for sp in spinners: sp.start()
    try:
        for label, tfms, draft in [('batch resize 128, no draft (baseline)', lambda: [BatchResize(128)], False),
                                   ('batch resize 128', lambda: [BatchResize(128)], True),
                                   ('aug_transforms(size=128)', lambda: aug_transforms(size=128), True)]:
            for workers in (0, 2):
                dls = make_dls(path, args.bs, workers, args.device, tfms(), draft)
                rows.append((label, workers, *images_per_second(dls, args.passes)))
    finally:
        for sp in spinners: sp.terminate()
    base = {w: r for l, w, r, _, _ in rows if 'baseline' in l}
    cpu_col = 'CPU ms/img' if psutil is not None else 'CPU ms/img (main process only)'
    print(f"\n{'pipeline':<40}{'workers':>8}{'images/s':>10}{'vs baseline':>13}{cpu_col:>14}{'img/CPU-s':>11}"
          f"{'collate ms (median, max)':>26}")
    for label, workers, rate, cpu_ms, collate_ms in rows:
        collate = f"{statistics.median(collate_ms):.2f}, {max(collate_ms):.1f}" if collate_ms else 'in the workers'
        print(f"{label:<40}{workers:>8}{rate:>10.0f}{rate / base[workers]:>12.2f}x{cpu_ms:>14.2f}"
              f"{1000 / cpu_ms:>11.0f}{collate:>26}")
    print(f"\nload average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.stages:
        torch.set_num_threads(1)
        print(f"\n{'step (one thread)':<50}{'CPU ms/img':>11}")
        for label, ms in stage_costs(path, args.bs): print(f"{label:<50}{ms:>11.2f}")


if __name__ == '__main__':
    main()
