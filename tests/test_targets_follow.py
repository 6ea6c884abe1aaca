"""Masks, points and boxes follow their image through Resize and the fused batch augmentation.

The test image is black with one bright square; its mask marks the square, its point is the square's centre and its
box the square's outline. After any crop, flip, rotation, zoom and warp, the targets must still be where the bright
pixels are. Tolerances (stated per check) come from the image's bilinear blur at the square's edge and, for the
point, from the keystone warp, which does not keep the centre of a square at its centroid."""
import numpy as np
import pytest
import torch
from PIL import Image

from minifast.vision.all import (BBoxBlock, BBoxLblBlock, CropPad, DataBlock, Flip, FlipItem, FusedGeometry,
                                 ImageBlock, MaskBlock, MultiCategoryBlock, PointBlock, RandomCrop,
                                 RandomResizedCrop, Resize, Rotate, SegmentationDataLoaders, aug_transforms,
                                 show_target, warp_points)
from minifast.vision.warp import perspective_mat, rotate_mat, warp_batch, zoom_mat

W, H = 96, 80
SQ = (38, 30, 58, 50)   # the square: x1, y1, x2, y2 in pixels (edges)


def _image(i=0):
    a = np.zeros((H, W, 3), np.uint8)
    x1, y1, x2, y2 = SQ
    a[y1:y2, x1:x2] = 255
    return Image.fromarray(a)


def _mask():
    m = np.zeros((H, W), np.uint8)
    x1, y1, x2, y2 = SQ
    m[y1:y2, x1:x2] = 1
    return m


def _square_block(item_tfms, batch_tfms, valid=False):
    x1, y1, x2, y2 = SQ
    split = (lambda items: ([], list(range(len(items))))) if valid else (lambda items: (list(range(len(items))), []))
    return DataBlock(blocks=(ImageBlock, MaskBlock(codes=['background', 'square']), PointBlock, BBoxBlock,
                             BBoxLblBlock(vocab=['square'])), n_inp=1,
                     get_x=_image, get_y=[lambda i: _mask(), lambda i: [(x1 + x2) / 2, (y1 + y2) / 2],
                                          lambda i: [list(SQ)], lambda i: ['square']],
                     splitter=split, item_tfms=item_tfms, batch_tfms=batch_tfms)


def _check_square(x, mask, pts, boxes, labels, min_checked, warped=False):
    """Every sample whose square is fully inside the output: the mask agrees with the image on all clearly bright
    (> 0.9) and clearly dark (< 0.1) pixels; the point is within 0.25 px of the bright pixels' centroid (affine maps
    keep the centre at the centroid; a keystone warp moves the centroid off the centre: then within 0.25 px plus 6%
    of the box's size); the box is within 1.5 px of the bright pixels' extent (the blurred edge). Returns how many
    samples were checked."""
    n, _, h, w = x.shape
    img = x[:, 0]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing='ij')
    checked = 0
    for i in range(n):
        bright = img[i] > 0.5
        if not bright.any() or bright[0].any() or bright[-1].any() or bright[:, 0].any() or bright[:, -1].any():
            continue   # the square touches the border: cut by the crop
        checked += 1
        hi, lo = img[i] > 0.9, img[i] < 0.1
        assert (mask[i][hi] == 1).all() and (mask[i][lo] == 0).all(), f"sample {i}: mask off the square"
        wgt = img[i]
        centroid = torch.stack([(wgt * xs).sum(), (wgt * ys).sum()]) / wgt.sum()
        p = (pts[i, 0] + 1) * torch.tensor([w / 2, h / 2])
        b = (boxes[i, 0] + 1) * torch.tensor([w / 2, h / 2, w / 2, h / 2])
        tol = 0.25 + (0.06 * float((b[2:] - b[:2]).max()) if warped else 0.)
        assert (p - centroid).abs().max() < tol, f"sample {i}: point {p.tolist()} vs centre {centroid.tolist()}"
        rows, cols = torch.nonzero(bright, as_tuple=True)
        extent = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32)
        assert (b - extent).abs().max() < 1.5, f"sample {i}: box {b.tolist()} vs bright extent {extent.tolist()}"
        assert labels[i, 0] == 1
    assert checked >= min_checked, f"only {checked} of {n} samples had the whole square inside"
    return checked


@pytest.mark.parametrize('max_warp', [0., 0.2])
@pytest.mark.parametrize('item_tfm', [Resize(64), Resize(64, method='pad', pad_mode='zeros'),
                                      Resize(64, method='squish'), RandomResizedCrop(64, min_scale=0.5),
                                      RandomCrop(64), CropPad((96, 112), pad_mode='reflection')])
def test_targets_stay_on_the_square_through_item_and_batch_augmentation(item_tfm, max_warp):
    "48 random draws of crop, flip, rotation (up to 30 degrees), zoom (up to 1.2) and warp, each applied."
    batch = aug_transforms(size=48, min_scale=0.75, max_rotate=30., max_zoom=1.2, max_warp=max_warp, p_affine=1.,
                           max_lighting=0.)
    dls = _square_block(item_tfm, batch).dataloaders(list(range(48)), bs=48, device='cpu', seed=1, num_workers=0)
    x, mask, pts, boxes, labels = dls.one_batch()
    assert (x.shape, mask.shape, mask.dtype, pts.shape, boxes.shape) == (
        (48, 3, 48, 48), (48, 48, 48), torch.int64, (48, 1, 2), (48, 1, 4))
    _check_square(x, mask, pts, boxes, labels, min_checked=40, warped=max_warp > 0)


def test_targets_follow_on_the_validation_set_too():
    dls = _square_block(Resize(64), aug_transforms(size=48, max_lighting=0.), valid=True).dataloaders(
        list(range(4)), bs=4, device='cpu', seed=0, num_workers=0)
    x, mask, pts, boxes, labels = next(iter(dls.valid))
    assert _check_square(x, mask, pts, boxes, labels, min_checked=4) == 4


def test_a_flip_mirrors_the_point_and_a_rotation_turns_it_the_image_way():
    "Direction checks: a flip negates x; a 90 degree turn sends the bright spot and its point to the same place."
    dls = _square_block(Resize((H, W), method='squish'), [Flip(p=1.)]).dataloaders(
        [0, 1], bs=2, device='cpu', seed=0, num_workers=0)
    _, _, pts, _, _ = dls.one_batch()
    x1, y1, x2, y2 = SQ
    centre = torch.tensor([(x1 + x2) / W - 1, (y1 + y2) / H - 1])
    torch.testing.assert_close(pts[:, 0], (centre * torch.tensor([-1., 1])).expand(2, 2))
    # a one-pixel spot, random rotations, zooms and keystone warps: the spot lands where its point does
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        img = torch.zeros(1, 1, 30, 40)
        sx, sy = int(torch.randint(12, 28, (1,), generator=g)), int(torch.randint(10, 20, (1,), generator=g))
        img[0, 0, sy, sx] = 1.
        deg, zoom, mx = (torch.rand(3, generator=g) - 0.5) * torch.tensor([180., 0.4, 0.3])
        mats = rotate_mat(deg.view(1), (30, 40)) @ zoom_mat(1 + zoom.view(1)) @ perspective_mat(mx.view(1), -mx.view(1))
        out = warp_batch(img, mats, size=(30, 40), mode='bilinear', pad_mode='zeros', min_stride=None)
        u = torch.tensor([[[(sx + 0.5) / 40 * 2 - 1, (sy + 0.5) / 30 * 2 - 1]]])
        px = (warp_points(u, mats, (30, 40), (30, 40))[0, 0] + 1) * torch.tensor([20., 15.])
        yy, xx = divmod(int(out[0, 0].argmax()), 40)
        assert abs(px[0] - (xx + 0.5)) <= 1 and abs(px[1] - (yy + 0.5)) <= 1, (px, xx, yy)


def test_points_that_leave_the_image_keep_their_place():
    "A corner point, zoomed in on the centre: it leaves [-1, 1] but stays in the batch (never ragged)."
    dblock = DataBlock(blocks=(ImageBlock, PointBlock), get_x=_image, get_y=lambda i: [[2., 3.], [48., 40.]],
                       splitter=lambda items: (list(range(len(items))), []), item_tfms=Resize(64),
                       batch_tfms=aug_transforms(size=32, min_scale=0.3, max_lighting=0.))
    pts = dblock.dataloaders(list(range(16)), bs=16, device='cpu', seed=0, num_workers=0).one_batch()[1]
    assert pts.shape == (16, 2, 2)
    assert (pts[:, 0].abs() > 1).any(dim=-1).sum() >= 8   # most crops lose the corner point
    assert (pts[:, 1].abs() < 1).all()                     # the centre stays inside


def test_boxes_that_leave_the_image_are_dropped_with_their_labels_and_batches_are_padded():
    "A box at the far left of a wide image, centre-cropped away on validation: the box and its label become 0."
    boxes = {0: [[1., 1., 6., 10.], [40., 30., 60., 50.]], 1: [[40., 30., 60., 50.]]}
    labels = {0: ['edge', 'square'], 1: ['square']}
    dblock = DataBlock(blocks=(ImageBlock, BBoxBlock, BBoxLblBlock), n_inp=1, get_x=_image,
                       get_y=[lambda i: boxes[i], lambda i: labels[i]],
                       splitter=lambda items: ([0, 1], [0, 1]), item_tfms=Resize(64))
    dls = dblock.dataloaders([0, 1], bs=2, device='cpu', seed=0, num_workers=0)
    assert list(dls.vocab) == ['#na#', 'edge', 'square']
    _, b, lbl = next(iter(dls.valid))
    assert b.shape == (2, 2, 4) and lbl.shape == (2, 2)
    assert (b[0, 0] == 0).all() and lbl[0, 0] == 0 and lbl[0, 1] == 2   # the edge box left with the crop
    assert (b[1, 1] == 0).all() and lbl[1].tolist() == [2, 0]           # padding
    expected = torch.tensor([40 - 8., 30, 60 - 8, 50]) / torch.tensor([40., 40, 40, 40]) - 1   # crop x from 8 to 88
    torch.testing.assert_close(b[0, 1], expected)


def test_multi_label_targets_compose_with_masks_and_points():
    dblock = DataBlock(blocks=(ImageBlock, MaskBlock, PointBlock, MultiCategoryBlock), n_inp=1, get_x=_image,
                       get_y=[lambda i: _mask(), lambda i: [48., 40.], lambda i: ['square', 'bright'][:1 + i % 2]],
                       splitter=lambda items: (list(range(len(items))), []), item_tfms=Resize(64),
                       batch_tfms=aug_transforms(size=32, max_lighting=0.))
    dls = dblock.dataloaders(list(range(8)), bs=8, device='cpu', seed=0, num_workers=0)
    x, mask, pts, y = dls.one_batch()
    assert (mask.shape, pts.shape, y.shape) == ((8, 32, 32), (8, 1, 2), (8, 2))
    assert list(dls.vocab) == ['bright', 'square']
    # fixed seed, same batch again: image and targets reproducible
    x2, mask2, pts2, _ = dblock.dataloaders(list(range(8)), bs=8, device='cpu', seed=0, num_workers=0).one_batch()
    assert torch.equal(x, x2) and torch.equal(mask, mask2) and torch.equal(pts, pts2)


def _seg_files(tmp_path, n=6):
    for i in range(n):
        _image().save(tmp_path/f'im{i}.png')
        Image.fromarray(_mask()).save(tmp_path/f'im{i}_P.png')
    return [tmp_path/f'im{i}.png' for i in range(n)]


def test_segmentation_dataloaders_from_label_func(tmp_path):
    fnames = _seg_files(tmp_path)
    dls = SegmentationDataLoaders.from_label_func(tmp_path, fnames, lambda o: o.parent/f'{o.stem}_P.png',
                                                  codes=np.array(['background', 'square']), item_tfms=Resize(64),
                                                  batch_tfms=aug_transforms(size=32), bs=4, seed=0, device='cpu',
                                                  num_workers=0)
    assert list(dls.vocab) == ['background', 'square'] and dls.c == 2
    x, y = dls.one_batch()
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 32, 32) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= {0, 1}
    again = SegmentationDataLoaders.from_dsets(dls.train_ds.dsets, bs=2, device='cpu', num_workers=0,
                                               after_item=dls.train.after_item, after_batch=dls.train.after_batch)
    assert again.one_batch()[1].shape == (2, 32, 32)


def test_show_batch_draws_masks_points_and_boxes():
    import matplotlib.pyplot as plt
    dls = _square_block(Resize(64), aug_transforms(size=48)).dataloaders(list(range(4)), bs=4, device='cpu',
                                                                         seed=0, num_workers=0)
    fig = dls.show_batch(max_n=4)
    assert len(fig.axes) == 4
    ax = fig.axes[0]
    assert len(ax.images) == 2 and len(ax.collections) == 1 and len(ax.patches) == 1   # image + mask, point, box
    plt.close(fig)
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((10, 20)))
    show_target('points')(torch.tensor([[0., 0.]]), ax)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[9.5, 4.5]])   # the centre of a 20x10 image
    with pytest.raises(ValueError, match="kind 'category'"): show_target('category')
    plt.close(fig)


def test_large_jpegs_are_not_draft_decoded_when_targets_follow_them(tmp_path):
    """A small Resize lets the image loader decode a JPEG at 1/2, 1/4 or 1/8 scale; a mask file and points are in the
    full image's pixels, so with them the image must be decoded at full size."""
    big = np.zeros((480, 640, 3), np.uint8)
    big[160:320, 320:480] = 255                      # the square: x 320-480, y 160-320
    mask = np.zeros((480, 640), np.uint8)
    mask[160:320, 320:480] = 1
    Image.fromarray(big).save(tmp_path/'big.jpg', quality=95)
    Image.fromarray(mask).save(tmp_path/'big_P.png')
    block = DataBlock(blocks=(ImageBlock, MaskBlock(codes=['background', 'square']), PointBlock), n_inp=1,
                      get_y=[lambda o: o.parent/f'{o.stem}_P.png', lambda o: [400., 240.]],
                      splitter=lambda items: ([0], []), item_tfms=Resize(64, method='squish'))
    x, m, pts = block.dataloaders([tmp_path/'big.jpg'], bs=1, device='cpu', num_workers=0).one_batch()
    assert m.shape == (1, 64, 64) and (m[0][x[0, 0] > 0.9] == 1).all() and (m[0][x[0, 0] < 0.1] == 0).all()
    torch.testing.assert_close(pts, torch.tensor([[[0.25, 0.]]]))   # the square's centre: 5/8 across, halfway down


def test_follower_transforms_are_rebuilt_from_their_config():
    "An export file rebuilds each pipeline from get_config: the kind must survive."
    fused = aug_transforms(size=32)[0].for_kind('mask').fuse(Rotate(p=1.).for_kind('mask'))
    again = FusedGeometry(**fused.get_config())
    assert again.kind == 'mask' and [type(t).__name__ for t in again.tfms] == ['RandomResizedCropGPU', 'Rotate']
    r = Resize(32, method='pad').for_kind('points')
    assert Resize(**r.get_config()).kind == 'points' and Resize(32).get_config().get('kind') is None


# ---- bad input: a clear error naming the file and what to do -------------------------------------------------------

def _one_batch(blocks, get_y, source):
    dblock = DataBlock(blocks=blocks, get_y=get_y, splitter=lambda items: (list(range(len(items))), []),
                       item_tfms=Resize(32))
    return dblock.dataloaders(source, bs=len(source), device='cpu', num_workers=0).one_batch()


def test_a_mask_of_another_size_than_its_image_is_refused(tmp_path):
    fnames = _seg_files(tmp_path, 2)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path/'im1_P.png')
    with pytest.raises(ValueError, match=r"im1_P.png is 10x10 pixels but its image is 96x80"):
        _one_batch((ImageBlock, MaskBlock), lambda o: o.parent/f'{o.stem}_P.png', fnames)


def test_a_mask_with_a_code_outside_codes_is_refused(tmp_path):
    fnames = _seg_files(tmp_path, 2)
    with pytest.raises(ValueError, match=r"im[01]_P.png holds the code 1, but codes has 1 classes"):
        _one_batch((ImageBlock, MaskBlock(codes=['background'])), lambda o: o.parent/f'{o.stem}_P.png', fnames)


def test_an_rgb_mask_file_is_refused(tmp_path):
    fnames = _seg_files(tmp_path, 2)
    _image().save(tmp_path/'im0_P.png')
    with pytest.raises(ValueError, match=r"im0_P.png is a RGB image; a mask must hold one class code per pixel"):
        _one_batch((ImageBlock, MaskBlock), lambda o: o.parent/f'{o.stem}_P.png', fnames)


def test_a_point_outside_its_image_is_refused():
    with pytest.raises(ValueError, match=r"\[100.0, 5.0\] \(x, y\) lies outside its image of 96x80 pixels"):
        DataBlock(blocks=(ImageBlock, PointBlock), get_x=_image, get_y=lambda i: [100., 5.],
                  splitter=lambda items: ([0], [])).dataloaders([0], bs=1, device='cpu', num_workers=0).one_batch()


def test_a_box_with_x2_before_x1_is_refused():
    with pytest.raises(ValueError, match="x2 < x1 or y2 < y1"):
        DataBlock(blocks=(ImageBlock, BBoxBlock, BBoxLblBlock), n_inp=1, get_x=_image,
                  get_y=[lambda i: [[50., 5., 10., 20.]], lambda i: ['a']],
                  splitter=lambda items: ([0], [])).dataloaders([0], bs=1, device='cpu', num_workers=0).one_batch()


def test_points_without_an_image_block_are_refused():
    with pytest.raises(ValueError, match="needs an ImageBlock"):
        DataBlock(blocks=(PointBlock, PointBlock), splitter=lambda items: ([0], [])).dataloaders(
            [[1., 2.]], bs=1, device='cpu', num_workers=0).one_batch()


def test_summary_builds_masks_points_and_boxes_with_their_image():
    lines = []
    _square_block(Resize(64), aug_transforms(size=48)).summary(list(range(4)), print_fn=lines.append)
    assert lines[-1].strip() == "All steps succeeded."
    assert any("kind='mask'" in line and 'torch.int64' in line for line in lines)


DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


@pytest.mark.parametrize('device', DEVICES)
def test_targets_follow_on_each_device(device):
    "The batch stage on `device` (the generator that the targets replay lives there)."
    batch = aug_transforms(size=48, min_scale=0.75, max_rotate=30., max_zoom=1.2, max_warp=0., p_affine=1.,
                           max_lighting=0.)
    dls = _square_block(Resize(64), batch).dataloaders(list(range(32)), bs=32, device=device, seed=2, num_workers=0)
    b = dls.one_batch()
    assert all(o.device.type == device for o in b)
    _check_square(*[o.cpu() for o in b], min_checked=28)


def test_boxes_cut_away_by_the_batch_crop_lose_their_labels():
    "The validation crop of RandomResizedCropGPU(valid_scale=0.25) keeps the central half: the corner box goes."
    from minifast.vision.all import RandomResizedCropGPU
    dblock = DataBlock(blocks=(ImageBlock, BBoxBlock, BBoxLblBlock), n_inp=1, get_x=_image,
                       get_y=[lambda i: [[1., 1., 6., 6.], list(SQ)], lambda i: ['edge', 'square']],
                       splitter=lambda items: ([0], [0]), item_tfms=Resize((H, W), method='squish'),
                       batch_tfms=[RandomResizedCropGPU(32, valid_scale=0.25)])
    _, b, lbl = next(iter(dblock.dataloaders([0], bs=1, device='cpu', seed=0, num_workers=0).valid))
    assert (b[0, 0] == 0).all() and lbl[0].tolist() == [0, 2]
    assert (b[0, 1].abs() < 1).all()   # the square, in the middle, stays whole


def test_a_point_or_a_box_that_is_wrong_names_its_image_file(tmp_path):
    fnames = _seg_files(tmp_path, 1)
    with pytest.raises(ValueError, match=r"\[100.0, 5.0\] \(x, y\) of the image .*im0.png lies outside its image of "
                                         r"96x80 pixels: fix get_y"):
        DataBlock(blocks=(ImageBlock, PointBlock), get_y=lambda o: [100., 5.],
                  splitter=lambda items: ([0], [])).dataloaders(fnames, bs=1, device='cpu', num_workers=0).one_batch()
    with pytest.raises(ValueError, match=r"the box \[50.0, 5.0, 10.0, 20.0\] of the image .*im0.png has x2 < x1"):
        DataBlock(blocks=(ImageBlock, BBoxBlock, BBoxLblBlock), n_inp=1, get_y=[lambda o: [[50., 5., 10., 20.]],
                                                                                lambda o: ['a']],
                  splitter=lambda items: ([0], [])).dataloaders(fnames, bs=1, device='cpu', num_workers=0).one_batch()


def test_flip_item_mirrors_masks_points_and_boxes_with_their_image(monkeypatch):
    "A square off to the left: the flipped samples have it on the right, with every target there too."
    import sys
    monkeypatch.setattr(sys.modules[__name__], 'SQ', (8, 10, 28, 30))
    dls = _square_block(FlipItem(p=0.5), None).dataloaders(list(range(24)), bs=24, device='cpu', seed=3, num_workers=0)
    x, mask, pts, boxes, labels = dls.one_batch()
    assert _check_square(x, mask, pts, boxes, labels, min_checked=24) == 24
    right = (x[:, 0, :, W // 2:] > 0.5).flatten(1).any(1)
    assert 0 < int(right.sum()) < 24   # some flipped, some not
    assert bool((pts[right, 0, 0] > 0).all() and (pts[~right, 0, 0] < 0).all())
