"fastai's Interpretation as course code uses it: indexing, multi-label learners, a plain PyTorch loss function."
import pandas as pd
import pytest
import torch

from minifast.vision.all import (ClassificationInterpretation, F, ImageDataLoaders, Interpretation, Learner, Resize,
                                 get_image_files, nn, parent_label, plt)


def _model(n_out):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n_out))


@pytest.fixture
def single(colour_folder):
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.5, seed=0, item_tfms=Resize(16), bs=4,
                                       device='cpu', num_workers=0)
    return Learner(dls, _model(2))


@pytest.fixture
def multi(colour_folder):
    files = get_image_files(colour_folder)
    labels = [parent_label(f) + ('' if i % 3 else ' square') for i, f in enumerate(files)]
    df = pd.DataFrame({'fname': [f.relative_to(colour_folder).as_posix() for f in files], 'labels': labels})
    dls = ImageDataLoaders.from_df(df, colour_folder, label_delim=' ', valid_pct=0.5, seed=0, item_tfms=Resize(16),
                                   bs=4, device='cpu', num_workers=0)
    return Learner(dls, _model(len(dls.vocab)))


def test_indexing_an_interpretation_gives_inputs_preds_targs_decoded_losses(single):
    interp = ClassificationInterpretation.from_learner(single)
    idxs = [3, 0, 5]
    inps, preds, targs, decoded, losses = interp[idxs]
    assert torch.equal(preds, interp.preds[idxs]) and torch.equal(targs, interp.targs[idxs])
    assert torch.equal(decoded, interp.decoded[idxs]) and torch.equal(losses, interp.losses[idxs])
    xb = single.dls.valid.make_batch(idxs)[0]
    assert torch.equal(inps, xb)
    assert torch.allclose(single.model(inps).softmax(-1), preds, atol=1e-6)
    _, top = interp.top_losses(2)
    assert torch.equal(interp[top][4], interp.losses[top])
    one = interp[1]   # an int (or a 0-d tensor) is one item, kept as a batch of one as in fastai
    assert one[1].shape == (1, 2) and torch.equal(interp[torch.tensor(1)][4], one[4])


def test_multi_label_learner_gives_one_loss_per_item(multi):
    interp = Interpretation.from_learner(multi)
    n = len(multi.dls.valid_ds)
    assert len(interp) == n and interp.losses.shape == (n,) and interp.preds.shape == (n, len(multi.dls.vocab))
    per_label = F.binary_cross_entropy_with_logits(multi.get_preds(act=lambda x: x)[0], interp.targs.float(),
                                                   reduction='none')
    assert torch.allclose(interp.losses, per_label.mean(1), atol=1e-6)
    losses, idxs = interp.top_losses(3)
    assert torch.equal(losses, interp.losses.sort(descending=True).values[:3])
    fig = interp.plot_top_losses(3)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 3
    plt.close(fig)


def test_a_plain_pytorch_loss_function_works_in_interpretation(single):
    single.loss_func = F.cross_entropy
    interp = ClassificationInterpretation.from_learner(single)
    assert single.loss_func is F.cross_entropy   # restored
    logits = torch.cat([single.model(xb) for xb, _ in single.dls.valid])
    assert torch.allclose(interp.losses, F.cross_entropy(logits, interp.targs, reduction='none'), atol=1e-6)
    assert torch.equal(interp.decoded, logits.argmax(-1))
    losses, idxs = interp.top_losses(2)
    assert torch.equal(losses, interp.losses.sort(descending=True).values[:2])
    fig = interp.plot_top_losses(2)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 2
    plt.close(fig)
    assert interp.confusion_matrix().sum() == len(interp)
