"learn.show_results for labels, multi-labels and masks; SegmentationInterpretation and multi-label titles."
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


def test_multi_labels_compare_as_sets(colour_folder):
    block = DataBlock(blocks=(ImageBlock, MultiCategoryBlock), get_items=get_image_files,
                      get_y=lambda p: [p.parent.name] + (['warm'] if p.parent.name == 'red' else []),
                      item_tfms=Resize(16))
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
