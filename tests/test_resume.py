"""Runs that survive being killed: a checkpoint carries everything a resume needs, `fit(start_epoch=...)` continues
exactly, a real SIGKILL after epoch 1 then a resume ends with the uninterrupted run's weights, and a checkpoint cut
short is never loaded."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from minifast.callback.resume import last_checkpoint
from minifast.callback.tracker import SaveModelCallback
from minifast.data.transforms import Transform
from minifast.learner import Learner
from minifast.test_utils import synth_dls

# The run of the tests below, as a script: its `learner()` is built the same way in every process.
RUN = '''
import sys, time
import numpy as np
import torch
from torch import nn
from minifast.callback.core import Callback
from minifast.callback.resume import last_checkpoint
from minifast.callback.tracker import SaveModelCallback
from minifast.learner import Learner
from minifast.test_utils import synth_dls
torch.set_num_threads(1)  # the same threads in every run: the same float reductions

def learner(path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.3), nn.BatchNorm1d(16), nn.Linear(16, 2))
    learn = Learner(synth_dls(n=128, bs=16, seed=3), model, path=path)
    learn.remove_cb(learn.progress)
    return learn

class Hang(Callback):
    "Stands for the rest of a long run: it waits in epoch 2 until the test kills the process."
    def before_batch(self):
        while self.learn.epoch == 2: time.sleep(0.05)

def run(path, extra=()):
    learn = learner(path)
    learn.fit_one_cycle(3, 1e-2, cbs=[SaveModelCallback(every_epoch=True, with_opt=True, fname='ck'), *extra])
    return learn
'''


def _python(tmp_path, body):
    script = tmp_path/'run.py'
    script.write_text(RUN + textwrap.dedent(body))
    return [sys.executable, str(script)]


def _learner(path):
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.3), nn.BatchNorm1d(16), nn.Linear(16, 2))
    learn = Learner(synth_dls(n=128, bs=16, seed=3), model, path=path)
    learn.remove_cb(learn.progress)
    return learn


def _max_diff(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_a_sigkilled_run_resumed_from_its_last_checkpoint_ends_with_the_uninterrupted_weights(tmp_path):
    killed = tmp_path/'killed'
    proc = subprocess.Popen(_python(tmp_path, f"run({str(killed)!r}, extra=[Hang()])"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        checkpoint, deadline = killed/'models'/'ck_1.pth', time.monotonic() + 300  # a generous bound, not a timing
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline: time.sleep(0.05)
        assert checkpoint.exists(), f"no checkpoint after epoch 1; the run said: {proc.communicate()[1][-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None: proc.kill(); proc.wait()
    assert proc.returncode == -signal.SIGKILL
    models = killed/'models'
    assert sorted(p.name for p in models.glob('*.pth')) == ['ck_0.pth', 'ck_1.pth']
    # what a kill during a save leaves, and a checkpoint cut short by a careless writer: neither is loaded
    (models/'ck_2.pth').write_bytes((models/'ck_1.pth').read_bytes()[:2000])
    (models/'.ck_3.pth.abc123.tmp').write_bytes(b'PK\x03\x04')
    resumed = subprocess.run(_python(tmp_path, f'''
        found = last_checkpoint({str(models)!r}, 'ck')
        print('found', found[1])
        learn = learner({str(killed)!r})
        torch.manual_seed(123); np.random.seed(7)  # a resume starts in a new process, whatever its random states
        learn.load(found[2], with_opt=True)
        learn.fit_one_cycle(3, 1e-2, start_epoch=found[1] + 1)
        torch.save(learn.model.state_dict(), {str(tmp_path/'resumed.pth')!r})
        print('rows', learn.recorder.values)
        full = run({str(tmp_path/'full')!r})
        torch.save(full.model.state_dict(), {str(tmp_path/'full.pth')!r})
        print('rows', full.recorder.values)
    '''), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = resumed.stdout.splitlines()
    assert any('.ck_3.pth.abc123.tmp' in line and 'unfinished save' in line for line in out), out
    assert any('ck_2.pth: it is cut short or damaged' in line for line in out), out
    assert 'Resuming from ck_1.pth, the last good checkpoint, instead of ck_2.pth.' in out
    assert 'found 1' in out
    rows = [line for line in out if line.startswith('rows')]
    assert len(rows) == 2 and rows[0] == rows[1]  # the resumed recorder has all three epochs' rows, as the full run
    a = torch.load(tmp_path/'resumed.pth', weights_only=True)
    b = torch.load(tmp_path/'full.pth', weights_only=True)
    assert _max_diff(a, b) <= 1e-5


@pytest.fixture
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize('how', ['fit_one_cycle', 'fit_flat_cos', 'fit'])
def test_a_resumed_fit_continues_exactly_and_without_the_resume_state_it_does_not(tmp_path, how, single_thread):
    kwargs = {'fit_one_cycle': dict(lr_max=1e-2), 'fit_flat_cos': dict(lr=1e-2), 'fit': dict(lr=1e-2)}[how]
    def make():
        torch.manual_seed(0)
        return _learner(tmp_path)
    full = make()
    getattr(full, how)(3, cbs=SaveModelCallback(every_epoch=True, with_opt=True, fname='ck'), **kwargs)
    resumed = make().load('ck_1', with_opt=True)
    torch.manual_seed(99)
    getattr(resumed, how)(3, start_epoch=2, **kwargs)
    assert _max_diff(full.model.state_dict(), resumed.model.state_dict()) == 0
    assert resumed.recorder.values == full.recorder.values and resumed.recorder.iters == full.recorder.iters
    np.testing.assert_array_equal(resumed.recorder.lrs, full.recorder.lrs)  # the schedule was where it had been
    # the control: the same weights and optimiser state, without the random states, end elsewhere
    control = make().load('ck_1', with_opt=True)
    control._resume = None
    getattr(control, how)(3, start_epoch=2, **kwargs)
    assert _max_diff(full.model.state_dict(), control.model.state_dict()) > 1e-4


def test_start_epoch_places_the_schedule_as_if_the_first_epochs_had_run(tmp_path):
    full, skipped = _learner(tmp_path), _learner(tmp_path)
    full.fit_one_cycle(4, 1e-2)
    skipped.fit_one_cycle(4, 1e-2, start_epoch=3)  # no checkpoint loaded: only the schedule skips, as in fastai
    n = len(full.dls.train)
    np.testing.assert_allclose(skipped.recorder.lrs, full.recorder.lrs[3 * n:])
    assert skipped.train_iter == full.train_iter == 4 * n


def test_start_epoch_out_of_range_and_a_checkpoint_from_another_epoch(tmp_path):
    learn = _learner(tmp_path)
    with pytest.raises(ValueError, match='start_epoch=4 must be from 0 to n_epoch=3'): learn.fit(3, start_epoch=4)
    learn.fit(2, cbs=SaveModelCallback(every_epoch=True, with_opt=True, fname='ck'))
    learn.load('ck_0', with_opt=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        learn.fit(3, start_epoch=2)
    msgs = [str(w.message) for w in caught]
    assert any('saved after epoch 0, so it continues at start_epoch=1' in m for m in msgs), msgs


def test_a_checkpoint_is_written_atomically_and_one_cut_short_is_refused_with_its_name(tmp_path):
    learn = _learner(tmp_path)
    learn.fit(2, cbs=SaveModelCallback(every_epoch=True, with_opt=True, fname='ck'))
    models = tmp_path/'models'
    assert not list(models.glob('.*.tmp'))  # the temporary files were renamed into place
    state = torch.load(models/'ck_1.pth', weights_only=True)  # weights only: no code runs on loading
    assert set(state) == {'model', 'opt', 'resume'} and state['resume']['epoch'] == 1
    assert set(state['resume']['rng']) == {'torch', 'cuda', 'numpy', 'python', 'loaders'}
    assert len(state['resume']['rng']['loaders']) == 2 and 'recorder' in state['resume']['callbacks']
    (models/'ck_1.pth').write_bytes((models/'ck_0.pth').read_bytes()[:3000])
    with pytest.raises(ValueError, match=r'ck_1\.pth.*truncated, corrupt'): learn.load('ck_1', with_opt=True)
    said = []
    assert last_checkpoint(models, 'ck', print_fn=said.append)[:2] == ('ck', 0)
    assert said[-1] == 'Resuming from ck_0.pth, the last good checkpoint, instead of ck_1.pth.'
    learn.save('weights_only_ck_5', with_opt=False)
    assert last_checkpoint(models, 'weights_only_ck', print_fn=said.append) is None
    assert 'no resume state (saved with with_opt=False)' in said[-1]


class _Jitter(Transform):
    "Training-time noise drawn from the item generator, so that the workers' draws matter to the weights."
    def __call__(self, x, split_idx=None, generator=None):
        return x + 0.3 * torch.randn(x.shape, generator=generator) if split_idx == 0 else x


@pytest.mark.parametrize('persistent', [False, True])
def test_with_worker_processes_persistent_or_not_a_resume_is_exact(tmp_path, single_thread, persistent):
    def make():
        torch.manual_seed(0)
        learn = _learner(tmp_path)
        learn.dls = type(learn.dls)(*[dl.new(num_workers=1, persistent_workers=persistent,
                                             after_item=[[_Jitter()], []]) for dl in learn.dls.loaders])
        return learn
    full = make()
    full.fit(3, 1e-2, cbs=SaveModelCallback(every_epoch=True, with_opt=True, fname='ck'))
    resumed = make().load('ck_1', with_opt=True)
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # nothing to warn about
        resumed.fit(3, 1e-2, start_epoch=2)
    assert _max_diff(full.model.state_dict(), resumed.model.state_dict()) == 0
    control = make()   # the noise matters: without it the run ends elsewhere
    control.dls = type(control.dls)(*[dl.new(after_item=None) for dl in control.dls.loaders])
    control.fit(3, 1e-2)
    assert _max_diff(full.model.state_dict(), control.model.state_dict()) > 1e-4


def test_a_learner_never_fitted_saves_and_loads_with_its_optimiser(tmp_path):
    learn = _learner(tmp_path)
    learn.create_opt()
    learn.save('fresh')  # the Recorder has no rows yet: its state is empty, not missing
    state = torch.load(tmp_path/'models'/'fresh.pth', weights_only=True)
    assert state['resume']['callbacks']['recorder']['values'] == []
    learn.load('fresh', with_opt=True)
