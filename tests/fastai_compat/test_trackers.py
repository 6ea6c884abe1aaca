"Trackers as fastai documents them: new_best, SaveModelCallback(at_end=True), ReduceLROnPlateau."
import numpy as np
import torch

from minifast.test_utils import synth_dls, synth_mlp
from minifast.vision.all import Callback, Learner, ReduceLROnPlateau, SaveModelCallback, TrackerCallback


def _learner(**kwargs): return Learner(synth_dls(), synth_mlp(seed=0), **kwargs)


def test_tracker_new_best_is_true_on_an_improving_epoch():
    seen = []
    class Watch(Callback):
        order = TrackerCallback.order + 1
        def after_epoch(self): seen.append(self.learn.tracker.new_best)
    learn = _learner(cbs=[TrackerCallback(monitor='train_loss', comp=np.greater), Watch()])
    with learn.no_bar(): learn.fit(3, 1e-2)
    assert seen == [True, False, False]  # the training loss falls: never greater after the first epoch


def test_save_model_at_end_saves_the_final_weights_once(tmp_path, capsys):
    learn = _learner(path=tmp_path, cbs=SaveModelCallback(at_end=True, fname='final'))
    with learn.no_bar(): learn.fit(2, 1e-2)
    assert 'Better model found' not in capsys.readouterr().out
    saved = torch.load(tmp_path/'models'/'final.pth', weights_only=True)['model']
    assert all(torch.equal(saved[k], v) for k, v in learn.model.state_dict().items())


def test_save_model_without_at_end_loads_the_best(tmp_path):
    cb = SaveModelCallback(monitor='train_loss', comp=np.greater)  # the first epoch stays the best
    learn = _learner(path=tmp_path, cbs=cb)
    with learn.no_bar(): learn.fit(2, 1e-2)
    assert cb.best_epoch == 0


def test_reduce_lr_on_plateau_divides_by_factor_after_patience():
    learn = _learner(cbs=ReduceLROnPlateau(monitor='train_loss', comp=np.greater, patience=2, factor=4., min_lr=2e-3))
    with learn.no_bar(): learn.fit(6, 2e-2)
    # no new best after epoch 0: reduced after epochs 2 and 4 (wait resets), floored at min_lr
    assert learn.opt.hypers[-1]['lr'] == 2e-3
    learn = _learner(cbs=ReduceLROnPlateau(monitor='train_loss', comp=np.greater, patience=2, factor=4.))
    with learn.no_bar(): learn.fit(3, 2e-2)
    assert abs(learn.opt.hypers[-1]['lr'] - 5e-3) < 1e-12


def test_reduce_lr_on_plateau_keeps_the_lr_while_improving():
    learn = _learner(cbs=ReduceLROnPlateau(monitor='train_loss', patience=1))
    with learn.no_bar(): learn.fit(3, 1e-2)
    assert learn.opt.hypers[-1]['lr'] == 1e-2
