"""Time one batch of training augmentation: minifast's fused batch pipeline against torchvision.transforms.v2
applied image by image (the approach of the course texts), and kornia when it is installed.

    python benchmarks/bench_augment.py                  # CPU, torch's default number of threads
    python benchmarks/bench_augment.py --device cuda    # on the GPU (timings synchronised)
    python benchmarks/bench_augment.py --threads 1      # one thread, as in a DataLoader worker
    python benchmarks/bench_augment.py --targets        # only the image + mask and image + points rows

Each row is the median over --runs batches after --warmup batches, in ms per batch of 64 uint8 images: wall-clock
time, and on the CPU also the CPU time of this process (all its threads), which other programs running at the same
time disturb much less.
"""
import argparse
import os
import statistics
import time

import torch
import torchvision.transforms.v2 as T
from torchvision import tv_tensors

from minifast.data.follow import apply_pipelines
from minifast.data.transforms import Pipeline
from minifast.vision.augment_batch import Hue, Saturation, aug_transforms
from minifast.vision.core import IntToFloatTensor, Normalize, imagenet_stats

CASES = [(160, 128), (460, 224)]   # (presized input, training size): fastbook's two presizing setups, scaled


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def median_ms(fn, x, device, warmup, runs):
    "Median wall-clock and CPU milliseconds of `fn(x)`."
    for _ in range(warmup): fn(x)
    wall, cpu = [], []
    for _ in range(runs):
        sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(x)
        sync(device)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def fused(size, device, colour=False, channels_last=False, int_to_float=False):
    "aug_transforms(size, min_scale=0.75) then Normalize: uint8 in, normalised float out."
    tfms = aug_transforms(size=size, min_scale=0.75, channels_last=channels_last)
    if colour: tfms += [Saturation(0.2), Hue(0.1)]
    if int_to_float: tfms = [IntToFloatTensor()] + tfms   # what ImageBlock adds: the conversion at full size, first
    pipe = Pipeline(tfms + [Normalize.from_stats(*imagenet_stats)])
    g = torch.Generator(device=device).manual_seed(0)
    return lambda x: pipe(x, split_idx=0, generator=g)


def torchvision_tfms(size, colour=False):
    "The same augmentations with torchvision (bilinear everywhere, as in the fused pipeline)."
    bilinear = T.InterpolationMode.BILINEAR
    jitter = (T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1) if colour
              else T.ColorJitter(brightness=0.2, contrast=0.2))
    return T.Compose([T.RandomResizedCrop(size, scale=(0.75, 1), ratio=(1, 1), interpolation=bilinear, antialias=True),
                      T.RandomHorizontalFlip(),
                      T.RandomApply([T.RandomRotation(10, interpolation=bilinear)], p=0.75),
                      T.RandomPerspective(0.2, p=0.75, interpolation=bilinear),
                      T.RandomApply([jitter], p=0.75)])


def torchvision_per_image(size, colour=False):
    per_image = torchvision_tfms(size, colour)
    to_float = T.Compose([T.ToDtype(torch.float32, scale=True), T.Normalize(*imagenet_stats)])
    return lambda x: to_float(torch.stack([per_image(im) for im in x]))


def torchvision_whole_batch(size, colour=False):
    "torchvision v2 on the batch tensor: fast, but one set of random parameters for all 64 images."
    tfms = T.Compose([torchvision_tfms(size, colour), T.ToDtype(torch.float32, scale=True),
                      T.Normalize(*imagenet_stats)])
    return lambda x: tfms(x)


def kornia_pipeline(size, colour=False):
    import kornia.augmentation as K
    aug = K.AugmentationSequential(
        K.RandomResizedCrop((size, size), scale=(0.75, 1.), ratio=(1., 1.)), K.RandomHorizontalFlip(),
        K.RandomRotation(10., p=0.75), K.RandomPerspective(0.2, p=0.75),
        K.ColorJitter(0.2, 0.2, 0.2 if colour else 0., 0.1 if colour else 0., p=0.75),
        K.Normalize(torch.tensor(imagenet_stats[0]), torch.tensor(imagenet_stats[1])))
    return lambda x: aug(x.float().div_(255))


def fused_with_target(size, device, kind):
    """Image + mask or image + points as a DataLoader runs them: the image's pipeline, then the target's copies of
    the geometric transforms (`for_kind`) replaying the same draws."""
    tfms = aug_transforms(size=size, min_scale=0.75)
    pipes = [Pipeline(tfms + [Normalize.from_stats(*imagenet_stats)]),
             Pipeline([t.for_kind(kind) for t in tfms if hasattr(t, 'for_kind')])]
    g = torch.Generator(device=device).manual_seed(0)
    return lambda xy: apply_pipelines(pipes, xy, ('image', kind), split_idx=0, generator=g)


def torchvision_with_target(size, kind):
    "torchvision v2 image by image, the target as a `tv_tensors.Mask` or `tv_tensors.KeyPoints` moved with it."
    per_image = torchvision_tfms(size)
    to_float = T.Compose([T.ToDtype(torch.float32, scale=True), T.Normalize(*imagenet_stats)])
    def run(xy):
        x, y = xy
        hw = tuple(x.shape[-2:])
        wrap = ((lambda t: tv_tensors.Mask(t)) if kind == 'mask' else
                (lambda t: tv_tensors.KeyPoints((t + 1) * torch.tensor([hw[1] / 2, hw[0] / 2]), canvas_size=hw)))
        outs = [per_image(tv_tensors.Image(im), wrap(t)) for im, t in zip(x, y)]
        return to_float(torch.stack([o[0] for o in outs])), torch.stack([o[1] for o in outs])
    return run


def targets_table(args, device):
    "Image + mask and image + points batches: the fused path against torchvision v2's per-image chain."
    print(f"\n| {'input -> output':<15} | {'method':<60} | {'ms / batch':>10} | {'CPU ms':>8} "
          f"| {'vs torchvision per image':>24} |")
    print(f"|{'-' * 17}|{'-' * 62}|{'-' * 12}|{'-' * 10}|{'-' * 26}|")
    for src, size in CASES:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (args.bs, 3, src, src), dtype=torch.uint8, generator=g).to(device)
        targets = {'mask': torch.randint(0, 12, (args.bs, src, src), dtype=torch.uint8, generator=g).to(device),
                   'points': (torch.rand(args.bs, 4, 2, generator=g) * 1.6 - 0.8).to(device)}
        for kind, y in targets.items():
            what = 'mask' if kind == 'mask' else '4 points'
            rows = [(f'minifast fused: image + {what}', fused_with_target(size, device, kind)),
                    (f'torchvision v2 per image: image + {what} (tv_tensors)', torchvision_with_target(size, kind))]
            results = [(label, median_ms(fn, (x, y), device, args.warmup, args.runs)) for label, fn in rows]
            base = results[-1][1]
            for label, (ms, cpu) in results:
                ratio = f"{base[0] / ms:.1f}x" + (f" ({base[1] / cpu:.1f}x CPU)" if device.type == 'cpu' else '')
                cpu_ms = cpu if device.type == 'cpu' else float('nan')
                print(f"| {f'{src} -> {size}':<15} | {label:<60} | {ms:10.1f} | {cpu_ms:8.0f} | {ratio:>24} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--bs', type=int, default=64)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--colour', action='store_true', help='also compare with saturation and hue')
    parser.add_argument('--threads', type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument('--targets', action='store_true', help='only the image + mask and image + points rows')
    args = parser.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available.')
    try:
        import kornia  # noqa: F401
        have_kornia = True
    except ImportError: have_kornia = False
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    load = ', '.join(f'{v:.1f}' for v in os.getloadavg())
    print(f"torch {torch.__version__}, {name} ({os.cpu_count()} CPUs, load average {load}); "
          f"batch of {args.bs} uint8 images; "
          f"median of {args.runs} runs after {args.warmup} warm-up\n")
    if args.targets:
        targets_table(args, device)
        return
    print(f"| {'input -> output':<15} | {'method':<72} | {'ms / batch':>10} | {'CPU ms':>8} "
          f"| {'vs torchvision per image':>24} |")
    print(f"|{'-' * 17}|{'-' * 74}|{'-' * 12}|{'-' * 10}|{'-' * 26}|")
    for src, size in CASES:
        x = torch.randint(0, 256, (args.bs, 3, src, src), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0)).to(device)
        for colour in ([False, True] if args.colour else [False]):
            extra = ' + saturation, hue' if colour else ''
            rows = [(f'minifast aug_transforms (fused){extra}', fused(size, device, colour)),
                    (f'minifast aug_transforms (fused), channels_last{extra}',
                     fused(size, device, colour, channels_last=True)),
                    (f'minifast IntToFloatTensor + aug_transforms (fused){extra}',
                     fused(size, device, colour, int_to_float=True)),
                    (f'torchvision v2 per image{extra}', torchvision_per_image(size, colour)),
                    (f'torchvision v2 on the whole batch (same params for all){extra}',
                     torchvision_whole_batch(size, colour)),
                    (f'kornia{extra}', kornia_pipeline(size, colour) if have_kornia else None)]
            results = {label: median_ms(fn, x, device, args.warmup, args.runs) if fn else None for label, fn in rows}
            base = results[f'torchvision v2 per image{extra}']
            for label, res in results.items():
                if res is None:
                    print(f"| {f'{src} -> {size}':<15} | {label:<72} | {'-':>10} | {'-':>8} | {'not installed':>24} |")
                    continue
                (ms, cpu), ratio = res, f"{base[0] / res[0]:.1f}x"
                if device.type == 'cpu': ratio += f" ({base[1] / res[1]:.1f}x CPU)"
                cpu_ms = cpu if device.type == 'cpu' else float('nan')
                print(f"| {f'{src} -> {size}':<15} | {label:<72} | {ms:10.1f} | {cpu_ms:8.0f} | {ratio:>24} |")
    targets_table(args, device)
    print(f"\nload average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == '__main__':
    with torch.inference_mode(): main()
