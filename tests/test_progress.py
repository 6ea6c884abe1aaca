"ProgressCallback in a (simulated) notebook: one output updated in place, throttled, no stray text; a terminal's text."
import re

import pytest

from conftest import make_synth_dls
from minifast.callback.core import Callback
from minifast.learner import Learner
from minifast.metrics import accuracy
from minifast.test_utils import synth_mlp


class _Front:
    """Stands for Jupyter: records what `display` and the handles' `update` send, in order, and what each output
    shows in the end (`outputs`: one per `display`, in order; an update changes its own output, wherever it is)."""
    def __init__(self): self.sent, self.outputs = [], []

    def display(self, obj, display_id=None, **kwargs):
        assert display_id is True, "the progress output must be created with a display id, to update it in place"
        self.sent.append(('display', obj.data))
        self.outputs.append(obj.data)
        return _Handle(self, len(self.outputs) - 1)


class _Handle:
    def __init__(self, front, index): self.front, self.index = front, index

    def update(self, obj, raw=False):
        data = obj['text/plain'] if raw else obj.data
        self.front.sent.append(('update', data))
        self.front.outputs[self.index] = data


@pytest.fixture
def front(monkeypatch):
    import IPython.display
    import minifast.callback.progress as progress
    f = _Front()
    monkeypatch.setattr(progress, 'in_notebook', lambda: True)
    monkeypatch.setattr(IPython.display, 'display', f.display)
    return f


def _learner(n=256, bs=32, refresh_s=0.3, **kwargs):
    learn = Learner(make_synth_dls(n=n, bs=bs), synth_mlp(seed=0), metrics=accuracy, **kwargs)
    learn.progress.refresh_s = refresh_s
    return learn


def test_a_notebook_fit_makes_one_output_then_only_updates_it(front, capsys):
    learn = _learner()
    learn.fit(3, 1e-2)
    kinds = [k for k, _ in front.sent]
    assert kinds[0] == 'display' and kinds.count('display') == 1 and kinds.count('update') >= 3, kinds
    last = front.sent[-1][1]
    assert '<progress value="3" max="3"' in last and '3/3 epochs' in last
    # the final table: a header and one row per epoch, with the Recorder's values
    assert last.count('<tr>') == 4 and '<th>valid_loss</th>' in last and '<th>accuracy</th>' in last
    acc = learn.recorder.values[-1][2]
    assert f'<td>{acc:.6f}</td>' in last
    assert last.index('<progress') < last.index('<table')  # the bar above the table, in the same output
    out = capsys.readouterr()
    assert out.out == '' and out.err == '', "no text output (tqdm's stderr bar shows red in Jupyter)"


def test_the_bar_is_refreshed_at_most_every_refresh_s_not_every_batch(front):
    n_batches = 2 * (192 // 8 + 64 // 8)  # 2 epochs of 24 training and 8 validation batches
    slow = _learner(bs=8, refresh_s=3600)
    slow.fit(2, 1e-2)
    # per epoch: the forced update at its end; once a fit: the first display and the final update
    assert len(front.sent) == 2 + 2, [k for k, _ in front.sent]
    front.sent.clear()
    eager = _learner(bs=8, refresh_s=0)  # the same fit, refreshed at every chance: an update per batch
    eager.fit(2, 1e-2)
    assert len(front.sent) >= n_batches


def test_the_live_bar_shows_batches_time_and_the_smoothed_loss(front):
    seen = []

    class Peek(Callback):
        order = 80  # after ProgressCallback has rendered the batch
        def after_batch(self):
            if self.learn.training and self.learn.iter == 3: seen.append(front.sent[-1][1])

    learn = _learner(refresh_s=0)
    learn.fit(1, 1e-2, cbs=Peek())
    loss = float(learn.recorder.losses[3])
    bar = seen[0]
    assert '<progress value="4" max="6"' in bar, bar
    assert re.search(r'epoch 1/1 train 4/6 \[\d\d:\d\d&lt;\d\d:\d\d, loss ', bar), bar
    assert f'loss {loss:.4f}' in bar


def test_no_logging_keeps_the_bar_and_hides_the_table(front):
    learn = _learner()
    with learn.no_logging(): learn.fit(2, 1e-2)
    last = front.sent[-1][1]
    assert '<progress' in last and '<table' not in last
    assert learn.progress.show_table  # restored after the block


def test_no_bar_prints_the_epoch_rows_as_text_even_in_a_notebook(front, capsys):
    learn = _learner()
    with learn.no_bar(): learn.fit(2, 1e-2)
    assert front.sent == []  # no HTML output at all
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'time'] and len(lines) == 3, lines
    assert lines[2].split()[:4] == ['1'] + [f'{v:.6f}' for v in learn.recorder.values[-1]]
    assert learn.progress.show_bar  # restored after the block
    learn.fit(1, 1e-2)
    assert front.sent and '<progress' in front.sent[-1][1]


def test_no_bar_and_no_logging_together_show_nothing(front, capsys):
    learn = _learner()
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
    assert front.sent == [] and capsys.readouterr().out == ''


def test_each_fit_keeps_its_own_output_and_a_later_validate_never_touches_it(front):
    learn = _learner()
    learn.fit(1, 1e-2)  # as fine_tune does: the frozen fit, then the unfrozen one, then the user validates
    learn.fit(2, 1e-2)
    learn.validate()
    learn.validate()
    assert len(front.outputs) == 4, front.outputs  # two fits, two validates: an output each
    first, second, *validates = front.outputs
    assert '1/1 epochs' in first and first.count('<tr>') == 2  # header and epoch 0
    assert '2/2 epochs' in second and second.count('<tr>') == 3  # header, epochs 0 and 1
    assert f'<td>{learn.recorder.values[-1][0]:.6f}</td>' in second
    assert validates == ['', '']  # each validate cleared its own bar, and only its own


def test_validate_outside_a_fit_leaves_no_bar_behind(front):
    learn = _learner()
    learn.validate()
    assert front.sent[0][0] == 'display' and front.sent[-1] == ('update', '')


def test_a_failed_fit_says_so_under_the_table(front):
    class Boom(Callback):
        def before_epoch(self):
            if self.learn.epoch == 1: raise ValueError('user bug')

    learn = _learner()
    with pytest.raises(ValueError, match='user bug'): learn.fit(3, 1e-2, cbs=Boom())
    last = front.sent[-1][1]
    assert 'stopped by ValueError' in last and last.count('<tr>') == 2  # header and epoch 0's row


def test_in_a_terminal_the_table_is_text(capsys):
    learn = _learner()
    learn.fit(2, 1e-2)
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split() == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'time'] and len(lines) == 3, out
    assert '<' not in out


def test_the_learner_html_counts_parameters_and_frozen_groups():
    from torch import nn
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    learn = Learner(make_synth_dls(), model, splitter=lambda m: [list(m[0].parameters()), list(m[2].parameters())])
    learn.freeze()
    html = learn._repr_html_()
    total, head = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model[2].parameters())
    assert f'{total:,} ({head:,} trainable)' in html and '2, frozen up to group 1' in html, html
    learn.to_bf16()
    assert 'bf16' in learn._repr_html_()


def test_rich_displays_never_raise():
    learn = _learner()
    learn.model = None  # broken on purpose: the HTML view fails, Jupyter falls back to the text repr
    assert learn._repr_html_() is None
    learn.dls.loaders = []
    assert learn.dls._repr_html_() is None
