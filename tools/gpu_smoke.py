"""End-to-end smoke of the CUDA paths that no unit test runs on a GPU: one short run of each on the built-in data.

Each check prints PASS or FAIL with its error and the next one still runs; the exit status is the number of
failures. Run by tools/gpu_check.sh on a lent GPU machine; `python tools/gpu_smoke.py --device cpu` rehearses it.
"""
import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from minifast.vision.all import (ActivationStats, CategoryBlock, CutMix, DataBlock, ImageBlock,
                                 LabelSmoothingCrossEntropy, Learner, MixUp, Normalize, RandomSplitter, RegexLabeller,
                                 Resize, aug_transforms,
                                 error_rate, get_image_files, grad_cam, class_activation_map, load_learner, using_attr,
                                 vision_learner, xresnet18)
from minifast.data.toy_pets import toy_pets

results = []


def check(name):
    def wrap(fn):
        t0 = time.perf_counter()
        try:
            detail = fn()
            results.append((name, 'PASS', f"{time.perf_counter() - t0:.1f} s {detail or ''}"))
        except Exception as e:  # report every failure, then go on with the next check
            traceback.print_exc()
            results.append((name, 'FAIL', f"{type(e).__name__}: {e}"[:300]))
        print(f"{results[-1][1]} {name}: {results[-1][2]}", flush=True)
        return fn
    return wrap


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--device', default='cuda')
    args = p.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    path = toy_pets(n_per_breed=6, seed=0)
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=RandomSplitter(seed=0),
                      get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'), item_tfms=Resize(96),
                      batch_tfms=[*aug_transforms(size=64, min_scale=0.75), Normalize()])
    dls = block.dataloaders(path/'images', bs=32, seed=0, device=dev, num_workers=0)
    out = Path(tempfile.mkdtemp())

    @check('dls on device, batch augmentation')
    def _():
        xb, yb = dls.one_batch()
        assert xb.device.type == dev.type and xb.shape[-2:] == (64, 64), (xb.device, xb.shape)
        assert torch.isfinite(xb).all()
        return f"{tuple(xb.shape)} {xb.dtype}"

    for prec in ('fp32', 'fp16', 'bf16'):
        @check(f'vision_learner lite0 fine_tune, {prec}, channels_last')
        def _():
            learn = vision_learner(dls, 'efficientnet_lite0', pretrained=False, metrics=error_rate)
            if prec == 'fp16': learn.to_fp16()
            if prec == 'bf16': learn.to_bf16()
            learn.fine_tune(1, base_lr=1e-3)
            p0 = next(learn.model.parameters())
            assert p0.device.type == dev.type and p0.dtype == torch.float32
            vals = learn.recorder.values[-1]
            assert all(v == v for v in vals), vals
            return f"values {[round(float(v), 4) for v in vals]}"

    @check('xresnet18 + MixUp + label smoothing + fp16')
    def _():
        learn = Learner(dls, xresnet18(n_out=dls.c), loss_func=LabelSmoothingCrossEntropy(), metrics=error_rate,
                        cbs=MixUp(0.4)).to_fp16()
        learn.fit_one_cycle(1, 3e-3)
        return f"values {learn.recorder.values[-1]}"

    @check('CutMix + bf16')
    def _():
        learn = Learner(dls, xresnet18(n_out=dls.c), metrics=error_rate, cbs=CutMix(1.)).to_bf16()
        learn.fit(1, 1e-3)
        return f"values {learn.recorder.values[-1]}"

    @check('ActivationStats(with_hist=True) on the device')
    def _():
        learn = Learner(dls, xresnet18(n_out=dls.c), cbs=ActivationStats(with_hist=True))
        learn.fit(1, 1e-3)
        st = learn.activation_stats
        st.plot_layer_stats(0); st.color_dim(0)
        return 'ok'

    learn = vision_learner(dls, 'resnet18', pretrained=False, metrics=error_rate)
    learn.fit(1, 1e-3)

    @check('CAM and Grad-CAM on the device')
    def _():
        x = dls.valid.one_batch()[0][0]
        cam, g = class_activation_map(learn, x), grad_cam(learn, x)
        assert torch.isfinite(cam).all() and torch.isfinite(g).all()
        return f"cam {tuple(cam.shape)} grad_cam {tuple(g.shape)}"

    @check('get_preds, tta, predict, export -> load_learner on cpu')
    def _():
        preds, targs = learn.get_preds()
        tp, _ = learn.tta(n=2)
        assert preds.shape == tp.shape
        fname = dls.valid_ds.items[0]
        label, idx, probs = learn.predict(fname)
        learn2 = load_learner(learn.export(out/'m.pkl'), cpu=True)
        label2, idx2, probs2 = learn2.predict(fname)
        assert label == label2 and torch.allclose(probs.cpu(), probs2, atol=1e-3), (probs[:5], probs2[:5])
        return f"{label} p={float(probs[idx]):.3f}"

    @check('lr_find on the device')
    def _():
        learn3 = vision_learner(dls, 'resnet18', pretrained=False)
        s = learn3.lr_find(num_it=20, show_plot=False)
        return f"valley {s.valley:.2e}"

    print('\n| check | result | detail |\n| --- | --- | --- |')
    for r in results: print(f"| {r[0]} | {r[1]} | {r[2]} |")
    return sum(r[1] == 'FAIL' for r in results)


if __name__ == '__main__':
    sys.exit(main())
