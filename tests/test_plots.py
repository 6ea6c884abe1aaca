"Plots return their figure, take figsize= for a new figure and ax= to draw on an existing one."
import matplotlib.pyplot as plt
import pytest
import torch

from conftest import make_synth_dls
from minifast.callback.misc import plot_function
from minifast.interpret import ClassificationInterpretation
from minifast.learner import Learner
from minifast.test_utils import synth_mlp


@pytest.fixture(scope='module')
def learn():
    learn = Learner(make_synth_dls(), synth_mlp(seed=0))
    with learn.no_bar(): learn.fit(1, 1e-2)
    return learn


def _interp():
    preds = torch.tensor([[.9, .1], [.2, .8], [.6, .4]])
    return ClassificationInterpretation(preds, torch.tensor([0, 1, 1]), losses=torch.zeros(3), vocab=['a', 'b'])


_PLOTS = {
    'plot_loss': lambda learn, **kw: learn.recorder.plot_loss(skip_start=0, **kw),
    'plot_lr_find': lambda learn, **kw: learn.recorder.plot_lr_find(skip_end=0, **kw),
    'plot_sched': lambda learn, **kw: learn.recorder.plot_sched(**kw),
    'plot_confusion_matrix': lambda learn, **kw: _interp().plot_confusion_matrix(**kw),
    'plot_function': lambda learn, **kw: plot_function(torch.sin, **kw),
}


@pytest.mark.parametrize('name', list(_PLOTS))
def test_a_plot_returns_a_new_figure_of_figsize(learn, name):
    plt.close('all')
    fig = _PLOTS[name](learn, figsize=(3, 2))
    assert isinstance(fig, plt.Figure) and tuple(fig.get_size_inches()) == (3, 2)
    assert plt.get_fignums() == [fig.number]  # one figure drawn, not two
    plt.close(fig)


@pytest.mark.parametrize('name', list(_PLOTS))
def test_a_plot_draws_on_the_ax_it_is_given(learn, name):
    plt.close('all')
    fig, (left, right) = plt.subplots(1, 2)
    assert _PLOTS[name](learn, ax=right) is fig
    assert right.has_data() and not left.has_data()
    assert plt.get_fignums() == [fig.number]
    plt.close(fig)


def test_show_batch_returns_its_figure_of_figsize():
    from minifast.vision.core import show_images
    plt.close('all')
    fig = show_images([torch.zeros(3, 8, 8, dtype=torch.uint8)] * 2, figsize=(4, 2))
    assert isinstance(fig, plt.Figure) and tuple(fig.get_size_inches()) == (4, 2)
    plt.close(fig)


def test_plot_sched_draws_lr_and_momentum_on_a_pair_of_axes(learn):
    plt.close('all')
    assert any(m is not None for m in learn.recorder.moms)  # Adam's beta1: there is a momentum to draw
    fig, axs = plt.subplots(1, 3)
    assert learn.recorder.plot_sched(ax=axs[1:]) is fig
    assert not axs[0].has_data() and axs[1].has_data() and axs[2].has_data()
    lr_line, mom_line = axs[1].get_lines()[0], axs[2].get_lines()[0]
    assert list(lr_line.get_ydata()) == learn.recorder.lrs and list(mom_line.get_ydata()) == learn.recorder.moms
    assert plt.get_fignums() == [fig.number]
    plt.close(fig)


def test_plot_layer_stats_takes_figsize_or_three_axes():
    from minifast.callback.hook import ActivationStats
    learn = Learner(make_synth_dls(), synth_mlp(seed=0), cbs=ActivationStats())
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    stats = learn.activation_stats
    plt.close('all')
    fig = stats.plot_layer_stats(0, figsize=(6, 2))
    assert tuple(fig.get_size_inches()) == (6, 2) and len(fig.axes) == 3
    plt.close(fig)
    fig, axs = plt.subplots(2, 3)
    assert stats.plot_layer_stats(0, ax=axs[1]) is fig
    assert [a.has_data() for a in axs.flat] == [False] * 3 + [True] * 3 and plt.get_fignums() == [fig.number]
    with pytest.raises(ValueError, match='needs 3 axes'): stats.plot_layer_stats(0, ax=axs[0, 0])
    plt.close(fig)
