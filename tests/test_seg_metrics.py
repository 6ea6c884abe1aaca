"Segmentation metrics: foreground_acc, Dice, DiceMulti, JaccardCoeff, by hand and against scikit-learn."
import math

import pytest
import torch
import torch.nn.functional as F

from minifast.metrics import Dice, DiceMulti, JaccardCoeff, foreground_acc


def scores(classes, n):
    "One-hot scores (N, n, H, W) whose argmax over axis 1 is `classes` (N, H, W)."
    return F.one_hot(classes, n).movedim(-1, 1).float()


def score(metric, *batches):
    metric.reset()
    for p, t in batches: metric.accumulate(p, t)
    return metric.value


def test_by_hand_on_a_two_by_two_mask():
    # target 1 1 / 0 0, predicted 1 0 / 1 0: 1 pixel in common, 2 predicted, 2 actual
    targ = torch.tensor([[[1, 1], [0, 0]]])
    pred = scores(torch.tensor([[[1, 0], [1, 0]]]), 2)
    assert score(Dice(), (pred, targ)) == 2 * 1 / (2 + 2)
    assert score(JaccardCoeff(), (pred, targ)) == 1 / 3
    assert score(DiceMulti(), (pred, targ)) == (0.5 + 0.5) / 2   # class 0: 1 in common, 2 and 2 as well
    assert float(foreground_acc(pred, targ)) == 0.5               # of the two class-1 pixels, one is right
    assert float(foreground_acc(pred, targ, bkg_idx=1)) == 0.5


def test_match_scikit_learn_and_do_not_depend_on_the_batches():
    metrics = pytest.importorskip('sklearn.metrics')
    g = torch.Generator().manual_seed(0)
    targ, pred_cls = torch.randint(0, 3, (6, 8, 8), generator=g), torch.randint(0, 3, (6, 8, 8), generator=g)
    pred = scores(pred_cls, 3) + 0.01 * torch.rand(6, 3, 8, 8, generator=g)   # argmax unchanged
    y, p = targ.flatten().numpy(), pred_cls.flatten().numpy()
    whole, split = [(pred, targ)], [(pred[:2], targ[:2]), (pred[2:5], targ[2:5]), (pred[5:], targ[5:])]
    for batches in (whole, split):
        assert math.isclose(score(DiceMulti(), *batches), metrics.f1_score(y, p, average='macro'))  # Dice = F1
        bin_batches = [(torch.stack([b[:, [0, 2]].amax(1), b[:, 1]], 1), (t == 1).long()) for b, t in batches]
        assert math.isclose(score(Dice(), *bin_batches), metrics.f1_score(y == 1, p == 1))
        assert math.isclose(score(JaccardCoeff(), *bin_batches), metrics.jaccard_score(y == 1, p == 1))
    fg = y != 0
    assert math.isclose(float(foreground_acc(pred, targ)), metrics.accuracy_score(y[fg], p[fg]), rel_tol=1e-6)


def test_dice_multi_averages_only_the_classes_that_occur():
    targ = torch.tensor([[[0, 0], [1, 1]]])
    pred = scores(targ, 4)   # classes 2 and 3 never occur: they do not count as 0
    assert score(DiceMulti(), (pred, targ)) == 1.0


def test_masks_with_a_channel_axis_and_empty_passes():
    targ = torch.tensor([[[[1, 0], [0, 1]]]])   # (N, 1, H, W)
    pred = scores(targ[:, 0], 2)
    assert score(Dice(), (pred, targ)) == 1.0 and float(foreground_acc(pred, targ)) == 1.0
    assert math.isnan(Dice().value) and math.isnan(DiceMulti().value) and math.isnan(JaccardCoeff().value)
    assert math.isnan(score(Dice(), (scores(torch.zeros(1, 2, 2, dtype=torch.long), 2),
                                     torch.zeros(1, 2, 2, dtype=torch.long))))


def test_shape_mismatch_names_the_shapes():
    with pytest.raises(ValueError, match=r'DiceMulti: .*\(1, 3, 4, 4\).*\(1, 4, 3\)'):
        score(DiceMulti(), (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 3, dtype=torch.long)))


def test_names_as_in_fastai():
    assert (Dice().name, DiceMulti().name, JaccardCoeff().name) == ('dice', 'dice_multi', 'jaccard_coeff')
