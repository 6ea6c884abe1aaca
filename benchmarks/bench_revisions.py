"""minifast at two git revisions on the same small chapter-5 workload: did a change make training slower?

    .venv/bin/python benchmarks/bench_revisions.py --base HEAD~5              # HEAD~5 against the working tree
    .venv/bin/python benchmarks/bench_revisions.py --base v1 --head v2 --runs 5

Each revision is checked out once into a temporary `git worktree` (the working tree itself for `--head .`).
Every measurement is a fresh process of this same interpreter with `PYTHONPATH` pointing at that checkout, in
strict alternation base, head, base, head..., so that a machine that slows down or speeds up during the run
affects both alike. Each process times `from minifast.vision.all import *`, builds the same data and model from
the same seeds, and times `lr_find` (a fixed number of iterations), one epoch of `fit_one_cycle` and `get_preds`
on the validation set. The table gives the median of each over the runs and the ratio head / base (< 1: faster).
Nothing is asserted; timings on a busy machine vary, so compare ratios from one run, not numbers across runs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = ('import', 'lr_find', 'epoch', 'get_preds')


def child(cfg):
    "One measurement, in a fresh process: prints one `RESULT {json}` line."
    import torch

    torch.set_num_threads(cfg['threads'])
    t = time.perf_counter()
    import minifast.vision.all as mf

    out = {'import': time.perf_counter() - t, 'file': mf.__file__}

    def seeded(seed=0):
        import random

        import numpy as np

        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)

    seeded()
    get_y = mf.using_attr(mf.RegexLabeller(r'(.+)_\d+.jpg$'), 'name')
    block = mf.DataBlock(blocks=(mf.ImageBlock, mf.CategoryBlock), get_items=mf.get_image_files,
                         splitter=mf.RandomSplitter(seed=42), get_y=get_y,
                         item_tfms=mf.Resize(cfg['presize']), batch_tfms=mf.aug_transforms(size=cfg['size']))
    dls = block.dataloaders(Path(cfg['data']) / 'images', bs=cfg['bs'], num_workers=0)
    seeded()
    learn = mf.vision_learner(dls, mf.resnet18, pretrained=False, metrics=mf.error_rate)
    with learn.no_bar():
        t = time.perf_counter()
        learn.lr_find(num_it=cfg['lr_find_it'], show_plot=False)
        out['lr_find'] = time.perf_counter() - t
        t = time.perf_counter()
        learn.fit_one_cycle(1, 1e-3)
        out['epoch'] = time.perf_counter() - t
        t = time.perf_counter()
        learn.get_preds()
        out['get_preds'] = time.perf_counter() - t
    print('RESULT ' + json.dumps(out), flush=True)


def checkout(rev, tmp):
    "A directory holding `rev`: the working tree for '.', else a temporary detached worktree."
    if rev == '.':
        return ROOT
    dest = Path(tmp) / rev.replace('/', '_').replace('~', '_')
    subprocess.run(['git', '-C', str(ROOT), 'worktree', 'add', '-q', '--detach', str(dest), rev], check=True)
    return dest


def measure(where, cfg):
    env = dict(os.environ, PYTHONPATH=str(where), OMP_NUM_THREADS=str(cfg['threads']))
    res = subprocess.run([sys.executable, __file__, '--child', json.dumps(cfg)], env=env, capture_output=True,
                         text=True, check=False)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith('RESULT ')]
    if res.returncode or not lines:
        raise SystemExit(f'bench_revisions: the run in {where} failed:\n{res.stderr[-3000:]}')
    out = json.loads(lines[-1][len('RESULT '):])
    if not out.pop('file').startswith(str(where)):
        raise SystemExit(f'bench_revisions: the run in {where} imported minifast from elsewhere.')
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--base', default='HEAD~1', help='a git revision (default HEAD~1)')
    p.add_argument('--head', default='.', help="a git revision, or '.' for the working tree (default)")
    p.add_argument('--runs', type=int, default=3)
    p.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument('--n-per-breed', type=int, default=10)
    p.add_argument('--lr-find-it', type=int, default=20)
    p.add_argument('--child', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(json.loads(args.child))
    from minifast.data.toy_pets import toy_pets

    data = toy_pets(dest=Path(tempfile.gettempdir()) / f'minifast_bench_toy_pets_{args.n_per_breed}',
                    n_per_breed=args.n_per_breed)
    cfg = dict(threads=args.threads, data=str(data), presize=96, size=64, bs=32, lr_find_it=args.lr_find_it)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {'base': checkout(args.base, tmp), 'head': checkout(args.head, tmp)}
        try:
            got = {k: [] for k in trees}
            for i in range(args.runs):
                for k, where in trees.items():
                    got[k].append(measure(where, cfg))
                    print(f'run {i + 1}/{args.runs} {k}: ' + ', '.join(f'{r} {got[k][-1][r]:.2f}s' for r in ROWS),
                          flush=True)
        finally:
            for k, where in trees.items():
                if where != ROOT:
                    subprocess.run(['git', '-C', str(ROOT), 'worktree', 'remove', '--force', str(where)], check=False)
    print(f'\nbase {args.base}, head {args.head}; {args.runs} runs each, alternating; {args.threads} threads; '
          f'{37 * args.n_per_breed} images, resnet18 64 px, bs 32; medians in seconds')
    print(f"| {'row':<10} | {'base':>8} | {'head':>8} | {'head/base':>9} |")
    print(f"|{'-' * 12}|{'-' * 10}:|{'-' * 10}:|{'-' * 11}:|")
    for r in ROWS:
        b, h = (statistics.median(o[r] for o in got[k]) for k in ('base', 'head'))
        print(f'| {r:<10} | {b:8.3f} | {h:8.3f} | {h / b:9.2f} |')


if __name__ == '__main__':
    main()
