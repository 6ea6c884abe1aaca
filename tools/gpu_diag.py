"""Where does a lite0 learner's slow epoch on a GPU go? Times each phase of each batch with CUDA syncs.

Prints, per configuration, the time of: getting the batch (loader + batch augmentation), forward, loss,
backward, step, for each batch of a frozen and an unfrozen epoch. `python tools/gpu_diag.py --device cpu` rehearses.
"""
import argparse
import time

import torch

from minifast.callback.core import Callback
from minifast.data.toy_pets import toy_pets
from minifast.vision.all import (CategoryBlock, DataBlock, ImageBlock, RandomSplitter, RegexLabeller, Resize,
                                 aug_transforms, get_image_files, using_attr, vision_learner)


class PhaseTimer(Callback):
    "Records the wall time between batch events, synchronising the device at each."
    order = 100

    def __init__(self, sync): self.sync, self.rows, self.t = sync, [], None

    def _mark(self, name):
        self.sync(); now = time.perf_counter()
        if self.t is not None: self.cur[name] = (now - self.t) * 1e3
        self.t = now

    def before_epoch(self): self.sync(); self.t = time.perf_counter()
    def before_batch(self): self.cur = {}; self._mark('get batch')
    def after_pred(self): self._mark('forward')
    def after_loss(self): self._mark('loss')
    def after_backward(self): self._mark('backward')
    def after_step(self): self._mark('step')
    def after_batch(self):
        self._mark('rest'); self.cur['train'] = self.learn.training; self.rows.append(self.cur)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--device', default='cuda')
    args = p.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    path = toy_pets(n_per_breed=6, seed=0)
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=RandomSplitter(seed=0),
                      get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'), item_tfms=Resize(96),
                      batch_tfms=aug_transforms(size=64, min_scale=0.75))
    dls = block.dataloaders(path/'images', bs=32, seed=0, device=dev, num_workers=0)
    for arch, cl, bench in [('efficientnet_lite0', True, False), ('efficientnet_lite0', True, False),
                            ('efficientnet_lite0', False, False), ('efficientnet_lite0', True, True),
                            ('resnet18', True, False)]:
        torch.backends.cudnn.benchmark = bench
        timer = PhaseTimer(sync)
        learn = vision_learner(dls, arch, pretrained=False, channels_last=cl, cbs=timer)
        learn.remove_cb(learn.progress)
        t0 = time.perf_counter(); learn.fine_tune(1, base_lr=1e-3); total = time.perf_counter() - t0
        print(f"\n{arch} channels_last={cl} cudnn.benchmark={bench}: fine_tune(1) {total:.2f} s")
        for i, r in enumerate(timer.rows):
            kind = 'train' if r.pop('train') else 'valid'
            print(f"  {kind} batch {i}: " + ", ".join(f"{k} {v:.0f}" for k, v in r.items()) + " ms")
    if dev.type == 'cuda':
        from torch.profiler import ProfilerActivity, profile
        torch.backends.cudnn.benchmark = False
        learn = vision_learner(dls, 'efficientnet_lite0', pretrained=False)
        learn.remove_cb(learn.progress)
        learn.freeze()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            learn.fit(1, 1e-3)
        print(prof.key_averages().table(sort_by='cpu_time_total', row_limit=25))


if __name__ == '__main__':
    main()
