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


def test_gradient_clip_bounds_the_gradient_norm_before_the_step():
    from minifast.vision.all import GradientClip
    norms = []
    class Norm(Callback):
        order = 15  # after GradientClip (0), before the step
        def before_step(self):
            grads = [p.grad.flatten() for p in self.model.parameters()]
            norms.append(float(torch.linalg.vector_norm(torch.cat(grads), ord=1.)))
    learn = _learner(cbs=[GradientClip(max_norm=0.05, norm_type=1.), Norm()])
    with learn.no_bar(): learn.fit(1, 1e-2)
    assert norms and max(norms) <= 0.05 + 1e-6
    learn = _learner(cbs=[Norm()])
    norms.clear()
    with learn.no_bar(): learn.fit(1, 1e-2)
    assert max(norms) > 0.05, "without the callback the gradients are larger: the test can fail"


def test_fit_sgdr_runs_cosine_cycles_of_growing_length():
    import math
    learn = _learner()
    with learn.no_bar(): learn.fit_sgdr(3, 1, lr_max=1e-2, cycle_mult=2)
    n = len(learn.dls.train)
    assert len(learn.recorder.values) == 1 * (2 ** 3 - 1) // (2 - 1)  # 7 epochs
    lrs = learn.recorder.lrs
    for start, length in [(0, 1), (1, 2), (3, 4)]:  # each cycle: cosine from lr_max to 0
        cycle = lrs[start * n:(start + length) * n]
        assert math.isclose(cycle[0], 1e-2, rel_tol=1e-6) and cycle[-1] < 1e-3
        assert all(a >= b for a, b in zip(cycle, cycle[1:]))
        mid = cycle[len(cycle) // 2]
        assert math.isclose(mid, 5e-3, rel_tol=0.1)
