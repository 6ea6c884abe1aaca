"""The training toolbox: TTA averages augmented passes, progressive resizing keeps the vocabulary and
the weights, an ensemble of identical learners equals either, gradient accumulation equals a big
batch, CSVLogger / ShowGraphCallback / plot_function."""
import csv

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minifast.callback.core import Callback
from minifast.callback.misc import CSVLogger, GradientAccumulation, ShowGraphCallback, plot_function
from minifast.callback.tta import ensemble_preds, progressive_resize, resize_dls, tta
from minifast.data.core import DataLoaders, Datasets
from minifast.data.transforms import Categorize, Transform
from minifast.learner import Learner
from minifast.metrics import accuracy, error_rate
from minifast.optimizer import SGD

matplotlib.use('Agg')


class Jitter(Transform):
    "Random noise on the training split only (an augmentation for tensors)."
    split_idx = 0
    def __call__(self, x, split_idx=None, generator=None):
        if split_idx != 0: return x
        return x + 0.5 * torch.randn(x.shape, generator=generator)


def make_dls(n=100, n_valid=30, bs=16, seed=0, aug=True, n_feat=2):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, n_feat, generator=g)
    dsets = Datasets(list(range(n)), [[lambda i: X[i]], [lambda i: 'ab'[int(X[i].sum() > 0)], Categorize()]],
                     splits=(range(n - n_valid), range(n - n_valid, n)), kinds=('other', 'category'))
    return DataLoaders.from_dsets(dsets, bs=bs, after_item=[[Jitter()]] if aug else None, device='cpu', seed=seed,
                                  num_workers=0)


def make_learner(seed=0, dls=None, **kw):
    torch.manual_seed(seed)
    learn = Learner(dls or make_dls(), nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2)), **kw)
    learn.remove_cb(learn.progress)
    return learn


# --- TTA -----------------------------------------------------------------------------------------------------

def test_tta_shape_and_that_it_averages():
    learn = make_learner(); learn.fit(1, 0.05)
    preds, targs = learn.tta(n=4, beta=0.25)
    assert preds.shape == (30, 2) and targs.shape == (30,)
    assert torch.allclose(preds.sum(1), torch.ones(30), atol=1e-5)  # still probabilities
    plain, plain_targs = learn.get_preds()
    assert torch.equal(targs, plain_targs)
    # the reference: the same augmented loader, passes averaged by hand
    aug_dl = learn.dls.valid.new(split_idx=0, shuffle=False, drop_last=False)
    passes = torch.stack([learn.get_preds(dl=aug_dl)[0] for _ in range(4)])
    assert not torch.allclose(passes[0], passes[1])  # augmentation really happens
    assert not torch.allclose(passes[0], plain)
    assert torch.allclose(preds, 0.75 * passes.mean(0) + 0.25 * plain, atol=1e-6)
    assert torch.allclose(tta(learn, n=4, beta=0.)[0], passes.mean(0), atol=1e-6)
    assert torch.allclose(tta(learn, n=4, beta=1.)[0], plain, atol=1e-6)
    assert torch.allclose(tta(learn, n=4, use_max=True)[0], torch.maximum(passes.max(0).values, plain), atol=1e-6)
    (aug, plain2), _ = tta(learn, n=4, beta=None)
    assert torch.allclose(aug, passes.mean(0), atol=1e-6) and torch.allclose(plain2, plain)


def test_tta_without_augmentation_equals_plain_predictions():
    learn = make_learner(dls=make_dls(aug=False)); learn.fit(1, 0.05)
    assert torch.allclose(learn.tta(n=2)[0], learn.get_preds()[0], atol=1e-6)
    with pytest.raises(ValueError, match='n=0'): learn.tta(n=0)


# --- ensembles -----------------------------------------------------------------------------------------------

def test_ensemble_of_two_identical_learners_equals_either():
    a = make_learner(metrics=[accuracy, error_rate]); a.fit(1, 0.05)
    b = make_learner(metrics=[accuracy, error_rate]); b.fit(1, 0.05)
    pa, ta = a.get_preds()
    preds, targs, table = ensemble_preds([a, b], names=['a', 'b'])
    assert torch.allclose(preds, pa, atol=1e-7) and torch.equal(targs, ta)
    assert list(table.index) == ['a', 'b', 'ensemble'] and list(table.columns) == ['accuracy', 'error_rate']
    assert table.loc['ensemble', 'accuracy'] == pytest.approx(table.loc['a', 'accuracy'])
    assert table.loc['a', 'accuracy'] == pytest.approx(float((pa.argmax(1) == ta).float().mean()))


def test_ensemble_averages_different_members_and_reports_each():
    members = [make_learner(seed=s) for s in range(3)]
    for m in members: m.fit(1, 0.05)
    preds, targs, table = ensemble_preds(members, metrics=accuracy)
    each = [m.get_preds()[0] for m in members]
    assert torch.allclose(preds, torch.stack(each).mean(0), atol=1e-6)
    for name, p in zip(table.index[:3], each):
        assert table.loc[name, 'accuracy'] == pytest.approx(float((p.argmax(1) == targs).float().mean()))
    assert table.loc['ensemble', 'accuracy'] == pytest.approx(float((preds.argmax(1) == targs).float().mean()))


def test_ensemble_refuses_different_data():
    a = make_learner(metrics=accuracy)
    b = make_learner(dls=make_dls(seed=1), metrics=accuracy)
    with pytest.raises(ValueError, match='same items in the same order'): ensemble_preds([a, b])
    with pytest.raises(ValueError, match='metrics='): ensemble_preds([make_learner()])


# --- progressive resizing ------------------------------------------------------------------------------------

def image_folder(tmp_path):
    from PIL import Image
    for label, colour in (('red', (220, 20, 20)), ('blue', (20, 20, 220)), ('green', (20, 200, 20))):
        for split in ('train', 'valid'):
            (tmp_path/split/label).mkdir(parents=True)
            for i in range(3): Image.new('RGB', (60, 50 + i), colour).save(tmp_path/split/label/f'{label}_{i}.jpg')
    return tmp_path


def conv_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


class WeightsAtFit(Callback):
    def before_fit(self):
        self.weights = {k: v.clone() for k, v in self.learn.model.state_dict().items()}
        self.size = tuple(self.learn.dls.train.one_batch()[0].shape[-2:])
        self.vocab = list(self.learn.dls.vocab)


def test_progressive_resizing_keeps_vocab_and_weights(tmp_path):
    from minifast.vision.augment import Resize
    from minifast.vision.data import ImageDataLoaders
    dls = ImageDataLoaders.from_folder(image_folder(tmp_path), item_tfms=Resize(16), bs=3, num_workers=0,
                                       device='cpu', seed=0)
    learn = Learner(dls, conv_net())
    learn.remove_cb(learn.progress)
    learn.fit(1, 0.01)
    model = learn.model
    probe = WeightsAtFit()
    progressive_resize(learn, [24, 32], [1, 1], lr=0.01, fit='fit', cbs=probe)
    assert learn.model is model
    assert not all(torch.equal(probe.weights[k], v) for k, v in learn.model.state_dict().items())  # it trained on
    assert learn.dls.train.one_batch()[0].shape[-2:] == (32, 32) and probe.size == (32, 32)
    assert list(learn.dls.vocab) == list(dls.vocab) == ['blue', 'green', 'red'] == probe.vocab
    assert learn.dls.valid.items == dls.valid.items
    # the original DataLoaders are untouched, their JPEG draft size too; the copy may decode larger
    assert dls.train.one_batch()[0].shape[-2:] == (16, 16)
    loader = lambda d: next(t for t in d.train.dataset.dsets.pipelines[0] if hasattr(t, 'draft_size'))
    assert loader(dls).draft_size == 16 and loader(learn.dls).draft_size == 32


def test_resize_keeps_the_weights_exactly(tmp_path):
    from minifast.vision.augment import Resize
    from minifast.vision.data import ImageDataLoaders
    dls = ImageDataLoaders.from_folder(image_folder(tmp_path), item_tfms=Resize(16), bs=3, num_workers=0,
                                       device='cpu', seed=0)
    learn = Learner(dls, conv_net())
    learn.remove_cb(learn.progress)
    learn.fit(1, 0.01)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    probe = WeightsAtFit()
    progressive_resize(learn, 24, 1, lr=0.01, fit='fit', cbs=probe)
    assert all(torch.equal(probe.weights[k], before[k]) for k in before)  # training went on from the trained weights
    assert probe.size == (24, 24)


class BatchSize(Transform):
    "A batch transform with a size in its config (as aug_transforms(size=...) has)."
    order = 20
    def __init__(self, size): self.size = size
    def encodes(self, x): return F.interpolate(x, size=(self.size, self.size), mode='bilinear') if x.ndim == 4 else x
    def get_config(self): return {'size': self.size}


def test_resize_changes_the_batch_stage_when_it_sets_the_size(tmp_path):
    from minifast.vision.augment import Resize
    from minifast.vision.data import ImageDataLoaders
    dls = ImageDataLoaders.from_folder(image_folder(tmp_path), item_tfms=Resize(40), batch_tfms=BatchSize(16), bs=3,
                                       num_workers=0, device='cpu', seed=0)
    big = resize_dls(dls, 28)
    assert big.train.one_batch()[0].shape[-2:] == (28, 28) and dls.train.one_batch()[0].shape[-2:] == (16, 16)
    # presize kept
    assert [t.get_config() for t in big.train.after_item[0] if hasattr(t, 'size')][0]['size'] == [40, 40]


def test_resize_without_a_size_says_what_to_do():
    with pytest.raises(ValueError, match='Resize'): resize_dls(make_dls(), 32)
    with pytest.raises(ValueError, match='one per size'): progressive_resize(make_learner(), [16, 32], [1, 2, 3])


# --- gradient accumulation, logging, graph, plot_function ---------------------------------------------------

def sgd_weights(bs, cbs=None, epochs=2):
    torch.manual_seed(0)
    learn = Learner(make_dls(n=96, n_valid=32, bs=bs, aug=False), nn.Linear(2, 2), opt_func=SGD)
    learn.remove_cb(learn.progress)
    learn.fit(epochs, 0.5, cbs=cbs)
    return learn.model.weight.detach().clone(), learn


def test_gradient_accumulation_equals_one_big_batch():
    acc, _ = sgd_weights(8, GradientAccumulation(32))
    big, _ = sgd_weights(32)
    small, _ = sgd_weights(8)
    assert torch.allclose(acc, big, atol=1e-6)
    assert not torch.allclose(small, big, atol=1e-3)


def test_gradient_accumulation_steps_once_per_n_acc_items():
    class CountSteps(Callback):
        def before_fit(self): self.n = 0
        def after_step(self): self.n += 1
    counter = CountSteps()
    sgd_weights(8, [GradientAccumulation(24), counter], epochs=1)  # 64 items in 8 batches of 8: steps after 24 and 48
    assert counter.n == 2


def test_csv_logger_writes_the_table_and_appends(tmp_path):
    learn = make_learner(metrics=accuracy, path=tmp_path)
    learn.fit(2, 0.05, cbs=CSVLogger())
    rows = list(csv.reader(open(tmp_path/'history.csv')))
    assert rows[0] == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'time']
    assert [int(r[0]) for r in rows[1:]] == [0, 1]
    assert [float(r[2]) for r in rows[1:]] == pytest.approx([v[1] for v in learn.recorder.values])
    assert [float(r[3]) for r in rows[1:]] == pytest.approx([v[2] for v in learn.recorder.values])
    logger = CSVLogger(append=True)
    learn.fit(1, 0.05, cbs=logger)
    df = logger.read_log()
    assert len(df) == 3 and list(df.columns)[:3] == ['epoch', 'train_loss', 'valid_loss']
    learn.fit(1, 0.05, cbs=CSVLogger())  # not appending: starts over
    assert len(list(csv.reader(open(tmp_path/'history.csv')))) == 2


def test_show_graph_draws_train_and_valid_losses():
    learn = make_learner()
    graph = ShowGraphCallback()
    learn.fit(2, 0.05, cbs=graph)
    ax = graph.fig.axes[0]
    train, valid = ax.lines
    assert list(train.get_ydata()) == pytest.approx([float(v) for v in learn.recorder.losses])
    assert list(valid.get_ydata()) == pytest.approx([v[1] for v in learn.recorder.values])
    assert ax.get_xlim()[1] == 2 * len(learn.dls.train)
    matplotlib.pyplot.close(graph.fig)
    graph2 = ShowGraphCallback()
    learn.add_cb(graph2)
    learn.lr_find(num_it=5, show_plot=False)
    assert graph2.fig is None  # quiet during lr_find


def test_plot_function_draws_f():
    fig = plot_function(lambda x: x ** 2, 'x', 'x**2', title='square', min=-3, max=3)
    ax = fig.axes[0]
    x, y = ax.lines[0].get_xdata(), ax.lines[0].get_ydata()
    assert len(x) == 100 and x[0] == -3 and x[-1] == 3 and y == pytest.approx(x ** 2)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ('x', 'x**2', 'square')
    matplotlib.pyplot.close(fig)
