"""fastai's documented losses and metrics (docs.fast.ai/losses.html, docs.fast.ai/metrics.html), checked against
torch and scikit-learn as independent references, with fastai's defaults."""
import inspect
import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minifast.losses import (BCELossFlat, BCEWithLogitsLossFlat, CrossEntropyLossFlat, LabelSmoothingCrossEntropy,
                             LabelSmoothingCrossEntropyFlat, MSELossFlat)
from minifast.metrics import (F1Score, F1ScoreMulti, FBeta, FBetaMulti, HammingLoss, HammingLossMulti, Jaccard,
                              JaccardMulti, MatthewsCorrCoef, MatthewsCorrCoefMulti, Precision, PrecisionMulti, Recall,
                              RecallMulti, RocAuc, RocAucBinary, RocAucMulti, accuracy, accuracy_multi, as_metric,
                              error_rate, top_k_accuracy)

skm = pytest.importorskip('sklearn.metrics')


def _run(metric, pred, targ, n_batches=3):
    "Reset, accumulate `pred`/`targ` in uneven batches, read the value: what a Learner does in a validation pass."
    m = as_metric(metric)
    m.reset()
    for idx in np.array_split(np.arange(len(pred)), n_batches): m.accumulate(pred[idx], targ[idx])
    return m.value


# ---- losses

def test_label_smoothing_cross_entropy_is_torchs_label_smoothing():
    torch.manual_seed(0)
    x, t = torch.randn(16, 5), torch.randint(0, 5, (16,))
    loss = LabelSmoothingCrossEntropy()
    assert (loss.eps, loss.reduction) == (0.1, 'mean')
    torch.testing.assert_close(loss(x, t), F.cross_entropy(x, t, label_smoothing=0.1))
    torch.testing.assert_close(LabelSmoothingCrossEntropyFlat()(x, t), loss(x, t))
    for red in ('sum', 'none'):
        torch.testing.assert_close(LabelSmoothingCrossEntropy(0.3, reduction=red)(x, t),
                                   F.cross_entropy(x, t, label_smoothing=0.3, reduction=red))


def test_label_smoothing_cross_entropy_takes_classes_in_dim_1():
    torch.manual_seed(0)
    x, t = torch.randn(2, 4, 3, 3), torch.randint(0, 4, (2, 3, 3))
    torch.testing.assert_close(LabelSmoothingCrossEntropy()(x, t), F.cross_entropy(x, t, label_smoothing=0.1))
    torch.testing.assert_close(LabelSmoothingCrossEntropyFlat(axis=1)(x, t), F.cross_entropy(x, t, label_smoothing=0.1))


def test_label_smoothing_with_class_weights_weights_the_nll_term_only():
    "fastai: `loss * eps / c + (1 - eps) * F.nll_loss(log_preds, target, weight=weight)`."
    torch.manual_seed(0)
    x, t, w = torch.randn(10, 3), torch.randint(0, 3, (10,)), torch.tensor([1., 2., 0.5])
    expected = -F.log_softmax(x, 1).sum(1).mean() * 0.1 / 3 + 0.9 * F.nll_loss(F.log_softmax(x, 1), t, weight=w)
    torch.testing.assert_close(LabelSmoothingCrossEntropy(weight=w)(x, t), expected)
    torch.testing.assert_close(LabelSmoothingCrossEntropyFlat(weight=w)(x, t), expected)


def test_label_smoothing_positional_arguments_are_eps_weight_reduction():
    assert list(inspect.signature(LabelSmoothingCrossEntropy).parameters)[:3] == ['eps', 'weight', 'reduction']
    assert LabelSmoothingCrossEntropyFlat(0.2).eps == 0.2


def test_label_smoothing_decodes_like_cross_entropy():
    x = torch.randn(6, 4)
    loss = LabelSmoothingCrossEntropy()
    torch.testing.assert_close(loss.activation(x), F.softmax(x, dim=-1))
    assert torch.equal(loss.decodes(x), x.argmax(-1))


def test_flat_losses_activation_and_decodes():
    x = torch.randn(6, 4)
    ce = CrossEntropyLossFlat()
    torch.testing.assert_close(ce.activation(x), F.softmax(x, -1))
    assert torch.equal(ce.decodes(x), x.argmax(-1))
    bce = BCEWithLogitsLossFlat()
    assert bce.thresh == 0.5
    torch.testing.assert_close(bce.activation(x), x.sigmoid())
    assert torch.equal(bce.decodes(x.sigmoid()), x.sigmoid() > 0.5)
    assert torch.equal(BCEWithLogitsLossFlat(thresh=0.2).decodes(x.sigmoid()), x.sigmoid() > 0.2)


def test_flat_losses_values():
    torch.manual_seed(0)
    x, t = torch.randn(8, 3), torch.randint(0, 2, (8, 3))
    torch.testing.assert_close(BCEWithLogitsLossFlat()(x, t), F.binary_cross_entropy_with_logits(x, t.float()))
    torch.testing.assert_close(BCELossFlat()(x.sigmoid(), t), F.binary_cross_entropy(x.sigmoid(), t.float()))
    y, p = torch.randn(8), torch.randn(8, 1)
    torch.testing.assert_close(MSELossFlat()(p, y), F.mse_loss(p[:, 0], y))


# ---- single-label metrics

def test_accuracy_error_rate_top_k():
    torch.manual_seed(0)
    x, t = torch.randn(50, 6), torch.randint(0, 6, (50,))
    acc = skm.accuracy_score(t, x.argmax(1))
    assert float(accuracy(x, t)) == pytest.approx(acc)
    assert float(error_rate(x, t)) == pytest.approx(1 - acc)
    assert float(top_k_accuracy(x, t)) == pytest.approx(skm.top_k_accuracy_score(t, x, k=5))
    assert float(top_k_accuracy(x, t, k=2)) == pytest.approx(skm.top_k_accuracy_score(t, x, k=2))
    assert [as_metric(f).name for f in (accuracy, error_rate, top_k_accuracy)] == \
        ['accuracy', 'error_rate', 'top_k_accuracy']


@pytest.mark.parametrize('average', ['binary', 'macro', 'micro', 'weighted'])
def test_single_label_scores_match_sklearn(average):
    torch.manual_seed(1)
    n_classes = 2 if average == 'binary' else 4
    x, t = torch.randn(60, n_classes), torch.randint(0, n_classes, (60,))
    p = x.argmax(1)
    for ours, ref in [(Precision(average=average), skm.precision_score), (Recall(average=average), skm.recall_score),
                      (F1Score(average=average), skm.f1_score), (Jaccard(average=average), skm.jaccard_score),
                      (FBeta(2, average=average), partial(skm.fbeta_score, beta=2))]:
        assert _run(ours, x, t) == pytest.approx(ref(t, p, average=average, zero_division=0)), ours
    assert _run(MatthewsCorrCoef(), x, t) == pytest.approx(skm.matthews_corrcoef(t, p))
    assert _run(HammingLoss(), x, t) == pytest.approx(skm.hamming_loss(t, p))


def test_single_label_defaults_and_names_are_fastais():
    params = inspect.signature(Precision).parameters
    assert list(params) == ['axis', 'labels', 'pos_label', 'average', 'sample_weight']
    assert (params['axis'].default, params['average'].default) == (-1, 'binary')
    assert list(inspect.signature(FBeta).parameters)[:2] == ['beta', 'axis']
    names = [m.name for m in (Precision(), Recall(), FBeta(2), F1Score(), Jaccard(), MatthewsCorrCoef(),
                              HammingLoss(), RocAuc(), RocAucBinary())]
    assert names == ['precision_score', 'recall_score', 'fbeta_score', 'f1_score', 'jaccard_score',
                     'matthews_corrcoef', 'hamming_loss', 'roc_auc_score', 'roc_auc_score']


def test_labels_restrict_the_average_as_in_sklearn():
    torch.manual_seed(2)
    x, t = torch.randn(40, 4), torch.randint(0, 4, (40,))
    ref = skm.precision_score(t, x.argmax(1), labels=[0, 2], average='macro', zero_division=0)
    assert _run(Precision(labels=[0, 2], average='macro'), x, t) == pytest.approx(ref)


def test_roc_auc_matches_sklearn():
    torch.manual_seed(3)
    x, t = torch.randn(80, 3), torch.randint(0, 3, (80,))
    probs = F.softmax(x, 1)
    for average in ('macro', 'weighted'):
        ref = skm.roc_auc_score(t, probs, multi_class='ovr', average=average)
        assert _run(RocAuc(average=average), x, t) == pytest.approx(ref)
    x2, t2 = torch.randn(80, 2), torch.randint(0, 2, (80,))
    assert _run(RocAucBinary(), x2, t2) == pytest.approx(skm.roc_auc_score(t2, F.softmax(x2, 1)[:, 1]))


# ---- multi-label metrics

def _multi_data(seed=4, n=64, n_labels=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_labels, generator=g) * 2
    t = (torch.rand(n, n_labels, generator=g) < 0.4).long()
    return x, t


@pytest.mark.parametrize('average', ['macro', 'micro', 'weighted', 'samples'])
def test_multi_label_scores_match_sklearn_with_fastais_defaults(average):
    "fastai: sigmoid, then `>= thresh` (0.5), then scikit-learn's score of the (items, labels) matrices."
    x, t = _multi_data()
    p = (x.sigmoid() >= 0.5).long()
    for ours, ref in [(PrecisionMulti, skm.precision_score), (RecallMulti, skm.recall_score),
                      (F1ScoreMulti, skm.f1_score), (JaccardMulti, skm.jaccard_score),
                      (partial(FBetaMulti, 0.5), partial(skm.fbeta_score, beta=0.5))]:
        assert _run(ours(average=average), x, t) == pytest.approx(ref(t, p, average=average, zero_division=0)), ours


def test_multi_label_defaults_are_fastais():
    for cls in (PrecisionMulti, RecallMulti, F1ScoreMulti, JaccardMulti):
        m = cls()
        assert (m.thresh, m.sigmoid, m.average) == (0.5, True, 'macro')
    assert (FBetaMulti(2).beta, FBetaMulti(2).average) == (2, 'macro')
    names = [m.name for m in (PrecisionMulti(), RecallMulti(), FBetaMulti(2), F1ScoreMulti(), JaccardMulti(),
                              HammingLossMulti(), MatthewsCorrCoefMulti(), RocAucMulti())]
    assert names == ['precision_score', 'recall_score', 'fbeta_score', 'f1_score', 'jaccard_score', 'hamming_loss',
                     'matthews_corrcoef', 'roc_auc_score']


def test_multi_label_thresh_and_sigmoid():
    x, t = _multi_data(seed=5)
    p = (x >= 0.2).long()  # sigmoid=False: the scores are compared as they are
    assert _run(F1ScoreMulti(thresh=0.2, sigmoid=False), x, t) == pytest.approx(
        skm.f1_score(t, p, average='macro', zero_division=0))
    assert _run(PrecisionMulti(labels=[1, 3]), x, t) == pytest.approx(
        skm.precision_score(t, (x.sigmoid() >= 0.5).long(), labels=[1, 3], average='macro', zero_division=0))


def test_hamming_loss_and_mcc_multi():
    x, t = _multi_data(seed=6)
    p = (x.sigmoid() >= 0.5).long()
    assert _run(HammingLossMulti(), x, t) == pytest.approx(skm.hamming_loss(t, p))
    # scikit-learn's matthews_corrcoef refuses (items, labels) matrices; ours is its value over every pair
    assert _run(MatthewsCorrCoefMulti(), x, t) == pytest.approx(skm.matthews_corrcoef(t.reshape(-1), p.reshape(-1)))


@pytest.mark.parametrize('average', ['macro', 'micro', 'weighted'])
def test_roc_auc_multi_matches_sklearn(average):
    x, t = _multi_data(seed=7)
    x[:8] = x[8:16]  # ties
    assert _run(RocAucMulti(average=average), x, t) == pytest.approx(
        skm.roc_auc_score(t, x.sigmoid(), average=average))


def test_roc_auc_multi_documented_example():
    "fastai's docs: the same five scores for every item, targets 0, 0, 1, 1 repeated (here for each label): 0.5."
    x = torch.tensor(np.array([np.arange(0, 0.2, 0.04)] * 20))
    y = torch.tensor([0, 0, 1, 1]).repeat(5)
    assert _run(RocAucMulti(sigmoid=False), x, y[:, None].expand(20, 5).contiguous()) == pytest.approx(0.5)


def test_roc_auc_without_both_kinds_of_target_is_nan():
    assert math.isnan(_run(RocAucMulti(), torch.randn(6, 2), torch.ones(6, 2, dtype=torch.long)))


def test_accuracy_multi_and_a_partial_of_it_as_metric():
    "fastai's docs: `partial(accuracy_multi, thresh=0.1)` in `metrics=`; its column is `accuracy_multi`."
    x, t = _multi_data(seed=8)
    assert float(accuracy_multi(x, t)) == pytest.approx(float(((x.sigmoid() > 0.5) == t.bool()).float().mean()))
    assert list(inspect.signature(accuracy_multi).parameters) == ['inp', 'targ', 'thresh', 'sigmoid']
    m = as_metric(partial(accuracy_multi, thresh=0.1))
    assert m.name == 'accuracy_multi'
    expected = ((x.sigmoid() > 0.1) == t.bool()).float().mean()
    assert _run(m, x, t) == pytest.approx(float(expected))
    assert _run(partial(accuracy_multi, thresh=0.3, sigmoid=False), x, t) == pytest.approx(
        float(((x > 0.3) == t.bool()).float().mean()))
