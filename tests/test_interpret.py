"""ClassificationInterpretation against hand counts and plain-python references: confusion matrix,
most_confused ordering, top losses, the per-class report, one inference pass only, plots, and
the memory of the counting on 50,000 items x 1,000 classes."""
import json
import subprocess
import sys
from collections import Counter

import matplotlib
import pytest
import torch
from torch import nn

from minifast.data.core import DataLoaders, Datasets
from minifast.data.transforms import Categorize
from minifast.interpret import ClassificationInterpretation, Interpretation
from minifast.learner import Learner

matplotlib.use('Agg')


def random_interp(n=500, c=7, seed=0, vocab=None):
    g = torch.Generator().manual_seed(seed)
    preds = torch.rand(n, c, generator=g).softmax(-1)
    targs = torch.randint(c, (n,), generator=g)
    losses = -preds[torch.arange(n), targs].log()
    return ClassificationInterpretation(preds, targs, losses, vocab=vocab), preds, targs, losses


def tensor_dls(n=120, n_valid=40, bs=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 1).long()  # three classes
    names = ['a', 'b', 'c']
    dsets = Datasets(list(range(n)), [[lambda i: X[i]], [lambda i: names[int(y[i])], Categorize()]],
                     splits=(range(n - n_valid), range(n - n_valid, n)), kinds=('other', 'category'))
    return DataLoaders.from_dsets(dsets, bs=bs, device='cpu', seed=seed, num_workers=0)


# --- counting ------------------------------------------------------------------------------------------------

def test_confusion_matrix_against_hand_count():
    interp, preds, targs, _ = random_interp()
    decoded = preds.argmax(-1)
    counts = Counter(zip(targs.tolist(), decoded.tolist()))
    expected = [[counts[(a, p)] for p in range(7)] for a in range(7)]
    assert interp.confusion_matrix().tolist() == expected
    assert interp.confusion_matrix().dtype == torch.long


def test_confusion_matrix_small_by_hand():
    targs = torch.tensor([0, 0, 0, 1, 2, 2])
    decoded = torch.tensor([0, 1, 1, 1, 0, 2])
    interp = ClassificationInterpretation(torch.zeros(6, 3), targs, torch.zeros(6), decoded=decoded,
                                          vocab=['x', 'y', 'z'])
    assert interp.confusion_matrix().tolist() == [[1, 2, 0], [0, 1, 0], [1, 0, 1]]


def test_most_confused_ordering_and_min_val():
    # actual -> predicted counts chosen so that the order is fully determined by the counts
    pairs = [(0, 1)] * 5 + [(2, 0)] * 3 + [(1, 2)] * 2 + [(2, 1)] * 1 + [(0, 0)] * 9 + [(1, 1)] * 4
    targs = torch.tensor([a for a, _ in pairs]); decoded = torch.tensor([p for _, p in pairs])
    interp = ClassificationInterpretation(torch.zeros(len(pairs), 3), targs, torch.zeros(len(pairs)), decoded=decoded,
                                          vocab=['cat', 'dog', 'fox'])
    assert interp.most_confused() == [('cat', 'dog', 5), ('fox', 'cat', 3), ('dog', 'fox', 2), ('fox', 'dog', 1)]
    assert interp.most_confused(min_val=3) == [('cat', 'dog', 5), ('fox', 'cat', 3)]
    assert interp.most_confused(min_val=6) == []


def test_most_confused_matches_sorted_python_on_random_data():
    interp, preds, targs, _ = random_interp(n=2000, c=12, seed=3)
    counts = Counter((a, p) for a, p in zip(targs.tolist(), preds.argmax(-1).tolist()) if a != p)
    got = interp.most_confused(min_val=2)
    assert [n for _, _, n in got] == sorted([n for n in counts.values() if n >= 2], reverse=True)
    assert all(counts[(a, p)] == n for a, p, n in got)


def test_top_losses_are_the_largest():
    interp, _, _, losses = random_interp(n=300)
    vals, idxs = interp.top_losses(10)
    ref = sorted(range(300), key=lambda i: -losses[i].item())[:10]
    assert vals.tolist() == [losses[i].item() for i in ref]
    assert all(losses[i] == v for i, v in zip(idxs.tolist(), vals.tolist()))
    small_vals, _ = interp.top_losses(5, largest=False)
    assert small_vals.max() <= losses.sort().values[4]
    assert len(interp.top_losses()[0]) == 300
    with pytest.raises(ValueError, match='k=301'): interp.top_losses(301)


def test_classification_report_against_hand_values():
    targs = torch.tensor([0, 0, 0, 1, 1, 2])
    decoded = torch.tensor([0, 0, 1, 1, 2, 2])
    interp = ClassificationInterpretation(torch.zeros(6, 3), targs, torch.zeros(6), decoded=decoded,
                                          vocab=['a', 'b', 'c'])
    r = interp.classification_report()
    # a: tp 2, predicted 2, actual 3; b: tp 1, predicted 2, actual 2; c: tp 1, predicted 2, actual 1
    assert r.loc['a', 'precision'] == pytest.approx(1.0) and r.loc['a', 'recall'] == pytest.approx(2 / 3)
    assert r.loc['b', 'precision'] == pytest.approx(0.5) and r.loc['b', 'recall'] == pytest.approx(0.5)
    assert r.loc['c', 'precision'] == pytest.approx(0.5) and r.loc['c', 'recall'] == pytest.approx(1.0)
    assert r.loc['a', 'f1-score'] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert r['support'].tolist()[:3] == [3, 2, 1]
    assert r.loc['accuracy', 'f1-score'] == pytest.approx(4 / 6)
    assert r.loc['macro avg', 'recall'] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert r.loc['weighted avg', 'precision'] == pytest.approx((1 * 3 + 0.5 * 2 + 0.5 * 1) / 6)


def test_class_never_predicted_scores_zero(capsys):
    interp = ClassificationInterpretation(torch.zeros(3, 2), torch.tensor([0, 1, 1]), torch.zeros(3),
                                          decoded=torch.tensor([0, 0, 0]), vocab=['a', 'b'])
    r = interp.classification_report()
    assert r.loc['b', 'precision'] == 0 and r.loc['b', 'f1-score'] == 0
    interp.print_classification_report()
    out = capsys.readouterr().out
    assert 'precision' in out and 'weighted avg' in out and '0.33' in out


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match='one class index per item'):
        ClassificationInterpretation(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match='outside the 3 classes'):
        ClassificationInterpretation(torch.zeros(2, 3), torch.tensor([0, 5]), torch.zeros(2))
    with pytest.raises(ValueError, match='same items'):
        ClassificationInterpretation(torch.zeros(3, 3), torch.tensor([0, 1]), torch.zeros(3))


# --- from a learner ------------------------------------------------------------------------------------------

class CountingModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
        self.calls = 0
    def forward(self, x):
        self.calls += 1
        return self.net(x)


def test_from_learner_runs_inference_once_and_keeps_everything():
    dls = tensor_dls()
    model = CountingModel()
    learn = Learner(dls, model)
    with learn.no_bar(): learn.fit(1, 1e-2)
    model.calls = 0
    interp = ClassificationInterpretation.from_learner(learn)
    assert model.calls == len(dls.valid)
    interp.confusion_matrix(); interp.most_confused(); interp.top_losses(5, items=True); interp.classification_report()
    fig = interp.plot_confusion_matrix(normalize=True); matplotlib.pyplot.close(fig)
    assert model.calls == len(dls.valid)  # nothing re-ran the model
    assert interp.vocab == ['a', 'b', 'c'] and len(interp) == 40
    # the losses are cross-entropy of the kept probabilities, the decoded labels their argmax
    assert torch.allclose(interp.losses, -interp.preds[torch.arange(40), interp.targs].log(), atol=1e-5)
    assert torch.equal(interp.decoded, interp.preds.argmax(-1))
    assert interp.targs.tolist() == [int(dls.valid.dataset[i][1]) for i in range(40)]
    _, idxs, items = interp.top_losses(3, items=True)
    assert list(items) == [dls.valid.items[i] for i in idxs.tolist()]


def test_plot_confusion_matrix_texts_and_normalisation():
    interp, *_ = random_interp(n=200, c=4, vocab=['w', 'x', 'y', 'z'])
    fig = interp.plot_confusion_matrix(normalize=True, norm_dec=3)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    cm = interp.confusion_matrix().double()
    expected = cm / cm.sum(1, keepdim=True)
    assert texts == [f"{v:.3f}" for v in expected.flatten().tolist()]
    assert [t.get_text() for t in ax.get_xticklabels()] == ['w', 'x', 'y', 'z']
    matplotlib.pyplot.close(fig)
    fig = interp.plot_confusion_matrix()
    assert [t.get_text() for t in fig.axes[0].texts] == [str(v) for v in cm.long().flatten().tolist()]
    matplotlib.pyplot.close(fig)


def test_plot_top_losses_on_images(tmp_path):
    from PIL import Image
    from minifast.vision.augment import Resize
    from minifast.vision.data import ImageDataLoaders
    for label, colour in (('red', (220, 20, 20)), ('blue', (20, 20, 220))):
        for split in ('train', 'valid'):
            (tmp_path/split/label).mkdir(parents=True)
            for i in range(4): Image.new('RGB', (40, 30 + i), colour).save(tmp_path/split/label/f'{label}_{i}.png')
    dls = ImageDataLoaders.from_folder(tmp_path, item_tfms=Resize(16), bs=4, num_workers=0, device='cpu', seed=0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    learn = Learner(dls, model)
    interp = ClassificationInterpretation.from_learner(learn)
    fig = interp.plot_top_losses(3)
    _, idxs = interp.top_losses(3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 3
    for title, i in zip(titles, idxs.tolist()):
        pred, actual, loss, prob = title.split(' / ')[0].split('/') + title.split(' / ')[1:]
        assert pred == interp.vocab[int(interp.decoded[i])] and actual == interp.vocab[int(interp.targs[i])]
        assert actual == dls.valid.items[i].parent.name
        assert float(loss) == pytest.approx(float(interp.losses[i]), abs=0.01)
        assert float(prob) == pytest.approx(float(interp.preds[i].max()), abs=0.01)
    matplotlib.pyplot.close(fig)


def test_plot_top_losses_without_images_says_what_to_do():
    dls = tensor_dls()
    interp = ClassificationInterpretation.from_learner(Learner(dls, CountingModel()))
    with pytest.raises(ValueError, match='top_losses'): interp.plot_top_losses(3)


def test_interpretation_for_regression_losses():
    interp = Interpretation(torch.tensor([1., 2., 3.]), torch.tensor([1., 0., 3.5]), torch.tensor([0., 4., .25]))
    assert interp.top_losses(1)[1].tolist() == [1]


# --- memory at ImageNet size ---------------------------------------------------------------------------------

_MEMORY_SCRIPT = r"""
import json, os, resource, time, torch
import pandas  # noqa: F401  (a library import, not memory the views use)
from minifast.interpret import ClassificationInterpretation
def rss_mb(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
def peak_mb():  # VmHWM: the peak resident size since the last reset below
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'): return int(line.split()[1]) / 1024
n, c = 50_000, 1_000
g = torch.Generator().manual_seed(0)
preds = torch.rand(n, c, generator=g)
targs = torch.randint(c, (n,), generator=g)
decoded = torch.where(torch.rand(n, generator=g) < 0.7, targs, torch.randint(c, (n,), generator=g))
losses = torch.rand(n, generator=g)
peak_before = peak_mb()
with open('/proc/self/clear_refs', 'w') as f: f.write('5')  # reset the peak, so building the inputs does not count
before = rss_mb()
t = time.perf_counter()
interp = ClassificationInterpretation(preds, targs, losses, decoded=decoded)
cm = interp.confusion_matrix(); mc = interp.most_confused(min_val=2); rep = interp.classification_report()
top = interp.top_losses(9)
elapsed = time.perf_counter() - t
# the peak after, less the memory in use before: an upper bound on what the views needed at once
print(json.dumps({'extra_peak_mb': peak_mb() - before, 'rss_before_mb': before, 'peak_before_mb': peak_before,
                  'preds_mb': preds.numel() * 4 / 2**20, 'seconds': elapsed,
                  'cm_sum': int(cm.sum()), 'diag': int(cm.trace()), 'correct': int((decoded == targs).sum()),
                  'n_report_rows': len(rep)}))
"""


def test_counting_50k_items_1000_classes_stays_small():
    out = subprocess.run([sys.executable, '-c', _MEMORY_SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(res)
    assert res['cm_sum'] == 50_000 and res['diag'] == res['correct'] and res['n_report_rows'] == 1003
    # the probabilities alone are 191 MB; counting must add little on top (a one-hot of them would add 190 MB+)
    assert res['extra_peak_mb'] < 60, res


_FROM_LEARNER_SCRIPT = r"""
import json, os, torch
from torch import nn
from minifast.data.core import DataLoaders, Datasets
from minifast.data.transforms import Categorize
from minifast.interpret import ClassificationInterpretation
from minifast.learner import Learner
def rss_mb(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
def peak_mb():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'): return int(line.split()[1]) / 1024
n, c, bs = 50_000, 1_000, 1_000
names = [f'c{i:03d}' for i in range(c)]
dsets = Datasets(list(range(2 * c)), [[lambda i: torch.zeros(8)], [lambda i: names[i % c], Categorize()]],
                 splits=(range(c), range(c, 2 * c)), kinds=('other', 'category'))
learn = Learner(DataLoaders.from_dsets(dsets, bs=64, device='cpu', num_workers=0), nn.Linear(8, c))
learn.remove_cb(learn.progress)
g = torch.Generator().manual_seed(0)
batches = [(torch.randn(bs, 8, generator=g), torch.randint(c, (bs,), generator=g)) for _ in range(n // bs)]
with open('/proc/self/clear_refs', 'w') as f: f.write('5')
before = rss_mb()
interp = ClassificationInterpretation.from_learner(learn, dl=batches)   # a plain list of (x, y) batches
cm = interp.confusion_matrix(); mc = interp.most_confused(); top = interp.top_losses(9)
print(json.dumps({'extra_peak_mb': peak_mb() - before, 'preds_mb': n * c * 4 / 2**20, 'n': len(interp),
                  'cm_sum': int(cm.sum()), 'vocab_ok': interp.vocab == names,
                  'sums_to_one': bool(torch.allclose(interp.preds.sum(1), torch.ones(n), atol=1e-4))}))
"""


def test_from_learner_on_50k_items_1000_classes_keeps_one_copy():
    """The whole inference pass: softmax batch by batch and a concatenation that frees as it copies,
    so the scores exist once."""
    import os
    # a fixed mmap threshold makes freed blocks leave the resident size, so it measures what is really in use;
    # minifast's own allocator setting (keep_freed_memory) keeps blocks in the heap, where the resident size depends
    # on its layout
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072', MINIFAST_KEEP_FREED_MEMORY='0', OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, '-c', _FROM_LEARNER_SCRIPT], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(res)
    assert res['n'] == res['cm_sum'] == 50_000 and res['vocab_ok'] and res['sums_to_one']
    # the probabilities are 191 MB; torch.cat of the batches then a softmax would peak at two or three times that
    assert res['extra_peak_mb'] < 1.5 * res['preds_mb'], res
