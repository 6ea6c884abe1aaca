"""One rank of the `torchrun` runs of tests/test_distributed.py: `python ddp_worker.py MODE OUT_DIR` writes what the
rank saw to OUT_DIR/rank{r}.json (shards, a hash of the final state, recorder values, and the same values computed by
one process over the whole validation set after `distrib_ctx`)."""
import hashlib
import json
import math
import os
import sys
import warnings
from pathlib import Path

import torch

from minifast.vision.all import (CSVLogger, EarlyStoppingCallback, F1Score, GradientAccumulation, ImageDataLoaders,
                                 Learner, Resize, SaveModelCallback, accuracy, error_rate, get_image_files, resnet18,
                                 toy_pets, vision_learner)
from minifast.callback.core import Callback
from minifast.distributed import num_distrib, rank_distrib
from minifast.test_utils import synth_dls, synth_mlp

torch.set_num_threads(1)


def state_hash(model):
    h = hashlib.sha256()
    for k, v in model.state_dict().items(): h.update(k.encode()); h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def shard_items(dl):
    "The dataset positions this rank's loader reads in one epoch (items are told apart by their input row)."
    rows = {tuple(dl.dataset[i][0].tolist()): i for i in range(len(dl.dataset))}
    return [rows[tuple(x.tolist())] for b in dl.new(drop_last=False) for x in b[0]]


class InfiniteLossOnRank1(Callback):
    "Make the loss of training batch 2 infinite on rank 1 only (the gradients stay finite)."
    order = 15   # before StepGuard (20) looks at the loss
    def after_loss(self):
        if self.learn.training and self.learn.iter == 2 and rank_distrib() == 1:
            self.learn.loss = self.learn.loss + math.inf


def synth(out):
    rank = int(os.environ['RANK'])
    learn = Learner(synth_dls(n=264, n_valid=61, bs=16), synth_mlp(seed=rank), lr=1e-2, path=out,
                    metrics=[accuracy, F1Score()], cbs=CSVLogger())   # different initial weights: DDP sends rank 0's
    res, saver = {}, SaveModelCallback()
    with learn.distrib_ctx():
        res['world'] = [rank_distrib(), num_distrib()]
        res['shard'] = shard_items(learn.dls.train)
        res['n_batches'] = len(learn.dls.train)
        learn.to_bf16()
        learn.fit(1, 1e-3, cbs=GradientAccumulation(32))   # bs 16: every other batch under no_sync
        learn.to_fp32()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            learn.fit(1, 1e-3, cbs=InfiniteLossOnRank1())   # finite gradients: only rank 1's StepGuard sees it
        res['skipped'] = learn.recorder.skipped_steps
        learn.fit_one_cycle(3, 1e-2, cbs=[saver, EarlyStoppingCallback(patience=5)])
        res['values'], res['best_epoch'] = learn.recorder.values, saver.best_epoch   # the best epoch's weights are back
        res['validate'] = learn.validate()
        preds, targs = learn.get_preds()
        res['saved'] = learn.save('final') is not None
    res['ref_validate'] = learn.validate()   # one process, the whole validation set, the same weights
    ref_preds, ref_targs = learn.get_preds()
    res['preds_close'] = bool(torch.allclose(preds, ref_preds, atol=1e-6) and torch.equal(targs, ref_targs))
    res['hash'] = state_hash(learn.model)
    return res


def vision(out):
    path = toy_pets(Path(out)/'pets', n_per_breed=2)   # drawn by the test before
    dls = ImageDataLoaders.from_name_func(path, get_image_files(path/'images'), lambda n: n[0].isupper(),
                                          valid_pct=0.3, seed=0, item_tfms=Resize(32), bs=4, device='cpu')
    torch.manual_seed(0)   # the same start on every run: an unseeded one made the short search below diverge at times
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=error_rate, path=out)
    res = {}
    with learn.distrib_ctx(): res['lr'] = learn.lr_find(end_lr=1e-1, num_it=6, show_plot=False).valley
    with learn.distrib_ctx():   # a second context reuses the process group
        learn.fine_tune(1, 1e-3)
        res['values'] = learn.recorder.values[-1]
        res['export'] = learn.export('export.pkl') is not None
    res['ref_validate'] = learn.validate()
    res['hash'] = state_hash(learn.model)
    return res


def cli(out, *extra):
    "`minifast train` as torchrun starts it on each rank; the learner it builds is kept to hash its final weights."
    import minifast.vision.learner
    from minifast.cli import main
    made, build = [], minifast.vision.learner.vision_learner
    def keep(*args, **kwargs):
        made.append(build(*args, **kwargs))
        return made[-1]
    minifast.vision.learner.vision_learner = keep   # run_train imports it when it runs
    out = Path(out)
    code = main(['train', str(out/'images'), '--label-re', r'(.+)_\d+.jpg$', '--size', '32', '--presize', '40',
                 '--epochs', '2', '--bs', '4', '--num-workers', '0', '--out', str(out/'run'), *extra])
    return {'code': code, 'hash': state_hash(made[0].model)}


def fail(out):
    learn = Learner(synth_dls(n=64, n_valid=16, bs=8), synth_mlp(seed=0), lr=1e-2, path=out)
    with learn.distrib_ctx():
        learn.fit(1)
        if rank_distrib() == 1: raise ValueError("rank 1 stops here on purpose")
        learn.fit(1)
    return {}


if __name__ == '__main__':
    mode, out, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    res = {'synth': synth, 'vision': vision, 'fail': fail, 'cli': cli}[mode](out, *extra)
    Path(out, f"rank{os.environ['RANK']}.json").write_text(json.dumps(res))
