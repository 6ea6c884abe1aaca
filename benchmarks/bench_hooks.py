"""ActivationStats(with_hist=True): what hooking every layer adds to a training step of resnet18.

    python benchmarks/bench_hooks.py                        # CPU, 2 threads, 3 timed batches per row
    python benchmarks/bench_hooks.py --device cuda --batches 30 --warmup 3 --rounds 3

Random tensors (128 px, batch 64, 10 classes) through `vision_learner(resnet18, pretrained=False)`,
unfrozen. Each row trains the same learner for `warmup + batches` batches, either plainly or with
`ActivationStats(with_hist=True)` (a mean, std, near-zero fraction and 40-bin histogram per layer, kept on
the device until the end of the epoch). The rows alternate (plain, stats, plain, stats, ...) for `rounds`
rounds, so a machine that slows down or speeds up midway hurts both alike. A step is timed from the first
`before_batch` callback to the last `after_batch` one (the device is synchronised at each stamp); the
table gives the median over all timed batches of each kind, the overhead in ms, and the ratio, for the
wall time and for the CPU time of the process (all its threads). On a machine shared with other work the
CPU time is the steadier number: waiting for a core counts in the wall time only.
Asserts nothing.
"""
import argparse
import statistics
import time

import torch
from _common import device_sync, random_resnet18_learner

from minifast.callback.core import Callback
from minifast.callback.hook import ActivationStats
from minifast.core import set_seed


class StepTimer(Callback):
    "Record the wall time of each training batch, `before_batch` (first callback) to `after_batch` (last)."
    run_valid = False
    def __init__(self, sync):
        self.sync, self.times, self._start = sync, [], None

    def _stamp(self):
        self.sync()
        return time.perf_counter(), time.process_time()


class _Start(StepTimer):
    order = -1000
    def before_batch(self): self.timer._start = self._stamp()


class _End(StepTimer):
    order = 1000
    def after_batch(self): self.timer.times.append([b - a for a, b in zip(self.timer._start, self._stamp())])


def run(args, learn, with_stats, sync):
    "The (wall, CPU) times (s) of the timed batches of one epoch, with or without ActivationStats."
    timer = StepTimer(sync)
    start, end = _Start(sync), _End(sync)
    start.timer = end.timer = timer
    cbs = [start, end] + ([ActivationStats(with_hist=True)] if with_stats else [])
    set_seed(0)
    learn.fit(1, 1e-4, cbs=cbs)
    return timer.times[args.warmup:]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--bs', type=int, default=64)
    parser.add_argument('--batches', type=int, default=3, help='timed batches per row')
    parser.add_argument('--warmup', type=int, default=1, help='untimed first batches per row')
    parser.add_argument('--rounds', type=int, default=2, help='alternating plain/stats rounds')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = device_sync(device)
    learn = random_resnet18_learner(args.bs, args.size, args.batches + args.warmup, device)
    times = {'plain': [], 'ActivationStats(with_hist=True)': []}
    for _ in range(args.rounds):
        times['plain'] += run(args, learn, False, sync)
        times['ActivationStats(with_hist=True)'] += run(args, learn, True, sync)
    print(f"resnet18, {args.size} px, batch {args.bs}, {args.rounds} x {args.batches} timed batches per row "
          f"on {device} ({torch.get_num_threads()} threads), median ms per training step")
    print(f"{'':<34}{'wall ms':>10}{'overhead':>10}{'ratio':>8}{'cpu ms':>10}{'overhead':>10}{'ratio':>8}")
    med = {k: [1000 * statistics.median(t[j] for t in v) for j in (0, 1)] for k, v in times.items()}
    for name, m in med.items():
        print(f"{name:<34}" + ''.join(f"{m[j]:>10.1f}{m[j] - med['plain'][j]:>10.1f}{m[j] / med['plain'][j]:>8.3f}"
                                      for j in (0, 1)))


if __name__ == '__main__':
    main()
