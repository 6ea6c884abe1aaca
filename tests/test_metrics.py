"""minifast.metrics against hand-computed values and plain-python references: the functions, the
batch-size weighting of AvgMetric, no host sync per batch, the confusion-matrix metrics, as_metric."""
import functools
import math

import pytest
import torch

from minifast.losses import cross_entropy
from minifast.metrics import (AvgMetric, F1Score, FBeta, Metric, Precision, Recall, accuracy, accuracy_multi, as_metric,
                              error_rate, top_k_accuracy)


def run(metric, *batches):
    metric.reset()
    for pred, *yb in batches: metric.accumulate(pred, *yb)
    return metric.value


# --- functions ------------------------------------------------------------------------------------------------

def test_accuracy_hand_values():
    inp = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.0, 0.0, 1.0]])
    targ = torch.tensor([1, 0, 1, 2, 2])  # right: rows 0, 1, 4
    assert accuracy(inp, targ).item() == pytest.approx(3 / 5)
    assert error_rate(inp, targ).item() == pytest.approx(2 / 5)
    assert accuracy(inp, targ[:, None]).item() == pytest.approx(3 / 5)
    # classes on axis 1 of (N, C, H, W): one target per pixel
    img = inp.T.reshape(1, 3, 5, 1)
    assert accuracy(img, targ.reshape(1, 5, 1), axis=1).item() == pytest.approx(3 / 5)
    assert accuracy.__name__ == 'accuracy' and error_rate.__name__ == 'error_rate'


def test_accuracy_shape_mismatch_names_shapes():
    with pytest.raises(ValueError) as info: accuracy(torch.randn(4, 3), torch.tensor([0, 1, 2]))
    assert 'accuracy' in str(info.value) and '(4,)' in str(info.value) and '(3,)' in str(info.value)


def test_top_k_accuracy_against_python_loop():
    g = torch.Generator().manual_seed(0)
    inp, targ = torch.randn(50, 7, generator=g), torch.randint(0, 7, (50,), generator=g)
    for k in (1, 2, 5, 7):
        hits = 0
        for row, t in zip(inp.tolist(), targ.tolist()):
            ranked = sorted(range(7), key=lambda c: -row[c])
            hits += t in ranked[:k]
        assert top_k_accuracy(inp, targ, k=k).item() == pytest.approx(hits / 50)
    assert top_k_accuracy(inp, targ, k=1).item() == pytest.approx(accuracy(inp, targ).item())
    assert top_k_accuracy(inp, targ, k=7).item() == 1.0
    assert top_k_accuracy(inp.T, targ, k=3, axis=0).item() == pytest.approx(top_k_accuracy(inp, targ, k=3).item())
    with pytest.raises(ValueError, match=r'k=9.*7'): top_k_accuracy(inp, targ, k=9)


def test_accuracy_multi_hand_values():
    inp = torch.tensor([[2.0, -1.0, 0.3], [-3.0, 0.1, -0.2]])  # sigmoid > 0.5 exactly where inp > 0
    targ = torch.tensor([[1, 0, 0], [0, 1, 1]])               # wrong: (0, 2) and (1, 2)
    assert accuracy_multi(inp, targ).item() == pytest.approx(4 / 6)
    assert accuracy_multi(inp.sigmoid(), targ, sigmoid=False).item() == pytest.approx(4 / 6)
    # .8 > sigmoid(.3)=.57: (0,2) now right, (0,0) .88 still right, (1,1) .52 now wrong
    assert accuracy_multi(inp, targ.bool(), thresh=0.8).item() == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match='accuracy_multi'): accuracy_multi(inp, targ[:, :2])


# --- AvgMetric ------------------------------------------------------------------------------------------------

def test_avg_metric_weights_by_batch_size():
    g = torch.Generator().manual_seed(1)
    inp, targ = torch.randn(11, 4, generator=g), torch.randint(0, 4, (11,), generator=g)
    m = AvgMetric(accuracy)
    whole = run(m, (inp, targ))
    split = run(m, (inp[:8], targ[:8]), (inp[8:], targ[8:]))
    assert isinstance(split, float) and split == pytest.approx(whole, abs=1e-6)
    assert whole == pytest.approx(accuracy(inp, targ).item())
    unweighted = (accuracy(inp[:8], targ[:8]) + accuracy(inp[8:], targ[8:])).item() / 2
    assert unweighted != pytest.approx(whole)  # so the check above can tell weighting from not
    assert run(m, (inp[:3], targ[:3])) == pytest.approx(accuracy(inp[:3], targ[:3]).item())  # reset works
    m.reset()
    assert math.isnan(m.value)


def test_avg_metric_accumulate_does_not_sync(monkeypatch):
    "No .item() (or other host read) per batch: sums stay tensors until `value`."
    g = torch.Generator().manual_seed(2)
    inp, targ = torch.randn(6, 3, generator=g), torch.randint(0, 3, (6,), generator=g)
    m = AvgMetric(accuracy)
    m.reset()

    def forbidden(*args, **kwargs): raise AssertionError('host read of a tensor inside accumulate')
    with monkeypatch.context() as mp:
        for attr in ('item', 'tolist', '__float__', '__int__', '__bool__', 'numpy'):
            mp.setattr(torch.Tensor, attr, forbidden)
        m.accumulate(inp[:4], targ[:4])
        m.accumulate(inp[4:], targ[4:])
        assert isinstance(m.total, torch.Tensor)
    assert m.value == pytest.approx(accuracy(inp, targ).item())


def test_metrics_and_loss_run_on_meta_tensors():
    "Meta tensors have no data, so any per-batch host read would fail: this is what runs on a GPU without syncing."
    x, t = torch.randn(8, 5, device='meta', requires_grad=True), torch.randint(0, 5, (8,), device='meta')
    cross_entropy(x, t, weight=torch.ones(5, device='meta'), label_smoothing=0.1).backward()
    for m in (AvgMetric(accuracy), AvgMetric(top_k_accuracy), F1Score(average='macro'), Precision(), Recall()):
        m.reset()
        m.accumulate(x.detach(), t)
        m.accumulate(x.detach(), t)
    with pytest.raises(Exception): torch.bincount(t, minlength=25)  # why the confusion counts use index_add_


def test_avg_metric_names():
    assert AvgMetric(accuracy).name == 'accuracy'
    assert AvgMetric(functools.partial(top_k_accuracy, k=3)).name == 'top_k_accuracy'
    assert AvgMetric(accuracy, name='acc').name == 'acc'
    with pytest.raises(TypeError, match='AvgMetric'): AvgMetric(3)


# --- as_metric ------------------------------------------------------------------------------------------------

def test_as_metric_conversions():
    p = Precision(average='macro')
    assert as_metric(p) is p
    r = as_metric(Recall)
    assert isinstance(r, Recall) and r.average == 'binary' and r.name == 'recall_score'
    a = as_metric(error_rate)
    assert isinstance(a, AvgMetric) and a.func is error_rate and a.name == 'error_rate'
    for bad in (3, 'accuracy', int):
        with pytest.raises(TypeError, match='as_metric'): as_metric(bad)


def test_metric_base_name_and_protocol():
    class MaxScore(Metric):
        def reset(self): self.best = None
        def accumulate(self, pred, *yb):
            b = pred.max()
            self.best = b if self.best is None else torch.maximum(self.best, b)
        @property
        def value(self): return float(self.best)
    m = as_metric(MaxScore)
    assert m.name == 'max_score'
    assert run(m, (torch.tensor([1., 3.]), None), (torch.tensor([2.]), None)) == 3.0
    m.name = 'peak'
    assert m.name == 'peak'
    assert (Precision().name, Recall().name, F1Score().name, FBeta(2).name) == \
        ('precision_score', 'recall_score', 'f1_score', 'fbeta_score')
    with pytest.raises(NotImplementedError): Metric().reset()


# --- precision, recall, F-beta ----------------------------------------------------------------------------------

def reference_scores(y_true, y_pred, n_classes, beta, average, pos_label=1):
    "Precision, recall and F-beta with plain python loops, following scikit-learn's definitions."
    def per_class(c):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        return tp, fp, fn

    def scores(tp, fp, fn):
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        b2 = beta * beta
        f = (1 + b2) * prec * rec / (b2 * prec + rec) if b2 * prec + rec else 0.0
        return prec, rec, f

    if average == 'binary': return scores(*per_class(pos_label))
    if average == 'micro':
        counts = [per_class(c) for c in range(n_classes)]
        return scores(*(sum(col) for col in zip(*counts)))
    labels = sorted(set(y_true) | set(y_pred))
    per = {c: scores(*per_class(c)) for c in labels}
    if average == 'macro': return tuple(sum(per[c][i] for c in labels) / len(labels) for i in range(3))
    support = {c: sum(1 for t in y_true if t == c) for c in labels}
    total = sum(support.values())
    return tuple(sum(per[c][i] * support[c] for c in labels) / total for i in range(3))


@pytest.mark.parametrize('average', ['macro', 'micro', 'weighted'])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_precision_recall_fbeta_against_reference(average, seed):
    g = torch.Generator().manual_seed(seed)
    n, c = 40, 6
    y_true = torch.randint(0, c - 1, (n,), generator=g)  # class 5 never a target...
    y_true[y_true == 3] = 2                                # ...nor class 3
    y_pred = torch.where(torch.rand(n, generator=g) < 0.6, y_true, torch.randint(0, c - 2, (n,), generator=g))
    pred = torch.randn(n, c, generator=g).abs() + 5 * torch.nn.functional.one_hot(y_pred, c)  # argmax == y_pred
    ref = reference_scores(y_true.tolist(), y_pred.tolist(), c, beta=2.0, average=average)
    batches = [(pred[:13], y_true[:13]), (pred[13:], y_true[13:])]
    got = [run(Precision(average=average), *batches), run(Recall(average=average), *batches),
           run(FBeta(2.0, average=average), *batches)]
    assert got == pytest.approx(list(ref), abs=1e-12)
    ref_f1 = reference_scores(y_true.tolist(), y_pred.tolist(), c, beta=1.0, average=average)[2]
    assert run(F1Score(average=average), *batches) == pytest.approx(ref_f1, abs=1e-12)
    if average == 'micro':  # one label per item: micro scores are the accuracy
        assert got[0] == pytest.approx(accuracy(pred, y_true).item())


def test_precision_recall_f1_hand_values():
    "Six items, three classes (the example in the notebook)."
    targ = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1, 1, 2]), 3).float()
    b = (pred, targ)
    assert run(Precision(average='macro'), b) == pytest.approx(5 / 6)      # (1 + 1/2 + 1) / 3
    assert run(Recall(average='macro'), b) == pytest.approx(2 / 3)         # (1/2 + 1 + 1/2) / 3
    assert run(F1Score(average='macro'), b) == pytest.approx(2 / 3)        # every class 2/3
    assert run(Precision(average='micro'), b) == pytest.approx(4 / 6)
    assert run(Recall(average='micro'), b) == pytest.approx(4 / 6)
    assert run(Precision(average='weighted'), b) == pytest.approx(5 / 6)   # equal supports
    assert run(FBeta(2, average='macro'), b) == pytest.approx((5 / 9 + 5 / 6 + 5 / 9) / 3)  # 5pr / (4p + r)


def test_binary_hand_values():
    targ = torch.tensor([1, 1, 1, 0, 0])
    pred = torch.nn.functional.one_hot(torch.tensor([1, 0, 1, 1, 0]), 2).float()
    b = (pred, targ)
    assert run(Precision(), b) == pytest.approx(2 / 3)  # predicted 1: items 0, 2, 3
    assert run(Recall(), b) == pytest.approx(2 / 3)     # actual 1: items 0, 1, 2
    assert run(F1Score(), b) == pytest.approx(2 / 3)
    assert run(Precision(pos_label=0), b) == pytest.approx(1 / 2)
    assert run(Recall(pos_label=0), b) == pytest.approx(1 / 2)
    assert run(Precision(), (pred[3:], targ[3:])) == 0.0  # no true positive: an undefined/zero score is 0


def test_confusion_metric_errors():
    with pytest.raises(ValueError, match="average.*'avg'"): Precision(average='avg')
    with pytest.raises(ValueError, match="binary.*3 classes.*macro"):
        run(Recall(), (torch.randn(4, 3), torch.tensor([0, 1, 2, 0])))
    with pytest.raises(ValueError, match=r'\[0, 3\).*5'):
        run(F1Score(average='macro'), (torch.randn(2, 3), torch.tensor([0, 5])))
    with pytest.raises(ValueError, match='one score per class'):
        run(Precision(), (torch.randn(4, 1), torch.tensor([0, 1, 1, 0])))
    with pytest.raises(ValueError, match='3 classes but earlier batches had 2'):
        run(Precision(), (torch.randn(2, 2), torch.tensor([0, 1])), (torch.randn(2, 3), torch.tensor([0, 1])))
    assert math.isnan(Precision().value)


def test_against_sklearn():
    "An independent reference: scikit-learn is a dev dependency (not a runtime one)."
    import sklearn.metrics as metrics
    g = torch.Generator().manual_seed(5)
    targ, pred = torch.randint(0, 4, (60,), generator=g), torch.randn(60, 4, generator=g)
    for avg in ('macro', 'micro', 'weighted'):
        assert run(Precision(average=avg), (pred, targ)) == pytest.approx(
            metrics.precision_score(targ, pred.argmax(1), average=avg, zero_division=0))
        assert run(F1Score(average=avg), (pred, targ)) == pytest.approx(
            metrics.f1_score(targ, pred.argmax(1), average=avg, zero_division=0))


# --- multi-label and ROC AUC metrics: bad inputs (values against scikit-learn: tests/fastai_compat) --------------

def test_multi_label_metrics_name_the_bad_input():
    from minifast.metrics import F1ScoreMulti, PrecisionMulti, RocAuc, RocAucMulti
    with pytest.raises(ValueError, match="average must be one of"): F1ScoreMulti(average='binary')
    with pytest.raises(ValueError, match="sample_weight is not supported"): PrecisionMulti(sample_weight=[1, 2])
    with pytest.raises(ValueError, match=r"\(items, labels\), got \(4, 3\) and \(4,\)"):
        run(F1ScoreMulti(), (torch.randn(4, 3), torch.tensor([0, 1, 1, 0])))
    with pytest.raises(ValueError, match="3 labels but earlier batches had 2"):
        run(F1ScoreMulti(), (torch.randn(2, 2), torch.ones(2, 2)), (torch.randn(2, 3), torch.ones(2, 3)))
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\)"):
        run(PrecisionMulti(labels=[5]), (torch.randn(2, 3), torch.ones(2, 3)))
    with pytest.raises(ValueError, match="multi_class must be 'ovr'"): RocAuc(multi_class='ovo')
    with pytest.raises(ValueError, match="max_fpr is not supported"): RocAucMulti(max_fpr=0.5)
    assert math.isnan(F1ScoreMulti().value) and math.isnan(RocAucMulti().value)


def test_multi_label_metrics_count_on_the_device_without_reading_back():
    "Like the confusion matrix: per-label counts stay tensors between batches."
    from minifast.metrics import F1ScoreMulti
    m = F1ScoreMulti(average='samples')
    m.reset()
    m.accumulate(torch.randn(4, 3), torch.ones(4, 3))
    assert isinstance(m.counts, torch.Tensor) and isinstance(m.sample_total, torch.Tensor)


# --- regression metrics in a fit ----------------------------------------------------------------------------------

def test_regression_metrics_of_a_fit_equal_sklearn_on_the_validation_predictions():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    from minifast.data.core import DataLoaders, Datasets
    from minifast.learner import Learner
    from minifast.metrics import R2Score, mae, rmse
    g = torch.Generator().manual_seed(0)
    X = torch.randn(90, 3, generator=g)
    y = X @ torch.tensor([1., -2., 0.5]) + 0.3 * torch.randn(90, generator=g)
    dsets = Datasets(list(range(90)), [[lambda i: X[i]], [lambda i: y[i:i + 1]]],
                     splits=(range(60), range(60, 90)), kinds=('other', 'regression'))
    dls = DataLoaders.from_dsets(dsets, bs=8, device='cpu', seed=0, num_workers=0)  # validation: 4 uneven batches
    torch.manual_seed(0)
    learn = Learner(dls, torch.nn.Linear(3, 1), loss_func=torch.nn.MSELoss(), metrics=[rmse, mae, R2Score()])
    learn.remove_cb(learn.progress)
    learn.fit(2, 0.05)
    preds, targs = learn.get_preds()
    p, t = preds.flatten().numpy(), targs.flatten().numpy()
    names = learn.recorder.metric_names
    row = dict(zip(names[1:], learn.recorder.values[-1]))
    assert row['rmse'] == pytest.approx(mean_squared_error(t, p) ** 0.5, rel=1e-5)
    assert row['mae'] == pytest.approx(mean_absolute_error(t, p), rel=1e-5)
    assert row['r2_score'] == pytest.approx(r2_score(t, p), rel=1e-5)
