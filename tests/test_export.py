"export / load_learner: data not code, the same predictions, refusals."
import os

import pytest
import torch

from minifast.learner import load_learner
from minifast.vision.augment import Resize
from minifast.vision.data import ImageDataLoaders
from minifast.vision.learner import vision_learner, resnet18
from minifast.learner import Learner


@pytest.fixture
def learn(colour_folder):
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=4, device='cpu')
    learn = vision_learner(dls, resnet18, pretrained=False)
    with learn.no_bar(): learn.fit(1)
    return learn


def test_round_trip_predicts_identically_with_weights_only(learn, colour_folder, tmp_path, monkeypatch):
    path = learn.export(tmp_path/'model.pkl')
    loads = []
    real_load = torch.load
    def spy(*args, **kwargs):
        loads.append(kwargs.get('weights_only'))
        return real_load(*args, **kwargs)
    monkeypatch.setattr(torch, 'load', spy)
    learn2 = load_learner(path)
    assert loads == [True]
    for fname in [colour_folder/'red'/'red_0.jpg', colour_folder/'blue'/'blue_5.jpg']:
        label, idx, probs = learn.predict(fname)
        label2, idx2, probs2 = learn2.predict(fname)
        assert label == label2
        assert int(idx) == int(idx2)
        torch.testing.assert_close(probs, probs2)
    preds, _ = learn.get_preds(dl=learn.dls.test_dl([colour_folder/'red'/'red_1.jpg']))
    preds2, _ = learn2.get_preds(dl=learn2.dls.test_dl([colour_folder/'red'/'red_1.jpg']))
    torch.testing.assert_close(preds, preds2)
    assert learn2.dls.vocab == learn.dls.vocab


def test_payload_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path/'pwned'

    class Payload:
        def __reduce__(self): return (os.system, (f'touch {marker}',))
    torch.save({'minifast_export': '{}', 'model': Payload()}, tmp_path/'evil.pkl')
    with pytest.raises(ValueError, match='refused'):
        load_learner(tmp_path/'evil.pkl')
    assert not marker.exists()


def test_not_an_export(tmp_path):
    (tmp_path/'x.pkl').write_text('hello')
    with pytest.raises(ValueError, match='not a minifast export'):
        load_learner(tmp_path/'x.pkl')
    torch.save({'model': {}}, tmp_path/'y.pkl')
    with pytest.raises(ValueError, match='not a minifast export'):
        load_learner(tmp_path/'y.pkl')


@pytest.mark.parametrize('failure', ['read_only', 'disk_full'])
def test_failed_export_keeps_previous_file(learn, tmp_path, monkeypatch, failure):
    "Tests run as root here, where chmod does not stop writes, so the two failures are simulated where they happen."
    import errno
    import tempfile
    out = tmp_path/'out'
    path = learn.export(out/'model.pkl')
    before = path.read_bytes()
    if failure == 'read_only':
        def no_temp(*a, **k): raise PermissionError(errno.EROFS, 'Read-only file system')
        monkeypatch.setattr(tempfile, 'mkstemp', no_temp)
    else:  # the temporary file's descriptor is pointed at /dev/full: every write() gets the kernel's ENOSPC
        if not os.path.exists('/dev/full'): pytest.skip('needs /dev/full')
        real_fdopen = os.fdopen
        def on_a_full_disk(fd, *a, **k):
            full = os.open('/dev/full', os.O_WRONLY)
            os.dup2(full, fd); os.close(full)
            return real_fdopen(fd, *a, **k)
        monkeypatch.setattr(os, 'fdopen', on_a_full_disk)
    with pytest.raises(OSError, match='model.pkl') as e:
        learn.export(out/'model.pkl')
    if failure == 'disk_full':  # torch's own writer, not a fake torch.save: its RuntimeError is reported as the OSError
        assert e.value.errno == errno.ENOSPC
        assert 'No space left on device' in str(e.value) and 'unchanged' in str(e.value)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ['model.pkl'], "no temporary file left behind"
    load_learner(path)  # still a valid export


def test_custom_model_needs_explicit_pickle(synth_dls, tmp_path):
    from conftest import make_mlp
    learn = Learner(synth_dls, make_mlp(), path=tmp_path)
    with pytest.raises(ValueError, match='pickle_model=True'):
        learn.export('m.pkl')


def test_pickled_model_needs_opt_in_both_ways(synth_dls, tmp_path):
    """A model the description cannot rebuild: export pickles it only when asked (with a warning), load_learner
    only with allow_pickle."""
    from conftest import make_mlp
    learn = Learner(synth_dls, make_mlp(), path=tmp_path)
    with learn.no_bar(): learn.fit(1)
    with pytest.warns(UserWarning, match='pickles the model'):
        path = learn.export('m.pkl', pickle_model=True)
    with pytest.raises(ValueError, match='allow_pickle=True') as e:
        load_learner(path)
    assert '\x1b[' not in str(e.value), "no terminal colour codes in the message"
    learn2 = load_learner(path, allow_pickle=True)
    x, y = synth_dls.valid.one_batch()
    torch.testing.assert_close(learn2.get_preds(dl=[(x, y)])[0], learn.get_preds(dl=[(x, y)])[0], rtol=0, atol=0)


def test_pretrained_lite0_with_augmentation_round_trip(colour_folder, tmp_path):
    "The demo's setup: presizing, aug_transforms and the Normalize vision_learner adds all travel in the description."
    from minifast.vision.augment import aug_transforms
    from minifast.vision.core import Normalize
    from minifast.vision.learner import efficientnet_lite0
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(40),
                                       batch_tfms=aug_transforms(size=32, min_scale=0.75), bs=4, device='cpu')
    learn = vision_learner(dls, efficientnet_lite0)
    with learn.no_bar(): learn.fit(1, 1e-3)
    learn2 = load_learner(learn.export(tmp_path/'model.pkl'))
    assert any(isinstance(t, Normalize) for t in learn2.dls.valid.after_batch[0])
    import json  # the description is plain JSON: architecture, head, vocabulary, transforms with their settings
    desc = json.loads(torch.load(tmp_path/'model.pkl', weights_only=True)['minifast_export'])
    assert desc['model']['arch'] == 'efficientnet_lite0' and desc['model']['ps'] == 0.5
    assert desc['vocab'] == ['blue', 'red']
    norm = [t for t in desc['batch_tfms'][0] if t['name'] == 'Normalize']
    assert len(norm) == 1 and json.dumps(norm[0]['config']).count('0.5') >= 6
    files = sorted(colour_folder.glob('*/*.jpg'))
    preds, _ = learn.get_preds(dl=learn.dls.test_dl(files))
    preds2, _ = learn2.get_preds(dl=learn2.dls.test_dl(files))
    assert preds.shape == (16, 2)
    torch.testing.assert_close(preds2, preds, rtol=0, atol=1e-6)
    xb, xb2 = learn.dls.test_dl(files).one_batch()[0], learn2.dls.test_dl(files).one_batch()[0]
    # (the batch sizes differ)
    assert xb.shape[-2:] == (32, 32) and torch.equal(xb, xb2[:len(xb)]), "the same pixels reach the model"


def _rewrite_description(path, change):
    "Load an export file, change its JSON description with `change(desc)`, and save it back."
    import json
    obj = torch.load(path, weights_only=True)
    desc = json.loads(obj['minifast_export'])
    change(desc)
    obj['minifast_export'] = json.dumps(desc)
    torch.save(obj, path)


def test_a_version_1_file_loads_when_its_modules_are_imported(learn, colour_folder, tmp_path):
    "Files written before the modules were recorded (version 1) still load, the vision modules being imported here."
    path = learn.export(tmp_path/'v1.pkl')
    def to_v1(desc):
        desc['version'] = 1
        del desc['model_module']
        for key in ('type_tfms', 'item_tfms', 'batch_tfms'):
            for pipe in desc[key]:
                for t in pipe: del t['module']
    _rewrite_description(path, to_v1)
    fname = colour_folder/'red'/'red_0.jpg'
    assert load_learner(path).predict(fname)[0] == learn.predict(fname)[0]


def test_a_newer_format_is_refused_with_advice(learn, tmp_path):
    path = learn.export(tmp_path/'v99.pkl')
    _rewrite_description(path, lambda desc: desc.update(version=99))
    with pytest.raises(ValueError, match='written by a newer minifast'): load_learner(path)


def test_load_learner_imports_the_recorded_modules_of_builder_and_transforms(learn, tmp_path):
    "In a fresh process with only minifast.learner imported, the file says where the builder and transforms live."
    import subprocess
    import sys
    path = learn.export(tmp_path/'model.pkl')
    code = ("import sys\nfrom minifast.learner import load_learner\n"
            "assert 'minifast.vision.learner' not in sys.modules\n"
            f"learn = load_learner({str(path)!r})\n"
            "print(type(learn.model).__name__, 'minifast.vision.learner' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [type(learn.model).__name__, 'True']


def test_export_imports_neither_learner_nor_vision():
    "export sits below the learner: importing it alone loads no learner or vision module."
    import subprocess
    import sys
    code = ("import sys, minifast.export\n"
            "print(sorted(m for m in sys.modules if m.startswith(('minifast.learner', 'minifast.vision'))))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'
