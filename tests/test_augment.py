"""minifast.vision.augment_batch: the fused batch augmentation. Geometry against torchvision and exact pixel moves,
one grid_sample per batch, quality against a float64 reference, reproducibility, lighting against separate
implementations, configs, errors, and the DataLoader."""
import inspect
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from skimage import data as skdata

from minifast.data.core import DataLoader, Datasets
from minifast.data.transforms import Categorize, Pipeline, Transform
from minifast.vision import augment_batch as ab
from minifast.vision import warp
from minifast.vision.augment import aug_transforms as aug_transforms_from_augment
from minifast.vision.augment_batch import (BatchResize, Brightness, Contrast, Dihedral, Flip, FusedGeometry,
                                           FusedLighting,
                                           Hue, RandomResizedCropGPU, Rotate, Saturation, Warp, Zoom, aug_transforms,
                                           crop_mat, dihedral_mat, flip_mat, perspective_mat, rotate_mat, warp_batch,
                                           zoom_mat)
from minifast.vision.core import IntToFloatTensor, Normalize, imagenet_stats

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
T = lambda *v: torch.tensor([float(o) for o in v])


def gen(seed, device='cpu'): return torch.Generator(device=device).manual_seed(seed)


@pytest.fixture
def count_grid_sample(monkeypatch):
    "Replace F.grid_sample by a counting wrapper; the list holds the output shape of each call."
    calls, real = [], F.grid_sample
    def counting(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(tuple(out.shape))
        return out
    monkeypatch.setattr(torch.nn.functional, 'grid_sample', counting)
    return calls


def sampled(calls):
    """{image shape: how many images were sampled} over grid_sample `calls`
    (a uint8 batch on the CPU is sampled a few images per call)."""
    counts = {}
    for n, *shape in calls: counts[tuple(shape)] = counts.get(tuple(shape), 0) + n
    return counts


# ---- geometry: matrices against independent implementations -----------------------------------------------

def test_identity_is_exact():
    x = torch.rand(3, 3, 17, 23)
    torch.testing.assert_close(warp_batch(x, ab._eye(3)), x, atol=1e-5, rtol=0)
    xb = torch.randint(0, 256, (2, 3, 9, 9), dtype=torch.uint8)
    torch.testing.assert_close(warp_batch(xb, ab._eye(2)), xb.float() / 255, atol=1e-5, rtol=0)
    # transforms whose random parameters all came out as "do nothing"
    pipe = Pipeline(aug_transforms(p_affine=0., do_flip=False,
                                   max_lighting=0.) + [RandomResizedCropGPU(17, min_scale=1., ratio=(1, 1))])
    y = torch.rand(4, 3, 17, 17)
    for split_idx in (0, 1):
        torch.testing.assert_close(pipe(y, split_idx=split_idx, generator=gen(0)), y, atol=1e-5, rtol=0)


def test_exact_pixel_moves():
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(warp_batch(x, rotate_mat(T(90, -90), (8, 8))),
                               torch.stack([x[0].rot90(1, (-2, -1)), x[1].rot90(-1, (-2, -1))]), atol=1e-5, rtol=0)
    torch.testing.assert_close(warp_batch(x, flip_mat(torch.tensor([True, False]), torch.tensor([True, True]))),
                               torch.stack([x[0].flip(-1, -2), x[1].flip(-2)]), atol=1e-5, rtol=0)
    expected = [x[0], x[0].flip(-1), x[0].flip(-2), x[0].flip(-1, -2)]
    expected += [o.transpose(-2, -1) for o in expected]
    got = warp_batch(x[:1].expand(8, 3, 8, 8), dihedral_mat(torch.arange(8)))
    assert all((got[k] - e).abs().max() < 1e-5 for k, e in enumerate(expected)), "8 different symmetries"
    y = torch.rand(1, 3, 10, 12)
    for ac in (True, False):
        torch.testing.assert_close(warp_batch(y, crop_mat(T(3), T(2), T(6), T(5), (10, 12), ac), size=(5, 6),
                                              align_corners=ac),
                                   y[..., 2:7, 3:9], atol=1e-5, rtol=0)


def test_rotate_zoom_warp_match_torchvision():
    x = torch.rand(1, 3, 20, 31)   # not square: the rotation must happen in pixels, not stretched units
    bil = TF.InterpolationMode.BILINEAR
    ours = warp_batch(x, rotate_mat(T(30), (20, 31)), pad_mode='zeros')
    torch.testing.assert_close(ours, TF.rotate(x, 30., interpolation=bil), atol=1e-4, rtol=0)
    ours = warp_batch(x, zoom_mat(T(1.3)), pad_mode='zeros')
    torch.testing.assert_close(ours,
                               TF.affine(x, angle=0., translate=[0, 0], scale=1.3, shear=[0., 0.], interpolation=bil),
                               atol=1e-4, rtol=0)
    mx, my, h, w = 0.15, -0.1, 20, 31
    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    # torchvision: centres at i + 0.5
    to_px = lambda px, py: [(px + 1) / 2 * (w - 1) + 0.5, (py + 1) / 2 * (h - 1) + 0.5]
    start = [to_px(cx * (1 + mx * cy), cy * (1 + my * cx)) for cx, cy in corners]
    end = [to_px(cx, cy) for cx, cy in corners]
    ours = warp_batch(x, perspective_mat(T(mx), T(my)), pad_mode='zeros')
    torch.testing.assert_close(ours, TF.perspective(x, startpoints=start, endpoints=end, interpolation=bil), atol=1e-4,
                               rtol=0)


def test_zoom_window_stays_inside():
    "Zooming in on any spot (col_pct, row_pct in [0, 1]) reads only inside the image: no padding."
    m = zoom_mat(T(1.5, 1.5, 2.), T(0, 1, 0.3), T(0, 1, 0.9))
    corners = torch.tensor([[-1., -1, 1], [1, 1, 1]]) @ m.transpose(1, 2)
    assert corners.abs().max() <= 1 + 1e-6
    torch.testing.assert_close(corners[0, 0, :2], torch.tensor([-1., -1]))   # col_pct=0: the left/top edge


# ---- one resampling ---------------------------------------------------------------------------------------

def test_one_grid_sample_per_batch(count_grid_sample):
    tfms = [Warp(p=1.), Zoom(max_zoom=1.3, p=1.), Flip(), RandomResizedCropGPU(24, min_scale=0.35), Rotate(p=1.)]
    pipe = Pipeline([IntToFloatTensor(), *tfms, Normalize.from_stats(*imagenet_stats)])
    geo = [t for t in pipe.tfms if isinstance(t, FusedGeometry)]
    assert len(geo) == 1 and len(geo[0].tfms) == 5
    x = torch.randint(0, 256, (6, 3, 48, 40), dtype=torch.uint8)
    out = pipe(x, split_idx=0, generator=gen(0))
    assert sampled(count_grid_sample) == {(3, 24, 24): 6} and out.shape == (6, 3, 24, 24)   # each image sampled once
    pipe(x, split_idx=1)
    assert sampled(count_grid_sample) == {(3, 24, 24): 12}
    count_grid_sample.clear()
    Pipeline(aug_transforms(size=24, min_scale=0.5, flip_vert=True))(x, split_idx=0, generator=gen(1))
    assert sampled(count_grid_sample) == {(3, 24, 24): 6}
    count_grid_sample.clear()
    pipe(x.float() / 255, split_idx=0, generator=gen(0))
    assert count_grid_sample == [(6, 3, 24, 24)]   # a float batch: one call for the batch


@pytest.mark.parametrize('threads', [1, 3])
def test_uint8_batch_on_the_cpu_is_sampled_a_few_images_at_a_time_with_the_same_result(count_grid_sample, threads):
    """One image per thread per call, converted to float just before (in the cache): the numbers of one call on the
    whole float batch."""
    x = torch.randint(0, 256, (7, 3, 30, 34), dtype=torch.uint8, generator=gen(0))
    mats = rotate_mat(torch.linspace(-20, 20, 7), (30, 34)) @ perspective_mat(torch.linspace(-.2, .2, 7),
                                                                              torch.full((7,), .1))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for mode, pad in [('bilinear', 'reflection'), ('bicubic', 'zeros'), ('nearest', 'border')]:
            count_grid_sample.clear()
            out = warp_batch(x, mats, size=(20, 16), mode=mode, pad_mode=pad)
            assert [n for n, *_ in count_grid_sample] == [threads] * (7 // threads) + [7 % threads] * (7 % threads > 0)
            ref = F.grid_sample(x.float(), warp._grid(mats, (20, 16), True), mode=mode, padding_mode=pad,
                                align_corners=True) * (1 / 255)
            assert out.dtype == torch.float32 and out.is_contiguous() and torch.equal(out, ref), (mode, pad)
            # written in that order directly
            cl = warp_batch(x, mats, size=(20, 16), mode=mode, pad_mode=pad, channels_last=True)
            assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, ref)
    finally: torch.set_num_threads(before)


def test_samples_get_different_crops():
    ramp = (torch.arange(48 * 40.).view(1, 1, 48, 40) / (48 * 40)).expand(8, 3, 48, 40)   # identical images
    crop = RandomResizedCropGPU(16, min_scale=0.3)
    out = crop(ramp, split_idx=0, generator=gen(0))
    assert all((out[i] - out[j]).abs().max() > 1e-3 for i in range(8) for j in range(i))
    mats = RandomResizedCropGPU(16, min_scale=0.3, ratio=(1, 1)).draw_mats(200, (48, 40), (16, 16), gen(1))
    # align_corners: the scale is (width - 1) / (40 - 1)
    width, height = mats[:, 0, 0] * 39 + 1, mats[:, 1, 1] * 47 + 1
    area = width * height / (40 * 40)                                  # of the largest square window
    assert 0.3 - 0.05 < area.min() < 0.4 and area.max() > 0.9 and area.max() <= 1 + 1e-5
    same = RandomResizedCropGPU(16, min_scale=0.3, batch=True)(ramp, split_idx=0, generator=gen(0))
    assert all((same[i] - same[0]).abs().max() < 1e-6 for i in range(8)), "batch=True: one crop for all"


def test_prefilter_stops_aliasing():
    board = ((torch.arange(240)[:, None] + torch.arange(240)) % 2).float().expand(2, 3, 240, 240)
    naive = warp_batch(board, rotate_mat(T(5, 10), (240, 240)), size=30, min_stride=None)
    smooth = warp_batch(board, rotate_mat(T(5, 10), (240, 240)), size=30)
    assert naive.std() > 0.1 and smooth.std() < 0.02 and (smooth.mean() - 0.5).abs() < 0.02
    # via the transforms' stride bound
    out = RandomResizedCropGPU(30, min_scale=0.8)(board, split_idx=0, generator=gen(0))
    assert out.std() < 0.05


def test_plain_resize_of_uint8_on_the_cpu(count_grid_sample):
    """Identity matrices (BatchResize, the validation crop of square images): torch's uint8 resize,
    1/255 from the float path."""
    x = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8, generator=gen(0))
    out = BatchResize(24)(x)
    assert count_grid_sample == [] and out.dtype == torch.float32 and out.shape == (4, 3, 24, 24)
    float_path = warp_batch(x.float() / 255, ab._eye(4), size=24)   # sampled on a grid
    assert count_grid_sample == [(4, 3, 24, 24)] and (out - float_path).abs().max() <= 1.01 / 255
    ref = F.interpolate(x.double(), size=(24, 24), mode='bilinear', align_corners=True) / 255
    assert (out - ref).abs().max() <= 1.01 / 255
    small = BatchResize(8)(x)   # a stride of 5: antialiased, as the grid path's prefilter would
    ref = F.interpolate(x.double(), size=(8, 8), mode='bilinear', align_corners=True, antialias=True) / 255
    assert (small - ref).abs().max() <= 1.01 / 255
    val = Pipeline(aug_transforms(size=24, min_scale=0.5))(x, split_idx=1)
    torch.testing.assert_close(val, out, atol=0, rtol=0)
    assert sampled(count_grid_sample) == {(3, 24, 24): 4}
    Pipeline(aug_transforms(size=24, min_scale=0.5))(x[..., :36], split_idx=1)   # not square: a real crop, sampled
    assert sampled(count_grid_sample) == {(3, 24, 24): 8}
    # a stride of 5 again, but not a plain resize: prefilter, then sample
    turned = rotate_mat(T(10, -20, 30, 5), (40, 40))
    torch.testing.assert_close(warp_batch(x, turned, size=8), warp_batch(x.float() / 255, turned, size=8),
                               atol=1.01 / 255, rtol=0)


# ---- quality: fused versus a chain of resamplings --------------------------------------------------------------

ORIG = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1)[None].double() / 255   # (1, 3, 512, 512)


def reference(mats, out_hw, k=4):
    "Render through `mats` from the 512 px original in float64: the mean of k*k bicubic samples per output pixel."
    oh, ow = out_hw
    sub = (torch.arange(k, dtype=torch.float64) + 0.5) / k - 0.5
    xs = (torch.arange(ow, dtype=torch.float64)[:, None] + sub).flatten() * 2 / (ow - 1) - 1
    ys = (torch.arange(oh, dtype=torch.float64)[:, None] + sub).flatten() * 2 / (oh - 1) - 1
    gy, gx = torch.meshgrid(ys, xs, indexing='ij')
    pts = torch.stack([gx, gy, torch.ones_like(gx)], -1).view(-1, 3) @ mats[0].double().T
    grid = (pts[:, :2] / pts[:, 2:]).view(1, oh * k, ow * k, 2)
    return F.avg_pool2d(F.grid_sample(ORIG, grid, mode='bicubic', padding_mode='reflection', align_corners=True),
                        k).float()


def psnr(a, b): return float(10 * torch.log10(1 / F.mse_loss(a.clamp(0, 1), b.clamp(0, 1))))


@pytest.mark.parametrize('presize,out,crop_px', [(256, 224, 180), (512, 128, 400)])
def test_fused_beats_chain(presize, out, crop_px):
    src = ORIG.float() if presize == 512 else F.interpolate(ORIG.float(), size=(presize, presize), mode='bilinear',
                                                            antialias=True)
    p = presize
    rot, zoom = rotate_mat(T(20), (p, p)), zoom_mat(T(1.15), T(0.6), T(0.4))
    crop = crop_mat(T(0.1 * p), T(0.05 * p), T(crop_px), T(crop_px), (p, p))
    fix = (p - 1) / p * 512 / 511   # the same normalised map for the 512 px original (align_corners=True)
    to_orig = torch.diag(torch.tensor([fix, fix, 1.]))

    def chain(steps):
        x = src
        for m, size in steps: x = warp_batch(x, m, size=size)
        return x

    scores = {}
    for name, steps in [('crop first', [(crop, out), (rot, None), (zoom, None)]),
                        ('crop last', [(rot, None), (zoom, None), (crop, out)])]:
        mats = torch.eye(3)[None]
        for m, _ in steps: mats = mats @ m
        ref = reference(to_orig @ mats, (out, out))
        scores[name] = psnr(warp_batch(src, mats, size=out), ref), psnr(chain(steps), ref)
    print(f"\n{presize} -> {out} px, PSNR (dB) fused / chain: " +
          ', '.join(f"{k}: {f:.2f} / {c:.2f}" for k, (f, c) in scores.items()))
    for name, (fused, chained) in scores.items(): assert fused > chained + 0.5, (name, fused, chained)


# ---- validation and reproducibility ------------------------------------------------------------------------------

def test_validation_is_a_centre_crop_resize():
    x = torch.rand(3, 3, 40, 60)
    pipe = Pipeline(aug_transforms(size=24, min_scale=0.5, max_lighting=0.3))
    val = pipe(x, split_idx=1)
    torch.testing.assert_close(val, pipe(x, split_idx=1), atol=0, rtol=0)
    expected = F.interpolate(x[..., :, 10:50], size=(24, 24), mode='bilinear', align_corners=True)   # centre square
    torch.testing.assert_close(val, expected, atol=1e-5, rtol=0)
    tall = Pipeline(aug_transforms(size=(24, 12), max_lighting=0.))(x, split_idx=1)   # window of the output's shape
    torch.testing.assert_close(tall,
                               F.interpolate(x[..., :, 20:40], size=(24, 12), mode='bilinear', align_corners=True),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(Pipeline(aug_transforms())(x, split_idx=1), x, atol=0, rtol=0)   # no size: untouched


@pytest.mark.parametrize('device', DEVICES)
def test_training_reproduces_under_seed(device):
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, device=device)
    pipe = Pipeline(aug_transforms(size=16, min_scale=0.5) + [Saturation(), Hue()])
    a = pipe(x, split_idx=0, generator=gen(3, device))
    assert a.device.type == device and a.dtype == torch.float32
    torch.testing.assert_close(a, pipe(x, split_idx=0, generator=gen(3, device)), atol=0, rtol=0)
    assert (a - pipe(x, split_idx=0, generator=gen(4, device))).abs().max() > 0.05
    # uint8 input gives the float result, divided by 255 once
    torch.testing.assert_close(a, pipe(x.float() / 255, split_idx=0, generator=gen(3, device)), atol=1e-5, rtol=0)


def _loader(seed, items=6):
    imgs = [torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8, generator=gen(i)) for i in range(items)]
    dsets = Datasets(list(range(items)), [[lambda i: imgs[i]], [lambda i: 'a' if i % 2 else 'b', Categorize()]],
                     kinds=('image', 'label'))
    batch_tfms = Pipeline([IntToFloatTensor(), *aug_transforms(size=24, min_scale=0.5, max_rotate=30.)])
    return DataLoader(dsets.train, bs=3, seed=seed, num_workers=0, device='cpu', after_batch=[batch_tfms])


def test_dataloader_batches_reproduce():
    dl = _loader(0)
    first = [b[0] for b in dl]
    assert all((a - b[0]).abs().max() > 0.05 for a, b in zip(first, dl)), "the next epoch is augmented anew"
    again = [b[0] for b in _loader(0)]
    other = [b[0] for b in _loader(1)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all((a - b).abs().max() > 0.05 for a, b in zip(first, other))
    valid = _loader(0).new(split_idx=1)
    first_pass, second_pass = [b[0] for b in valid], [b[0] for b in valid]
    assert all(torch.equal(a, b) for a, b in zip(first_pass, second_pass))


def test_show_batch_shows_augmented_training_images():
    import matplotlib.pyplot as plt
    dl = _loader(0)   # not shuffled: show_batch shows items 0, 1, 2
    centre = (dl.new(split_idx=1).one_batch()[0] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    fig = dl.show_batch(max_n=3)
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    plt.close(fig)
    assert len(shown) == 3 and all(np.abs(a.astype(int) - c).mean() > 5 for a, c in zip(shown, centre))
    fig = dl.new(split_idx=1).show_batch(max_n=3)   # the validation view is the plain centre crop
    assert all(np.abs(ax.images[0].get_array().astype(int) - c).max() <= 1 for ax, c in zip(fig.axes, centre))
    plt.close(fig)


def test_show_batch_unique_shows_augmented_images():
    import matplotlib.pyplot as plt
    dl = _loader(0)
    b = dl.make_batch([0] * 4)[0]
    assert b.shape == (4, 3, 24, 24) and all((b[i] - b[j]).abs().mean() > 0.01 for i in range(4) for j in range(i))
    fig = dl.show_batch(unique=True, max_n=4)
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(shown) == 4 and all(np.abs(shown[i].astype(int) - shown[0]).mean() > 1 for i in range(1, 4))
    plt.close(fig)


# ---- lighting ---------------------------------------------------------------------------------------------------

LUMA = torch.tensor([0.299, 0.587, 0.114])


def ref_brightness(x, b): return torch.sigmoid(torch.logit(x) + torch.logit(b).view(-1, 1, 1, 1))
def ref_contrast(x, c): return torch.sigmoid(torch.logit(x) * c.view(-1, 1, 1, 1))


def ref_saturation(x, s):
    grey = (x * LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
    return grey + s.view(-1, 1, 1, 1) * (x - grey)


def ref_hue(x, turns):
    "Pixel by pixel: RGB -> YIQ, rotate (I, Q) by the angle, back (the inverse matrix from numpy)."
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    back = np.linalg.inv(yiq)
    out = np.empty(x.shape)
    a = x.double().numpy()
    for n in range(a.shape[0]):
        c, s = math.cos(2 * math.pi * turns[n]), math.sin(2 * math.pi * turns[n])
        for i in range(a.shape[2]):
            for j in range(a.shape[3]):
                y, ci, cq = yiq @ a[n, :, i, j]
                out[n, :, i, j] = back @ np.array([y, c * ci - s * cq, s * ci + c * cq])
    return torch.from_numpy(out).float()


def test_fused_lighting_matches_separate_steps():
    x = torch.rand(5, 3, 4, 6) * 0.9 + 0.05
    tfms = [Brightness(0.4, p=0.8), Contrast(0.4, p=0.8), Saturation(0.4, p=0.8), Hue(0.2, p=0.8)]
    pipe = Pipeline(tfms)
    assert len(pipe.tfms) == 1 and isinstance(pipe.tfms[0], FusedLighting)
    out = pipe(x, split_idx=0, generator=gen(7))
    g = gen(7)   # the same draws, in the same order
    b, c, s, h = (t.draw(5, g) for t in tfms)
    b = torch.sigmoid(b)   # Brightness draws logit(b)
    assert ((b > 0.3 - 1e-6) & (b < 0.7 + 1e-6)).all() and ((c >= 0.6 - 1e-6) & (c <= 1 / 0.6 + 1e-6)).all()
    assert (h.abs() <= 0.2).all() and (h == 0).any() and (h != 0).any(), "p=0.8: some samples unchanged"
    expected = ref_hue(ref_saturation(ref_contrast(ref_brightness(x, b), c), s), h.tolist()).clamp(0, 1)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_hue_keeps_greys_grey_and_lighting_is_training_only():
    grey = (torch.rand(6, 1, 5, 5)).expand(6, 3, 5, 5)
    for t in (Hue(max_hue=0.5, p=1.), Pipeline([Hue(p=1.), Contrast(p=1.), Brightness(p=1.)])):
        out = t(grey, split_idx=0, generator=gen(0))
        assert (out.max(1).values - out.min(1).values).max() < 1e-5
    x = torch.rand(2, 3, 5, 5)
    assert torch.equal(Pipeline(aug_transforms(max_lighting=0.5) + [Hue()])(x, split_idx=1), x)
    with pytest.raises(ValueError, match='channels'):
        Saturation(p=1.)(torch.rand(2, 1, 4, 4), split_idx=0)


# ---- configs, options and errors ----------------------------------------------------------------------------------

def test_names_and_defaults_follow_fastai():
    "The signature the issue gives (fastai's), argument by argument, and what aug_transforms builds from it."
    expected = dict(mult=1., do_flip=True, flip_vert=False, max_rotate=10., min_zoom=1., max_zoom=1.1, max_lighting=0.2,
                    max_warp=0.2, p_affine=0.75, p_lighting=0.75, xtra_tfms=None, size=None, mode='bilinear',
                    pad_mode='reflection', align_corners=True, batch=False, min_scale=1.)
    params = inspect.signature(aug_transforms).parameters
    assert list(params)[:len(expected)] == list(expected)
    assert {k: params[k].default for k in expected} == expected
    defaults = lambda cls: {k: p.default for k, p in inspect.signature(cls).parameters.items() if k != 'kwargs'}
    assert list(inspect.signature(RandomResizedCropGPU).parameters)[:3] == ['size', 'min_scale', 'ratio']
    assert defaults(RandomResizedCropGPU)['min_scale'] == 0.08 and defaults(RandomResizedCropGPU)['ratio'] == (3/4, 4/3)
    assert defaults(Flip)['p'] == defaults(Dihedral)['p'] == 0.5
    assert (defaults(Rotate), defaults(Zoom), defaults(Warp)) == (dict(max_deg=10., p=0.5),
                                                                  dict(min_zoom=1., max_zoom=1.1, p=0.5),
                                                                   dict(magnitude=0.2, p=0.5))
    for cls in (Brightness, Contrast, Saturation): assert defaults(cls) == dict(max_lighting=0.2, p=0.75, batch=False)
    assert defaults(Hue) == dict(max_hue=0.1, p=0.75, batch=False)
    built = {type(t).__name__: t for t in aug_transforms(size=64, min_scale=0.75)}
    assert list(built) == ['RandomResizedCropGPU', 'Flip', 'Warp', 'Rotate', 'Zoom', 'Brightness', 'Contrast']
    crop, flip, warp, rot, zoom = (built[k] for k in ['RandomResizedCropGPU', 'Flip', 'Warp', 'Rotate', 'Zoom'])
    assert (crop.size, crop.min_scale, crop.ratio, crop.p) == ((64, 64), 0.75, (1., 1.), 1.)
    assert flip.p == 0.5 and (warp.magnitude, warp.p, rot.max_deg, rot.p) == (0.2, 0.75, 10., 0.75)
    assert (zoom.min_zoom, zoom.max_zoom, zoom.p) == (1., 1.1, 0.75)
    assert all((t.max_lighting, t.p) == (0.2, 0.75) for t in (built['Brightness'], built['Contrast']))
    assert all((t.mode, t.pad_mode, t.align_corners, t.batch) == ('bilinear', 'reflection', True, False)
               for t in (crop, flip, warp, rot, zoom))
    assert [type(t) for t in aug_transforms()] == [Flip, Warp, Rotate, Zoom, Brightness, Contrast]   # no size: no crop



def test_configs_rebuild_every_transform():
    tfms = aug_transforms(size=(20, 30), min_scale=0.5, flip_vert=True, pad_mode='zeros') + [Saturation(0.3), Hue(0.05)]
    tfms += [BatchResize(8), Flip(p=0.25)]
    for t in tfms + list(Pipeline(tfms[:-2]).tfms):
        rebuilt = type(t)(**json.loads(json.dumps(t.get_config())))
        assert repr(rebuilt) == repr(t)
    x = torch.rand(2, 3, 40, 40)
    fused = Pipeline(tfms[:-2]).tfms[0]
    twin = FusedGeometry(**json.loads(json.dumps(fused.get_config())))
    torch.testing.assert_close(twin(x, split_idx=0, generator=gen(2)), fused(x, split_idx=0, generator=gen(2)))


def test_resizing_a_fused_pipeline():
    "Progressive resizing (callback.tta.resize_dls) rebuilds sized transforms from get_config() with a new size."
    from minifast.callback.tta import resize_dls
    from minifast.data.core import DataLoaders
    train = _loader(0)
    dls = DataLoaders(train, train.new(split_idx=1))
    bigger = resize_dls(dls, 32)
    assert bigger.train.one_batch()[0].shape == (3, 3, 32, 32) and bigger.valid.one_batch()[0].shape == (3, 3, 32, 32)
    assert dls.train.one_batch()[0].shape == (3, 3, 24, 24)
    with pytest.raises(ValueError, match='needs a RandomResizedCropGPU'): FusedGeometry([Rotate()], size=8)


def test_options():
    x = torch.rand(2, 3, 30, 30)
    out = Pipeline(aug_transforms(size=16, channels_last=True, max_lighting=0.3))(x, split_idx=0)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.shape == (2, 3, 16, 16)
    assert aug_transforms_from_augment is aug_transforms
    assert [type(t) for t in aug_transforms(mult=0., do_flip=False)] == [Zoom]   # mult scales rotation, lighting, warp
    tfms = aug_transforms(mult=2., min_zoom=0.9)
    first_of = lambda cls: next(t for t in tfms if isinstance(t, cls))
    assert first_of(Rotate).max_deg == 20. and first_of(Warp).magnitude == 0.4
    single = Rotate(p=1.)(x[0], split_idx=0)   # one image (C, H, W) works too
    assert single.shape == (3, 30, 30)
    assert BatchResize((10, 20))(x).shape == (2, 3, 10, 20)


def test_errors_name_the_culprit():
    with pytest.raises(ValueError, match='pad_mode'): Rotate(pad_mode='mirror')
    with pytest.raises(ValueError, match='p=1.5'): Flip(p=1.5)
    with pytest.raises(ValueError, match='min_scale'): RandomResizedCropGPU(16, min_scale=0.)
    with pytest.raises(ValueError, match='Two transforms set the output '
                                         'size'): Pipeline([RandomResizedCropGPU(16), BatchResize(8)])
    with pytest.raises(ValueError, match='different mode'): Pipeline([Rotate(), Zoom(mode='nearest')])
    with pytest.raises(ValueError, match=r'expected \(2, 3, 3\)'):
        warp_batch(torch.rand(2, 3, 4, 4), torch.eye(3)[None])
    with pytest.raises(ValueError, match="Unknown transform 'Blur'"): FusedGeometry([{'name': 'Blur', 'config': {}}])


def test_int_to_float_is_left_to_the_fused_geometry():
    "uint8 -> float happens once, at the output size, inside the resampling; the result equals converting first."
    pipe = Pipeline([IntToFloatTensor(), *aug_transforms(size=24, max_lighting=0.)])
    assert not any(isinstance(t, IntToFloatTensor) for t in pipe)
    x = torch.randint(0, 256, (4, 3, 40, 48), dtype=torch.uint8)
    fused = pipe(x, split_idx=0, generator=torch.Generator().manual_seed(3))
    first = Pipeline(aug_transforms(size=24, max_lighting=0.))(x.float() / 255, split_idx=0,
                                                               generator=torch.Generator().manual_seed(3))
    assert fused.dtype == torch.float32 and 0 <= float(fused.min()) and float(fused.max()) <= 1
    torch.testing.assert_close(fused, first, atol=1e-5, rtol=1e-5)
    assert any(isinstance(t, IntToFloatTensor)
               for t in Pipeline([IntToFloatTensor(), Normalize.from_stats(*imagenet_stats)]))


def test_a_transform_defined_here_is_found_by_name_and_rebuilt_from_its_config():
    """Every Transform subclass registers itself: `transform_class` finds one defined in a test,
    and FusedLighting rebuilds it."""
    from minifast.data.transforms import registered_transforms, transform_class

    class Darker(Brightness):
        def get_config(self): return {'max_lighting': self.max_lighting, 'p': self.p, 'batch': self.batch}

    assert transform_class('Darker') is Darker
    assert transform_class(f'{Darker.__module__}.{Darker.__qualname__}') is Darker
    assert registered_transforms()['Darker'] is Darker
    rebuilt = FusedLighting([{'name': 'Darker', 'config': {'max_lighting': 0.3, 'p': 1., 'batch': False}}])
    assert type(rebuilt.tfms[0]) is Darker and rebuilt.tfms[0].max_lighting == 0.3


def test_an_unknown_transform_name_lists_the_known_ones_and_says_what_to_import():
    from minifast.data.transforms import transform_class
    with pytest.raises(ValueError) as e: transform_class('Blur')
    msg = str(e.value)
    assert "'Blur'" in msg and "'Flip'" in msg and "'Categorize'" in msg and 'import minifast.vision.all' in msg


def test_a_user_class_named_like_a_minifast_one_does_not_replace_it():
    """A user's `Flip` keeps its qualified name only: `transform_class('Flip')` (what an export file names)
    stays minifast's."""
    from minifast.data.transforms import transform_class

    class Flip(Transform):   # noqa: F811  (the clash is the point)
        pass

    assert transform_class('Flip') is ab.Flip
    assert transform_class(f'{Flip.__module__}.{Flip.__qualname__}') is Flip
