"fastai's box helpers in minifast.vision.targets: COCO annotations, clip_remove_empty, bb_pad."
import json

import pytest
import torch
from PIL import Image

from minifast.vision.all import (BBoxBlock, BBoxLblBlock, DataBlock, ImageBlock, bb_pad, clip_remove_empty,
                                 get_annotations)


def _coco(tmp_path, **drop):
    coco = {'images': [{'id': 1, 'file_name': 'one.jpg'}, {'id': 2, 'file_name': 'two.jpg'}],
            'categories': [{'id': 5, 'name': 'bird'}],
            'annotations': [{'image_id': 2, 'bbox': [10, 20, 30, 40], 'category_id': 5}]}
    for k in drop: coco.pop(k)
    fn = tmp_path/'ann.json'
    fn.write_text(json.dumps(coco))
    return fn


def test_get_annotations_turns_coco_xywh_into_corner_boxes_with_names(tmp_path):
    fns, lbl_bbox = get_annotations(_coco(tmp_path))
    assert fns == ['two.jpg'] and lbl_bbox == [([[10, 20, 40, 60]], ['bird'])]


def test_get_annotations_names_the_file_that_is_not_coco(tmp_path):
    fn = _coco(tmp_path, annotations=1)
    with pytest.raises(ValueError, match=r"ann\.json has no 'annotations'"): get_annotations(fn)


def test_get_annotations_feeds_a_bbox_datablock(tmp_path):
    fns, lbl_bbox = get_annotations(_coco(tmp_path))
    y = dict(zip(fns, lbl_bbox))
    Image.new('RGB', (64, 80)).save(tmp_path/'two.jpg')
    block = DataBlock(blocks=(ImageBlock, BBoxBlock, BBoxLblBlock(vocab=['bird'])), get_x=lambda f: tmp_path/f,
                      get_y=[lambda f: y[f][0], lambda f: y[f][1]], n_inp=1)
    _, boxes, labels = block.datasets(fns).train[0]
    assert boxes.tolist() == [[10., 20., 40., 60.]] and labels.tolist() == [1]


def test_bb_pad_collates_samples_with_different_box_counts():
    samples = [(torch.zeros(3, 4, 4), torch.tensor([[-2., -2, 0, 0]]), torch.tensor([4])),
               (torch.zeros(3, 4, 4), torch.tensor([[0., 0, .5, .5], [.1, .1, .2, .2], [2, 2, 3, 3]]),
                torch.tensor([1, 2, 3]))]
    out = bb_pad(samples, pad_idx=0)
    boxes, labels = torch.stack([s[1] for s in out]), torch.stack([s[2] for s in out])
    assert boxes.shape == (2, 2, 4) and labels.tolist() == [[4, 0], [1, 2]]
    assert boxes[0].tolist() == [[-1., -1., 0., 0.], [0., 0., 0., 0.]]   # clipped, then padded


def test_clip_remove_empty_keeps_labels_with_their_boxes():
    boxes = torch.tensor([[0., 0, 1, 1], [1.5, 0, 2, 1], [-.5, -.5, .5, .5]])
    b, lbl = clip_remove_empty(boxes, torch.tensor([7, 8, 9]))
    assert lbl.tolist() == [7, 9] and b.tolist() == [[0., 0., 1., 1.], [-.5, -.5, .5, .5]]
