"The Recorder as fastai documents it: hps, train_metrics, add_time, lr_find's rows, losses as tensors."
import torch

from minifast.test_utils import synth_dls, synth_mlp
from minifast.vision.all import CrossEntropyLossFlat, Learner, Recorder, accuracy


def _learner(**kwargs):
    return Learner(synth_dls(), synth_mlp(seed=0), loss_func=CrossEntropyLossFlat(), **kwargs)


def test_hps_holds_each_hyper_parameter_per_training_batch():
    learn = _learner()
    with learn.no_bar(): learn.fit_one_cycle(2, 1e-2)
    hps, n = learn.recorder.hps, 2 * len(learn.dls.train)
    assert len(hps['lr']) == n and len(hps['mom']) == n
    assert max(hps['lr']) > 5 * hps['lr'][0] and hps['mom'][0] > min(hps['mom'])  # the one-cycle schedules
    assert hps['lr'] == learn.recorder.lrs


def test_train_metrics_adds_train_columns_and_add_time_false_drops_time():
    learn = Learner(synth_dls(), synth_mlp(seed=0), loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                    default_cbs=True)
    learn.remove_cb(Recorder).add_cb(Recorder(train_metrics=True, add_time=False))
    with learn.no_bar(): learn.fit(2, 1e-2)
    rec = learn.recorder
    assert rec.metric_names == ['epoch', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy']
    assert len(rec.values) == 2 and all(len(v) == 4 for v in rec.values) and len(rec.log) == 5
    train_acc = rec.values[-1][1]
    assert 0.5 < train_acc <= 1 and train_acc != rec.values[-1][3]
    assert rec.values[-1][3] == learn.validate()[1]


def test_lr_find_rows_hold_the_training_loss_only():
    learn = _learner()
    with learn.no_bar(): learn.lr_find(num_it=20, show_plot=False)
    assert learn.recorder.metric_names == ['epoch', 'train_loss', 'time']
    assert all(len(v) == 1 for v in learn.recorder.values)


def test_losses_are_tensors_torch_accepts():
    learn = _learner()
    with learn.no_bar(): learn.fit(1)
    losses = learn.recorder.losses
    assert len(losses) == len(learn.dls.train) and all(isinstance(v, torch.Tensor) for v in losses)
    assert not torch.isinf(torch.stack(losses)).any()
    assert not any(torch.isinf(v) for v in losses)
