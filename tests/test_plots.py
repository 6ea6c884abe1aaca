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
