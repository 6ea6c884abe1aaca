"Tests for the pure functions of minifast.callback.schedule against hand-computed values."
import math

import numpy as np
import pytest
import torch

from minifast.callback.schedule import (SchedCos, SchedExp, SchedLin, SchedNo, combine_scheds, combined_cos,
                                        flat_cos_scheds, lr_range, minimum, one_cycle_scheds, sched_cos,
                                        sched_exp, sched_lin, sched_no, slide, steep, suggested_lrs, valley)


def close(a, b, rel=1e-12): return np.allclose(a, b, rtol=rel, atol=0)


def test_annealing_functions_at_chosen_points():
    assert sched_lin(2., 6., 0.) == 2. and sched_lin(2., 6., 0.25) == 3. and sched_lin(2., 6., 1.) == 6.
    assert sched_cos(2., 6., 0.) == 2. and close(sched_cos(2., 6., 0.5), 4.) and close(sched_cos(2., 6., 1.), 6.)
    # a quarter of the way: 2 + (1 - cos(pi/4))/2 * 4
    assert close(sched_cos(2., 6., 0.25), 2 + (1 - math.sqrt(2) / 2) * 2)
    assert sched_no(2., 6., 0.) == 2. and sched_no(2., 6., 0.9) == 2.
    assert close(sched_exp(1e-6, 1e-2, 0.), 1e-6) and close(sched_exp(1e-6, 1e-2, 0.5), 1e-4)
    assert close(sched_exp(1e-6, 1e-2, 1.), 1e-2)


def test_annealing_functions_per_group():
    start, end = np.array([1e-4, 1e-3]), np.array([1e-2, 1e-1])
    assert close(sched_lin(start, end, 0.5), [(1e-4 + 1e-2) / 2, (1e-3 + 1e-1) / 2])
    assert close(sched_cos(start, end, 0.5), [(1e-4 + 1e-2) / 2, (1e-3 + 1e-1) / 2])
    assert close(sched_exp(start, end, 0.5), [1e-3, 1e-2])
    assert close(sched_no(start, end, 0.3), start)
    assert close(sched_lin([0., 1.], [2., 3.], 0.5), [1., 2.])  # lists too
    assert close(sched_cos(0., 1., np.array([0., 0.5, 1.])), [0., 0.5, 1.])  # and an array of positions


def test_sched_exp_needs_positive_values():
    with pytest.raises(ValueError, match='positive'): sched_exp(0., 1., 0.5)


def test_schedule_objects():
    assert SchedLin(0., 4.)(0.75) == 3. and close(SchedCos(0., 4.)(0.5), 2.)
    assert SchedNo(5., 0.)(0.5) == 5. and close(SchedExp(1., 100.)(0.5), 10.)
    assert close(SchedCos([1., 2.], [3., 4.])(1.), [3., 4.])


def test_combine_scheds():
    s = combine_scheds([0.25, 0.75], [SchedLin(0., 1.), SchedLin(1., 0.)])
    assert s(0.) == 0. and close(s(0.125), 0.5) and close(s(0.25), 1.) and close(s(0.625), 0.5) and close(s(1.), 0.)
    three = combine_scheds([0.2, 0.3, 0.5], [SchedNo(1., 1.), SchedLin(1., 2.), SchedLin(2., 0.)])
    assert three(0.1) == 1. and close(three(0.35), 1.5) and close(three(0.75), 1.)
    with pytest.raises(ValueError, match='sum to 1'): combine_scheds([0.5, 0.6], [SchedNo(0, 0), SchedNo(0, 0)])
    with pytest.raises(ValueError, match='2 pcts and 1'): combine_scheds([0.5, 0.5], [SchedNo(0, 0)])


def test_combined_cos():
    s = combined_cos(0.3, 1., 10., 0.)
    assert s(0.) == 1. and close(s(0.15), 5.5) and close(s(0.3), 10.) and close(s(0.65), 5.) and close(s(1.), 0.)


def test_one_cycle_scheds():
    lr_max, div, div_final, pct = 1e-2, 25., 1e5, 0.25
    scheds = one_cycle_scheds(lr_max, div=div, div_final=div_final, pct_start=pct)
    lr, mom = scheds['lr'], scheds['mom']
    assert close(lr(0.), lr_max / div) and close(lr(pct), lr_max) and close(lr(1.), lr_max / div_final)
    assert close(mom(0.), 0.95) and close(mom(pct), 0.85) and close(mom(1.), 0.95)
    # half-way up the warm-up, cosine gives the mean of both ends
    assert close(lr(pct / 2), (lr_max / div + lr_max) / 2) and close(mom(pct / 2), 0.9)
    # lr rises then falls; mom the reverse
    pos = np.linspace(0, 1, 50)
    lrs, moms = np.array([lr(p) for p in pos]), np.array([mom(p) for p in pos])
    assert np.argmax(lrs) == np.argmin(moms)


def test_one_cycle_scheds_per_group():
    lr = one_cycle_scheds(np.array([1e-5, 1e-4, 1e-3]))['lr']
    assert close(lr(0.25), [1e-5, 1e-4, 1e-3]) and close(lr(0.), [4e-7, 4e-6, 4e-5])
    assert close(lr(1.), [1e-10, 1e-9, 1e-8])


def test_flat_cos_scheds():
    lr = flat_cos_scheds(1e-3, pct_start=0.75)['lr']
    assert lr(0.) == 1e-3 and lr(0.5) == 1e-3 and close(lr(0.75), 1e-3)
    assert close(lr(0.875), (1e-3 + 1e-8) / 2) and close(lr(1.), 1e-8)


def test_lr_range():
    assert list(lr_range(1e-3, 3)) == [1e-3] * 3
    assert list(lr_range(slice(1e-3), 3)) == [1e-4, 1e-4, 1e-3]
    assert list(lr_range(slice(None, 1e-3), 3)) == [1e-4, 1e-4, 1e-3]
    assert close(lr_range(slice(1e-6, 1e-4), 3), [1e-6, 1e-5, 1e-4])
    assert close(lr_range(slice(1e-6, 1e-3), 4), [1e-6, 1e-5, 1e-4, 1e-3])
    assert list(lr_range(slice(1e-5, 1e-3), 1)) == [1e-3]
    assert list(lr_range([1e-5, 1e-4], 2)) == [1e-5, 1e-4]
    assert list(lr_range(np.array([1e-5, 1e-4]), 2)) == [1e-5, 1e-4]


def test_lr_range_errors():
    with pytest.raises(ValueError, match='2 values.*3 layer groups'): lr_range([1e-3, 1e-2], 3)
    with pytest.raises(ValueError, match='negative'): lr_range(-1e-3, 2)
    with pytest.raises(ValueError, match='negative'): lr_range(slice(-1e-4, 1e-3), 2)
    assert list(lr_range(slice(0, 1e-3), 2)) == list(lr_range(slice(1e-3), 2))   # from 0: as fastai, slice(hi)


# --- learning-rate finder suggestions ---

LRS = torch.logspace(-7, 1, 81, dtype=torch.float64)  # log10 steps of exactly 0.1
X = LRS.log10()


def test_minimum_on_parabola():
    losses = (X + 2) ** 2 + 1  # minimum at lr = 1e-2
    lr, i = minimum(LRS, losses, 81)
    assert math.isclose(lr, 1e-3, rel_tol=1e-9) and math.isclose(LRS[i].item(), 1e-3, rel_tol=1e-9)


def test_minimum_ignores_diverged_tail():
    losses = (X + 2) ** 2 + 1
    losses[-5:] = float('nan')
    losses[-6] = float('inf')
    assert math.isclose(minimum(LRS, losses, 81)[0], 1e-3, rel_tol=1e-9)


def test_steep_finds_largest_negative_slope():
    losses = 2 - torch.tanh(2 * (X + 3))  # falls fastest at lr = 1e-3
    lr, i = steep(LRS, losses, 81)
    assert math.isclose(lr, 1e-3, rel_tol=1e-9) and i == 40
    # a steeper drop elsewhere moves the answer there
    losses2 = losses - torch.tanh(4 * (X + 5))
    assert math.isclose(steep(LRS, losses2, 81)[0], 1e-5, rel_tol=1e-9)


def test_valley_on_clean_curve():
    "A strictly decreasing run from the first point to the minimum: after the first tenth (8 of 81 points), half-way."
    losses = 1.5 - torch.tanh(X + 3) + 0.02 * torch.exp(2.5 * (X + 1))
    i_min = int(losses.argmin())
    assert (losses[1:i_min + 1] < losses[:i_min]).all()
    lr, i = valley(LRS, losses, 81)
    assert i == i_min - (i_min - 8 + 1) // 2 and lr == LRS[i].item()


def test_valley_is_not_stretched_by_a_high_first_point():
    "The smoothed loss of the finder's first batches can sit high; the valley starts after the first tenth."
    losses = torch.cat([torch.tensor([9.0, 8.0]), torch.full((28,), 3.0), torch.linspace(3.0, 1.0, 41)[1:],
                        torch.linspace(1.2, 4.0, 11)]).double()  # 81 points: flat, then a descent from 30 to 69
    lr, i = valley(LRS, losses, 81)
    # the descent has 40 points (30 to 69) plus one flat point before it: 20 back from the bottom is 49;
    # measured from the high first point instead, the middle would be near 35 and two thirds near 46
    assert i == 49, i


@pytest.mark.parametrize('seed', range(5))
def test_valley_lands_in_descending_region(seed):
    lrs = torch.logspace(-7, 1, 100, dtype=torch.float64)
    x = lrs.log10()
    noise = 0.01 * torch.randn(100, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    losses = 1.5 - torch.tanh(x + 3) + 0.02 * torch.exp(2.5 * (x + 1)) + noise
    lr, i = valley(lrs, losses, 100)
    # between where the descent has clearly begun (1e-5) and the minimum of the loss
    assert 1e-5 < lr < lrs[losses.argmin()].item() and losses[i] < 2.4


def test_valley_ignores_a_short_early_dip():
    "A short drop then a long descent: the long one wins."
    losses = torch.cat([torch.linspace(3, 2.9, 5), torch.full((10,), 3.5), torch.linspace(3.4, 1.0, 60),
                        torch.linspace(1.2, 4., 6)]).double()
    lr, i = valley(LRS, losses, 81)
    assert 15 <= i < 75


def test_slide_on_known_curve():
    "Constant slope up to index 70, then a quadratic blow-up: the first steady window ends at 69, starts at 54."
    n, k = 100, 70
    i = torch.arange(n, dtype=torch.float64)
    losses = 2 - 0.01 * i + 0.05 * torch.clamp(i - k, min=0) ** 2
    lrs = torch.logspace(-7, 1, n, dtype=torch.float64)
    lr, idx = slide(lrs, losses, n)
    assert idx == k - 1 - 15 and lr == lrs[k - 16].item()
    lr2, _ = slide(lrs, losses, n, adjust_value=0.5)
    assert math.isclose(lr2, lrs[k - 16].item() / 2)


def test_suggestions_take_lists_and_check_lengths():
    losses = ((X + 2) ** 2 + 1).tolist()
    assert math.isclose(minimum(LRS.tolist(), losses, 81)[0], 1e-3, rel_tol=1e-9)
    with pytest.raises(ValueError, match='81 learning rates and 3 losses'): steep(LRS, [1., 2., 3.], 81)


def test_suggested_lrs():
    s = suggested_lrs(['minimum', 'valley'], [1e-3, 2e-3])
    assert s.minimum == 1e-3 and s.valley == 2e-3 and type(s).__name__ == 'SuggestedLRs' and tuple(s) == (1e-3, 2e-3)
