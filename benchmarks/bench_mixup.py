"""MixUp and CutMix: what they add to a training step of resnet18 (random tensors, 128 px, batch 64).

    python benchmarks/bench_mixup.py                       # CPU, 3 timed batches per row after 1 warm-up
    python benchmarks/bench_mixup.py --device cuda --batches 30 --warmup 3

Each row trains the same learner for a few batches with no mixing, with `MixUp()` and with `CutMix()`.
Within each batch, stamps taken by two timing callbacks (one first, one last in each event) split the
time: `mix ms` is `before_batch` (where the mixing happens, plus StepGuard's BatchNorm snapshot that every
row has), `loss ms` is from `after_pred` to `after_loss` (the mixed loss computes each item's loss against
both targets), `step ms` is the whole batch from `before_batch` to `after_batch`. The overhead column is
the extra mix and loss time of the row over the plain row, as a share of the plain step; it is the
number to read (the step times themselves vary more than the overhead from batch to batch).
Medians over the timed batches; the device is synchronised at each stamp. Asserts nothing.
"""
import argparse
import statistics
import time

import torch
from _common import device_sync, random_resnet18_learner

from minifast.callback.core import Callback
from minifast.callback.mixup import CutMix, MixUp
from minifast.core import set_seed


class Stamps(Callback):
    "Record `perf_counter` at the events it is given, into a shared dict of lists (one entry per batch)."
    run_valid = False
    def __init__(self, order, events, log, sync):
        self.order, self._log, self._sync = order, log, sync
        for event, key in events.items(): setattr(self, event, self._stamper(key))

    def _stamper(self, key):
        def stamp():
            self._sync()
            self._log.setdefault(key, []).append(time.perf_counter())
        return stamp


def run(args, learn, mix_cb, sync):
    log = {}
    first = Stamps(-1000, {'before_batch': 'start', 'after_loss': 'loss_end', 'after_batch': 'end'}, log, sync)
    last = Stamps(1000, {'before_batch': 'mix_end', 'after_pred': 'loss_start'}, log, sync)
    set_seed(0)
    learn.fit(1, 1e-4, cbs=[first, last] + ([mix_cb] if mix_cb is not None else []))
    keep = slice(args.warmup, None)
    def median_ms(a, b): return 1000 * statistics.median([y - x for x, y in zip(log[a][keep], log[b][keep])])
    return dict(mix=median_ms('start', 'mix_end'), loss=median_ms('loss_start', 'loss_end'),
                step=median_ms('start', 'end'))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--bs', type=int, default=64)
    parser.add_argument('--batches', type=int, default=3, help='timed batches per row')
    parser.add_argument('--warmup', type=int, default=1, help='untimed first batches per row')
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = device_sync(device)
    learn = random_resnet18_learner(args.bs, args.size, args.batches + args.warmup, device)
    rows = [(name, run(args, learn, cb, sync)) for name, cb in [('plain', None), ('MixUp', MixUp()),
                                                                ('CutMix', CutMix())]]
    plain = rows[0][1]
    print(f"resnet18, {args.size} px, batch {args.bs}, {args.batches} timed batches on {device} "
          f"({torch.get_num_threads()} threads), median ms per batch")
    print(f"{'':<8}{'mix ms':>9}{'loss ms':>9}{'step ms':>10}{'overhead ms':>13}{'of a step':>11}{'step ratio':>12}")
    for name, r in rows:
        extra = (r['mix'] - plain['mix']) + (r['loss'] - plain['loss'])
        print(f"{name:<8}{r['mix']:>9.2f}{r['loss']:>9.2f}{r['step']:>10.1f}{extra:>13.2f}"
              f"{100 * extra / plain['step']:>10.2f}%{r['step'] / plain['step']:>12.3f}")


if __name__ == '__main__':
    main()
