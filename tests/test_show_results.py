"learn.show_results for labels, multi-labels and masks; SegmentationInterpretation and multi-label titles."
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import make_square_masks
from minifast.data.block import DataBlock, MultiCategoryBlock
from minifast.data.transforms import get_image_files
from minifast.interpret import Interpretation, SegmentationInterpretation
from minifast.learner import Learner
from minifast.vision.augment import Resize
from minifast.vision.data import ImageBlock, ImageDataLoaders
from minifast.vision.learner import resnet18, unet_learner

GREEN, RED = (0.0, 0.5019607843137255, 0.0, 1.0), (1.0, 0.0, 0.0, 1.0)


class Constant(nn.Module):
    "Always the same scores, whatever the image: which items it gets right is known in advance."
    def __init__(self, scores):
        super().__init__()
        self.scores = nn.Parameter(torch.tensor(scores))
    def forward(self, x): return self.scores.expand(len(x), -1)


def _titles(fig): return [ax.get_title() for ax in fig.axes if ax.get_title()]
def _colours(fig):
    import matplotlib.colors as mc
    return [mc.to_rgba(ax.title.get_color()) for ax in fig.axes if ax.get_title()]


def test_categories_titled_target_slash_prediction_red_when_wrong(colour_folder):
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.5, seed=0, item_tfms=Resize(16), bs=4,
                                       device='cpu', num_workers=0)
    learn = Learner(dls, Constant([5., 0.]))   # always dls.vocab[0], 'blue'
    fig = learn.show_results(max_n=6, ncols=3)
    targets = [dls.vocab[int(y)] for _, y in (dls.valid.dataset[i] for i in range(6))]
    assert _titles(fig) == [f'{t}/blue' for t in targets]
    assert _colours(fig) == [GREEN if t == 'blue' else RED for t in targets]
    assert 'red' in targets and 'blue' in targets
    assert len(fig.axes) == 6 and fig.axes[0].images   # the images are drawn


def _first_two_of_each_colour(items):
    "Validation: red_0, red_1, blue_0, blue_1 (a random split can leave one colour out)."
    valid = [i for i, p in enumerate(items) if p.stem[-1] in '01']
    return [i for i in range(len(items)) if i not in valid], valid


def test_multi_labels_compare_as_sets(colour_folder):
    block = DataBlock(blocks=(ImageBlock, MultiCategoryBlock), get_items=get_image_files,
                      get_y=lambda p: [p.parent.name] + (['warm'] if p.parent.name == 'red' else []),
                      splitter=_first_two_of_each_colour, item_tfms=Resize(16))
    dls = block.dataloaders(colour_folder, bs=4, device='cpu', num_workers=0)
    assert list(dls.vocab) == ['blue', 'red', 'warm']
    learn = Learner(dls, Constant([-5., 5., 5.]))   # always red and warm
    fig = learn.show_results(max_n=9)
    titles, colours = _titles(fig), _colours(fig)
    assert len(titles) == len(dls.valid.dataset) and set(colours) == {GREEN, RED}
    for t, c in zip(titles, colours):
        target, pred = t.split('/')
        assert pred == 'red;warm' and c == (GREEN if set(target.split(';')) == {'red', 'warm'} else RED)
    interp = Interpretation.from_learner(learn)
    assert interp._title(0).split(' / ')[0].startswith('red;warm/')   # names, not a vector of booleans


@pytest.fixture
def seg_learn(tmp_path):
    torch.manual_seed(0)
    return unet_learner(make_square_masks(tmp_path), resnet18, n_out=2, pretrained=False)


def test_masks_drawn_over_their_image_target_then_prediction(seg_learn):
    fig = seg_learn.show_results(max_n=2)
    assert len(fig.axes) == 4 and _titles(fig) == ['target', 'prediction'] * 2
    xb, yb = seg_learn.dls.valid.make_batch([0, 1])
    seg_learn.model.eval()
    with torch.no_grad(): expected = seg_learn.model(xb).argmax(1)
    for i in range(2):
        target_ax, pred_ax = fig.axes[2 * i], fig.axes[2 * i + 1]
        assert len(target_ax.images) == len(pred_ax.images) == 2   # the image, then the mask over it
        assert (target_ax.images[1].get_array() == yb[i].numpy()).all()
        assert (pred_ax.images[1].get_array() == expected[i].numpy()).all()
        assert 0 < pred_ax.images[1].get_alpha() < 1


def test_segmentation_top_losses_are_the_worst_images(seg_learn):
    interp = SegmentationInterpretation.from_learner(seg_learn)
    dl = seg_learn.dls.valid
    xb, yb = dl.make_batch(list(range(len(dl.dataset))))
    seg_learn.model.eval()
    with torch.no_grad(): per_image = F.cross_entropy(seg_learn.model(xb), yb, reduction='none').mean((1, 2))
    assert torch.allclose(interp.losses, per_image, atol=1e-5)
    fig = interp.plot_top_losses(k=2)
    worst = per_image.argsort(descending=True)[:2].tolist()
    assert _titles(fig) == [f'{w}\nloss {per_image[i]:.2f}' for i in worst for w in ('target', 'prediction')]
    assert (fig.axes[0].images[1].get_array() == yb[worst[0]].numpy()).all()


def test_show_results_needs_targets(colour_folder):
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.5, seed=0, item_tfms=Resize(16), bs=4,
                                       device='cpu', num_workers=0)
    learn = Learner(dls, Constant([5., 0.]))
    with pytest.raises(ValueError, match='no targets'):
        learn.show_results(dl=dls.test_dl(sorted(colour_folder.glob('*/*.jpg'))[:2]))


# ---- key points and boxes: target and prediction drawn on the same image, in two colours ---------------------------

def _square(i):
    from PIL import Image
    a = np.zeros((24, 32, 3), np.uint8)
    a[4 + i:12 + i, 8:16] = 255
    return Image.fromarray(a)


class ConstantBoxes(nn.Module):
    "One box per image, always the same: the whole left half."
    def forward(self, x): return torch.tensor([[[-1., -1., 0., 1.]]]).expand(len(x), -1, -1)


class BoxLoss(nn.Module):
    "A stand-in detection loss: its `decodes` gives `(boxes, labels)` as a detector's would (label 1: the square)."
    def forward(self, pred, boxes, labels): return (pred - boxes).abs().mean()
    def decodes(self, pred): return pred, torch.ones(pred.shape[:2], dtype=torch.long)


def _rgba(c):
    import matplotlib.colors as mc
    return mc.to_rgba(c)


def test_points_drawn_as_dots_target_and_prediction_in_two_colours():
    from minifast.vision.targets import PointBlock
    import matplotlib.pyplot as plt
    block = DataBlock(blocks=(ImageBlock, PointBlock), get_x=_square, get_y=lambda i: [12., 8. + i],
                      splitter=lambda items: ([0, 1], [2, 3, 4]))
    dls = block.dataloaders(list(range(5)), bs=2, device='cpu', num_workers=0)
    learn = Learner(dls, Constant([0.5, -0.5]))     # always x = 3/4 of the width, y = 1/4 of the height
    fig = learn.show_results(max_n=3)
    assert len([ax for ax in fig.axes if ax.images]) == 3
    for i, ax in enumerate(fig.axes[:3]):
        target, pred = ax.collections   # one scatter each, in this order
        np.testing.assert_allclose(target.get_offsets(), [[11.5, 9.5 + i]])   # valid items 2, 3, 4; pixel centres
        np.testing.assert_allclose(pred.get_offsets(), [[23.5, 5.5]])
        assert _rgba(target.get_facecolor()[0]) == _rgba('lime') and _rgba(pred.get_facecolor()[0]) == _rgba('red')
    plt.close(fig)


def test_boxes_drawn_as_labelled_rectangles_target_and_prediction():
    from minifast.vision.targets import BBoxBlock, BBoxLblBlock
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    block = DataBlock(blocks=(ImageBlock, BBoxBlock, BBoxLblBlock(vocab=['square'])), n_inp=1, get_x=_square,
                      get_y=[lambda i: [[8., 4. + i, 16., 12. + i]], lambda i: ['square']],
                      splitter=lambda items: ([0, 1], [2, 3]))
    dls = block.dataloaders(list(range(4)), bs=2, device='cpu', num_workers=0)
    learn = Learner(dls, ConstantBoxes(), loss_func=BoxLoss())
    fig = learn.show_results(max_n=2)
    for i, ax in enumerate(fig.axes[:2]):
        rects = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(rects) == 2, "one target box and one predicted box"
        target, pred = rects
        xywh = lambda r: (r.get_x(), r.get_y(), r.get_width(), r.get_height())
        assert xywh(target) == pytest.approx((7.5, 5.5 + i, 8, 8), abs=1e-4)   # valid items 2, 3
        assert xywh(pred) == pytest.approx((-0.5, -0.5, 16, 24), abs=1e-4)
        assert target.get_edgecolor() == _rgba('lime') and pred.get_edgecolor() == _rgba('red')
        assert [t.get_text() for t in ax.texts] == ['square', 'square']
    plt.close(fig)


def test_multi_label_interpretation_ranks_items_by_their_mean_label_loss(colour_folder):
    block = DataBlock(blocks=(ImageBlock, MultiCategoryBlock), get_items=get_image_files,
                      get_y=lambda p: [p.parent.name] + (['warm'] if p.parent.name == 'red' else []),
                      splitter=_first_two_of_each_colour, item_tfms=Resize(16))
    dls = block.dataloaders(colour_folder, bs=4, device='cpu', num_workers=0)
    scores = torch.tensor([-1., 2., 0.5])
    learn = Learner(dls, Constant(scores.tolist()))
    interp = Interpretation.from_learner(learn)
    targs = torch.stack([dls.valid.dataset[i][1] for i in range(len(dls.valid.dataset))]).float()
    expected = F.binary_cross_entropy_with_logits(scores.expand_as(targs), targs, reduction='none').mean(1)
    losses, idxs = interp.top_losses(2)
    torch.testing.assert_close(losses, expected.sort(descending=True).values[:2])
    assert {dls.vocab[j] for j in torch.nonzero(targs[idxs[0]]).flatten().tolist()} == {'blue'}   # red;warm/blue
    fig = interp.plot_top_losses(k=2)
    assert _titles(fig)[0].startswith(f'red;warm/blue / {losses[0]:.2f}')   # prediction/target names, loss
