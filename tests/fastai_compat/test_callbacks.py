"Callbacks written as in fastai and fastbook ch16: the learner's attributes read through `self`, fastai's names."
import pickle
import warnings

import pytest
import torch

from minifast.test_utils import synth_dls, synth_mlp
from minifast.vision.all import Callback, CrossEntropyLossFlat, CSVLogger, Learner


def _learner(**kwargs):
    return Learner(synth_dls(), synth_mlp(seed=0), loss_func=CrossEntropyLossFlat(), **kwargs)


def test_a_callback_reads_the_learners_attributes_through_self():
    seen = {}
    class Peek(Callback):  # fastbook ch16 style: no `self.learn.`
        def after_loss(self):
            if self.training and not seen:
                seen.update(model=self.model, pred=self.pred, loss=self.loss, xb=self.xb, yb=self.yb,
                            epoch=self.epoch, opt=self.opt, dls=self.dls)
    learn = _learner(cbs=Peek())
    with learn.no_bar(): learn.fit(1)
    assert seen['model'] is learn.model and seen['opt'] is learn.opt and seen['dls'] is learn.dls
    assert seen['epoch'] == 0 and seen['pred'].shape == (32, 2) and seen['loss'].ndim == 0
    assert seen['xb'][0].shape == (32, 2) and seen['yb'][0].shape == (32,)


def test_setting_a_learner_name_on_a_callback_warns_and_stays_on_the_callback():
    class Shadow(Callback):
        def before_fit(self): self.model = 'mine'
    learn = _learner(cbs=Shadow())
    with learn.no_bar(), pytest.warns(UserWarning, match=r"self\.learn\.model = "): learn.fit(1)
    assert learn.shadow.model == 'mine' and isinstance(learn.model, torch.nn.Module)


def test_a_callbacks_own_new_attribute_does_not_warn():
    class Counter(Callback):
        def before_fit(self): self.count = 0
        def after_batch(self): self.count += 1
    learn = _learner(cbs=Counter())
    with learn.no_bar(), warnings.catch_warnings():
        warnings.simplefilter('error')
        learn.fit(1)
    assert learn.counter.count == len(learn.dls.train) + len(learn.dls.valid)


def test_private_names_and_missing_names_are_attribute_errors_without_recursion():
    cb = Callback()
    with pytest.raises(AttributeError, match='model'): cb.model  # no learner yet
    learn = _learner(cbs=cb)
    with pytest.raises(AttributeError, match='_private'): cb._private
    with pytest.raises(AttributeError, match='nothing_here'): cb.nothing_here
    assert cb.model is learn.model
    assert pickle.loads(pickle.dumps(Callback())).learn is None


def test_callback_names_follow_fastais_rule():
    class ActivationStats(Callback): pass
    learn = _learner(cbs=[CSVLogger(), ActivationStats()])
    assert isinstance(learn.csv_logger, CSVLogger) and isinstance(learn.activation_stats, ActivationStats)
    assert learn.train_eval.name == 'train_eval' and learn.recorder.name == 'recorder'
