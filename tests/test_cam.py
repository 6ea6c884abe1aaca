"The one-call class activation maps: `learn.show_cam(item)` and `ClassificationInterpretation.plot_cam(idx)`."
import matplotlib
import pytest
import torch

import minifast.learner as learner_mod
from minifast.interpret import ClassificationInterpretation
from minifast.vision.cam import class_activation_map, grad_cam

matplotlib.use('Agg')


def test_learn_show_cam_draws_the_cam_of_the_item_over_its_decoded_image(colour_learner, colour_folder):
    learn, item = colour_learner, colour_folder/'red'/'red_0.jpg'
    x = learn.dls.test_dl([item]).one_batch()[0]
    ax = learn.show_cam(item)
    assert len(ax.images) == 2 and ax.images[0].get_array().shape[:2] == (24, 24)
    assert torch.allclose(torch.tensor(ax.images[1].get_array()), class_activation_map(learn, x), atol=1e-6)
    ax = learn.show_cam(item, method='grad_cam', cls=1)
    assert torch.allclose(torch.tensor(ax.images[1].get_array()), grad_cam(learn, x, cls=1), atol=1e-6)


def test_interp_plot_cam_shows_the_item_with_its_predicted_class_and_title(colour_learner):
    interp = ClassificationInterpretation.from_learner(colour_learner)
    assert interp.learn is colour_learner
    _, top = interp.top_losses(2)
    for idx in top.tolist():
        ax = interp.plot_cam(idx)
        x = interp[idx][0]
        pred = int(interp.decoded[idx])
        # the item's input, independently: its file through the validation pipelines
        x_file = colour_learner.dls.test_dl([interp.dl.items[idx]]).one_batch()[0]
        assert torch.allclose(x, x_file)
        assert torch.allclose(torch.tensor(ax.images[1].get_array()), class_activation_map(colour_learner, x, cls=pred),
                              atol=1e-6)
        assert ax.get_title() == interp._title(idx)
        assert ax.get_title().startswith(f"{interp.vocab[pred]}/{interp.vocab[int(interp.targs[idx])]} /")
    ax = interp.plot_cam(top[0], method='grad_cam', cls=0)
    expected = grad_cam(colour_learner, interp[int(top[0])][0], cls=0)
    assert torch.allclose(torch.tensor(ax.images[1].get_array()), expected, atol=1e-6)


def test_plot_cam_errors_name_the_problem(colour_learner):
    interp = ClassificationInterpretation.from_learner(colour_learner)
    with pytest.raises(IndexError, match=r'idx=99 is not in 0\.\.'): interp.plot_cam(99)
    bare = ClassificationInterpretation(interp.preds, interp.targs, interp.losses, vocab=interp.vocab)
    with pytest.raises(ValueError, match='from_learner'): bare.plot_cam(0)
    with pytest.raises(ValueError, match="'cam' or 'grad_cam'"): interp.plot_cam(0, method='gradcam')


def test_show_cam_without_vision_cam_says_what_to_import(colour_learner, monkeypatch):
    monkeypatch.setattr(learner_mod, '_plugins', {})
    with pytest.raises(RuntimeError, match='import minifast.vision.cam'):
        colour_learner.show_cam(torch.zeros(3, 24, 24))
