"""`learn.distrib_ctx()` under `torchrun --nproc_per_node 2` on the CPU (gloo): each run's ranks write what they saw
(tests/ddp_worker.py), the tests compare the ranks with each other and with one process over the whole data."""
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import minifast.distributed as distributed
from minifast.learner import Learner
from minifast.test_utils import synth_dls, synth_mlp

WORKER = Path(__file__).parent/'ddp_worker.py'


def state_hash(model):
    h = hashlib.sha256()
    for k, v in model.state_dict().items(): h.update(k.encode()); h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def torchrun(mode, out, *extra, timeout=120):
    "Run the worker's `mode` on 2 processes; the completed process (its output in `.stdout`)."
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}
    env.update(OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', MINIFAST_HOME=str(Path(out)/'home'))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(free_port()), str(WORKER), mode, str(out), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def ranks(mode, out, *extra, timeout=120):
    proc = torchrun(mode, out, *extra, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((out/f'rank{r}.json').read_text()) for r in range(2)], proc


@pytest.fixture(scope='module')
def synth_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp_synth')
    return (*ranks('synth', out), out)


@pytest.fixture(scope='module')
def vision_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp_vision')
    from minifast.vision.all import toy_pets
    toy_pets(out/'pets', n_per_breed=2)   # drawn once here, not by both ranks at the same time
    return (*ranks('vision', out), out)


def test_two_ranks_train_as_one_process_would(synth_run):
    "One test per torchrun run: pytest-xdist would start a module fixture once per worker."
    (r0, r1), proc, out = synth_run
    assert (r0['world'], r1['world']) == ([0, 2], [1, 2])
    # each rank reads its own shard; together they cover the training set
    n_train = 264 - 61   # odd: the sampler pads one rank's shard with one repeated item, as DDP needs equal shards
    assert len(r0['shard']) == len(r1['shard']) == math.ceil(n_train / 2)
    assert set(r0['shard']) | set(r1['shard']) == set(range(n_train))
    assert len(set(r0['shard']) & set(r1['shard'])) == 1
    assert r0['n_batches'] == r1['n_batches'] == math.ceil(n_train / 2) // 16   # drop_last, per rank
    # every rank ends with the same weights (DDP started from rank 0's, though each rank built its own)
    assert r0['hash'] == r1['hash']
    # the metrics equal one process validating the whole set with the same weights
    for r in (r0, r1):
        assert r['validate'] == pytest.approx(r['ref_validate'], rel=1e-6)
        assert r['values'][r['best_epoch']][1:] == pytest.approx(r['ref_validate'], rel=1e-6)  # its weights are back
        assert r['preds_close']   # get_preds gathers the ranks' predictions in dataset order
    assert r0['values'] == r1['values']   # the same table on both: early stopping and the trackers agree
    better = [line for line in proc.stdout.splitlines() if line.startswith('Better model found')]
    assert better and len(better) == len(set(better))   # the trackers' messages: rank 0's only
    # a step with an infinite loss on rank 1 only is skipped on both (else the weights would differ)
    assert r0['skipped'] == r1['skipped'] == [1]
    # rank 0 alone prints the table and writes the log and the files
    assert (r0['saved'], r1['saved']) == (True, False)
    assert sum(line.startswith('epoch ') for line in proc.stdout.splitlines()) == 3   # a header per fit, not per rank
    rows = (out/'history.csv').read_text().splitlines()
    assert len(rows) == 1 + 3 and rows[0].startswith('epoch,train_loss,valid_loss,accuracy')   # the last fit's


def test_fine_tune_and_lr_find_run_in_step_with_one_export(vision_run):
    (r0, r1), _, out = vision_run
    assert r0['hash'] == r1['hash']
    assert r0['lr'] == r1['lr'] and r0['lr'] > 0   # both ranks searched in lockstep on the same mean losses
    assert r0['values'] == r1['values']
    assert r0['values'][1:] == pytest.approx(r0['ref_validate'], rel=1e-5)
    assert (r0['export'], r1['export']) == (True, False)
    assert sorted(p.name for p in out.glob('*.pkl')) == ['export.pkl']
    from minifast.vision.all import load_learner
    assert state_hash(load_learner(out/'export.pkl').model) == r0['hash']


def test_minifast_train_under_torchrun_writes_one_export_predict_reads_it_and_resume_is_exact(tmp_path, capsys):
    from minifast.cli import main
    from minifast.data.toy_pets import draw_toy_pet
    from minifast.vision.all import load_learner
    (tmp_path/'images').mkdir()
    for breed in ('Abyssinian', 'beagle', 'pug'):
        for n in range(1, 11): draw_toy_pet(breed, n).save(tmp_path/'images'/f'{breed}_{n}.jpg')
    (r0, r1), proc = ranks('cli', tmp_path, timeout=600)
    assert r0['code'] == r1['code'] == 0 and r0['hash'] == r1['hash']   # one model on both ranks
    run, ck = tmp_path/'run', tmp_path/'run'/'checkpoints'
    assert sorted(p.name for p in run.iterdir()) == ['checkpoints', 'confusion_matrix.png', 'loss.png', 'model.pkl',
                                                      'results.json']
    assert sorted(p.name for p in ck.iterdir()) == ['frozen_0.pth', 'unfrozen_0.pth', 'unfrozen_1.pth']
    out = proc.stdout.splitlines()
    assert sum(line.startswith('epoch ') for line in out) == 2   # a table per phase, rank 0's
    assert sum(line.startswith('Done: ') for line in out) == 1 and sum('saved' in line for line in out) == 2
    assert sum(' training and 6 validation images' in line for line in out) == 1
    results = json.loads((run/'results.json').read_text())
    assert [(r['phase'], r['epoch']) for r in results['history']] == [('frozen', 0), ('unfrozen', 0), ('unfrozen', 1)]
    assert state_hash(load_learner(run/'model.pkl').model) == r0['hash']   # the export holds the trained weights
    image = tmp_path/'images'/'pug_3.jpg'
    capsys.readouterr()
    assert main(['predict', str(run/'model.pkl'), str(image)]) == 0
    fname, label, prob = capsys.readouterr().out.strip().splitlines()[-1].split('\t')
    assert fname == str(image) and label in results['vocab'] and 0 < float(prob) <= 1

    # killed in the unfrozen phase: --resume under torchrun ends with the same weights
    full = torch.load(ck/'unfrozen_1.pth', weights_only=True)['model']
    (ck/'unfrozen_1.pth').unlink()
    (q0, q1), proc = ranks('cli', tmp_path, '--resume', timeout=600)
    assert q0['code'] == q1['code'] == 0 and q0['hash'] == q1['hash'] == r0['hash']
    said = [line for line in proc.stdout.splitlines() if line.startswith('--resume: ')]
    assert said == [f"--resume: continuing from {ck/'unfrozen_0.pth'} (unfrozen phase, after epoch 0)."]
    resumed = torch.load(ck/'unfrozen_1.pth', weights_only=True)['model']
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert json.loads((run/'results.json').read_text())['history'] == results['history']


def test_a_rank_that_raises_stops_the_others_instead_of_hanging(tmp_path):
    proc = torchrun('fail', tmp_path, timeout=90)   # a hang would raise TimeoutExpired
    assert proc.returncode != 0
    assert 'rank 1 stops here on purpose' in proc.stdout + proc.stderr


def test_outside_torchrun_it_trains_in_one_process_and_says_so_once(monkeypatch):
    for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'): monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(distributed, '_warned_no_torchrun', False)
    learn = Learner(synth_dls(n=64, n_valid=16), synth_mlp(seed=0), lr=1e-2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with learn.distrib_ctx() as same: learn.fit(1)
        with learn.distrib_ctx(): pass
    assert same is learn and len(learn.recorder.values) == 1 and learn.dls.train.shard is None
    assert sum('not started by torchrun' in str(w.message) for w in caught) == 1


def test_a_shard_that_is_not_rank_and_world_size_is_refused():
    with pytest.raises(ValueError, match=r"shard=\(2, 2\) must be \(rank, world_size\)"):
        synth_dls().train.new(shard=(2, 2))


def test_gathered_rows_come_back_in_dataset_order():
    chunks = [torch.tensor([0, 3, 6]), torch.tensor([1, 4, 7]), torch.tensor([2, 5, 8])]   # ranks 0, 1, 2
    assert distributed._interleave(chunks, 8).tolist() == list(range(8))   # the 9th row was padding


def test_on_ranks_other_than_0_the_rank0_only_callbacks_do_not_run(tmp_path, capsys):
    from minifast.callback.misc import CSVLogger
    learn = Learner(synth_dls(n=64, n_valid=16), synth_mlp(seed=0), lr=1e-2, path=tmp_path, cbs=CSVLogger())
    learn.main_process = False   # what distrib_ctx sets on rank 1, 2...
    learn.fit(1)
    assert 'valid_loss' not in capsys.readouterr().out and not (tmp_path/'history.csv').exists()
    assert len(learn.recorder.values) == 1   # the others run
    learn.main_process = True
    learn.fit(1)
    assert 'valid_loss' in capsys.readouterr().out and (tmp_path/'history.csv').exists()


def test_the_trackers_decide_on_every_rank_and_speak_on_rank_0_only(tmp_path, capsys):
    from minifast.callback.tracker import EarlyStoppingCallback, ReduceLROnPlateau, SaveModelCallback
    said = {}
    for main_process in (True, False):
        learn = Learner(synth_dls(n=64, n_valid=16), synth_mlp(seed=0), lr=1e-2, path=tmp_path)
        learn.remove_cb(learn.progress)
        learn.main_process = main_process   # False: what distrib_ctx sets on rank 1, 2...
        # min_delta so large that only the first epoch is a new best: a save, then a reduced lr, then a stop
        cbs = [SaveModelCallback(min_delta=1e6, fname=f'best{main_process}'), ReduceLROnPlateau(min_delta=1e6),
               EarlyStoppingCallback(min_delta=1e6, patience=2)]
        capsys.readouterr()
        learn.fit(5, cbs=cbs)
        said[main_process] = capsys.readouterr().out
        assert len(learn.recorder.values) == 3 and cbs[2].stopped_epoch == 2   # the same decisions on every rank
    assert 'Better model found at epoch 0' in said[True] and 'reducing lr' in said[True]
    assert 'stopping early after epoch 2' in said[True]
    assert said[False] == ''


def test_only_rank_0_writes_checkpoints_and_exports(tmp_path, monkeypatch):
    import minifast.learner
    learn = Learner(synth_dls(n=64, n_valid=16), synth_mlp(seed=0), path=tmp_path)
    monkeypatch.setattr(minifast.learner, 'rank_distrib', lambda: 1)
    assert learn.save('model') is None and learn.export() is None
    assert list(tmp_path.rglob('*.pth')) == [] and list(tmp_path.rglob('*.pkl')) == []
    monkeypatch.setattr(minifast.learner, 'rank_distrib', lambda: 0)
    assert learn.save('model').exists()
