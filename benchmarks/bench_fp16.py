"""Mixed precision against float32: training step time and peak memory of resnet34 through the Learner.

    python benchmarks/bench_fp16.py            # CUDA if present (fp32 vs fp16 vs bf16), else CPU (fp32 vs bf16)
    python benchmarks/bench_fp16.py --device cpu --bs 8 --size 224 --batches 4
    python benchmarks/bench_fp16.py --formats channels_last,contiguous   # also the NCHW layout (default on CUDA)

On a CPU without native bfloat16 (AVX2 only, no AVX512-BF16 or AMX) bfloat16 is emulated and an order
of magnitude slower than float32 (measured: resnet34, 224 px, batch 8 on 2 AVX2 cores: 9.9 s per step
in float32, 125 s in bfloat16); there the CPU rows only check that the path works.

Each precision runs in a fresh process, so the peak memory of one does not hide the other's: on CUDA
`torch.cuda.max_memory_allocated`, on the CPU the process's peak resident size (which includes
the Python interpreter and torch, about the same for every row). Step time is the median over the
training batches after --warmup, each timed from `before_batch` to `after_batch` with the device
synchronised, so it covers forward, loss, backward and optimiser step. The data are random images
already in memory: only the model is measured. `--formats` picks the weights' memory layout:
`channels_last` is `vision_learner`'s default, `contiguous` is PyTorch's NCHW (`learn.to_contiguous()`).
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def run_one(args):
    "Train a few batches at one precision; print a JSON line with the measurements."
    import torch
    from minifast.callback.core import Callback
    from minifast.data.core import DataLoaders, Datasets
    from minifast.data.transforms import Categorize
    from minifast.vision.learner import resnet34, vision_learner

    device = torch.device(args.device)
    torch.manual_seed(0)
    n_train = args.bs * (args.batches + args.warmup)
    base = torch.rand(min(n_train, 64), 3, args.size, args.size)
    labels = [f'c{i % 10}' for i in range(n_train + args.bs)]
    dsets = Datasets(list(range(n_train + args.bs)),
                     [[lambda i: base[i % len(base)]], [lambda i: labels[i], Categorize()]],
                     splits=(range(n_train), range(n_train, n_train + args.bs)), kinds=('image', 'category'))
    dls = DataLoaders.from_dsets(dsets, bs=args.bs, device=device, seed=0, num_workers=0)
    learn = vision_learner(dls, resnet34, pretrained=False, channels_last=args.format == 'channels_last')
    learn.unfreeze()
    learn.remove_cb(learn.progress)
    if args.precision == 'fp16': learn.to_fp16()
    elif args.precision == 'bf16': learn.to_bf16()

    def sync():
        if device.type == 'cuda': torch.cuda.synchronize(device)

    class StepTimer(Callback):
        order, run_valid = 100, False
        def before_fit(self): self.times = []
        def before_batch(self): sync(); self.start = time.perf_counter()
        def after_batch(self): sync(); self.times.append(time.perf_counter() - self.start)

    timer = StepTimer()
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    learn.fit(1, 1e-3, cbs=timer)
    times = timer.times[args.warmup:]
    step = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda'
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    mp = getattr(learn, 'mixed_precision', None)
    print(json.dumps({'precision': args.precision, 'format': args.format,
                      'autocast': str(mp.dtype) if mp else 'none', 'step_ms': step * 1000,
                      'images_per_s': args.bs / step, 'peak_mb': peak, 'skipped_steps': mp.skipped_steps if mp else 0,
                      'train_loss': learn.recorder.values[-1][0], 'device': str(device),
                      'gpu': torch.cuda.get_device_name(device) if device.type == 'cuda' else None}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default=None, help="'cuda' or 'cpu' (default: cuda when available)")
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--bs', type=int, default=None, help='batch size (default 64 on CUDA, 4 on the CPU)')
    parser.add_argument('--batches', type=int, default=None, help='timed batches (default 30 on CUDA, 2 on the CPU)')
    parser.add_argument('--warmup', type=int, default=None,
                        help='untimed first batches (default 3 on CUDA, 1 on the CPU)')
    parser.add_argument('--precisions', default=None, help='comma-separated, e.g. fp32,fp16,bf16')
    parser.add_argument('--formats', default=None,
                        help="memory layouts, comma-separated: channels_last, contiguous "
                             "(default: both on CUDA, channels_last on the CPU)")
    parser.add_argument('--precision', default=None, help=argparse.SUPPRESS)  # one run, in a child process
    parser.add_argument('--format', default='channels_last', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    cuda = args.device.startswith('cuda')
    args.bs = args.bs or (64 if cuda else 4)
    args.batches = args.batches or (30 if cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    if args.precision is not None: return run_one(args)

    precisions = (args.precisions or ('fp32,fp16,bf16' if cuda else 'fp32,bf16')).split(',')
    formats = (args.formats or ('channels_last,contiguous' if cuda else 'channels_last')).split(',')
    for f in formats:
        if f not in ('channels_last', 'contiguous'):
            parser.error(f"--formats: {f!r} is not channels_last or contiguous")
    rows = []
    for f in formats:
        for p in precisions:
            cmd = [sys.executable, __file__, '--precision', p, '--format', f, '--device', args.device,
                   '--size', str(args.size),
                   '--bs', str(args.bs), '--batches', str(args.batches), '--warmup', str(args.warmup)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{p} {f}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if not rows: sys.exit(1)
    print(f"resnet34, {args.size} px, batch {args.bs}, {args.batches} timed batches on {rows[0]['gpu'] or 'CPU'} "
          f"(peak: {'allocated GPU memory' if cuda else 'process resident size'})")
    print(f"{'precision':<10}{'layout':<15}{'autocast':<16}{'step ms':>10}{'img/s':>10}{'peak MB':>10}{'skipped':>9}")
    ref = rows[0]['step_ms']
    for r in rows:
        print(f"{r['precision']:<10}{r['format']:<15}{r['autocast']:<16}{r['step_ms']:>10.1f}{r['images_per_s']:>10.1f}{r['peak_mb']:>10.0f}"
              f"{r['skipped_steps']:>9}   x{ref / r['step_ms']:.2f}")


if __name__ == '__main__':
    main()
