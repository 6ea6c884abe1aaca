"export / load_learner: a reloaded learner preprocesses a JPEG exactly as the learner that trained."
import json

import pytest
import torch

from minifast.data.toy_pets import toy_pets
from minifast.data.transforms import get_image_files
from minifast.learner import load_learner
from minifast.vision.augment import RandomResizedCrop, Resize
from minifast.vision.data import ImageDataLoaders
from minifast.vision.learner import vision_learner, resnet18


def is_cat(name): return name[0].isupper()


def _learner(path, item_tfms):
    files = get_image_files(path/'images')
    dls = ImageDataLoaders.from_name_func(path, files, is_cat,
                                          valid_pct=0.25, seed=0, item_tfms=item_tfms, bs=4, device='cpu')
    torch.manual_seed(0)
    return vision_learner(dls, resnet18, pretrained=False), files


@pytest.mark.parametrize('item_tfms', [Resize(64), RandomResizedCrop(64, min_scale=0.5)], ids=['Resize', 'RRC'])
def test_reloaded_learner_decodes_and_predicts_exactly_as_the_original(tmp_path, item_tfms):
    learn, files = _learner(toy_pets(tmp_path/'pets', n_per_breed=2), item_tfms)
    learn2 = load_learner(learn.export(tmp_path/'model.pkl'))
    fname = files[0]
    assert fname.suffix == '.jpg'
    x, = learn.dls.test_dl([fname]).one_batch()[:1]
    x2, = learn2.dls.test_dl([fname]).one_batch()[:1]
    assert torch.equal(x, x2)
    probs, probs2 = learn.predict(fname)[2], learn2.predict(fname)[2]
    assert torch.equal(probs, probs2)


def test_the_export_records_the_draft_size(tmp_path):
    learn, _ = _learner(toy_pets(tmp_path/'pets', n_per_breed=2), Resize(64))
    learn2 = load_learner(learn.export(tmp_path/'model.pkl'))
    assert [t.draft_size for t in learn2.dls.valid.dataset.dsets.pipelines[0] if hasattr(t, 'draft_size')] == [64]


def test_an_export_written_before_the_draft_size_was_recorded_still_decodes_as_at_training(tmp_path):
    learn, files = _learner(toy_pets(tmp_path/'pets', n_per_breed=2), Resize(64))
    obj = torch.load(learn.export(tmp_path/'model.pkl'), weights_only=True)
    desc = json.loads(obj['minifast_export'])
    for descs in desc['type_tfms']:
        for d in descs: d['config'].pop('draft_size', None)   # what the previous version wrote
    obj['minifast_export'] = json.dumps(desc)
    torch.save(obj, tmp_path/'old.pkl')
    learn2 = load_learner(tmp_path/'old.pkl')
    x, x2 = (lr.dls.test_dl([files[0]]).one_batch()[0] for lr in (learn, learn2))
    assert torch.equal(x, x2)
    assert torch.equal(learn.predict(files[0])[2], learn2.predict(files[0])[2])
