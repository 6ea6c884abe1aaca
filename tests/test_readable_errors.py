"Errors raised deep in a loader or in a worker process: minifast's message first, the traceback kept."
import traceback

import pytest

from minifast.data.block import CategoryBlock, DataBlock
from minifast.data.transforms import RandomSplitter, get_image_files, parent_label
from minifast.vision.augment import Resize
from minifast.vision.core import ImageReadError
from minifast.vision.data import ImageBlock


def _dls(folder, num_workers, get_y=parent_label):
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=get_y,
                      splitter=RandomSplitter(valid_pct=0.25, seed=0), item_tfms=Resize(16))
    return block.dataloaders(folder, bs=4, device='cpu', num_workers=num_workers, seed=0)


def test_a_bad_image_read_in_a_worker_shows_minifast_message_first(colour_folder):
    bad = colour_folder/'red'/'broken.jpg'
    bad.write_bytes(b'not an image')
    dls = _dls(colour_folder, num_workers=1)
    with pytest.raises(ImageReadError) as e:
        for _ in range(2): list(dls.train)  # two epochs: the shuffled training set surely holds the file
    msg = str(e.value)
    assert msg.startswith(f"Cannot read the image {bad}"), msg[:300]  # not torch's "Caught ... Original Traceback"
    assert 'Traceback' not in msg
    (note,) = [n for n in e.value.__notes__ if 'DataLoader worker' in n]
    assert 'Original Traceback' in note and 'in _worker_loop' in note  # the worker's traceback is kept, in the note
    text = ''.join(traceback.format_exception(e.value))
    # printed: this process's few frames, then minifast's message, then the worker's frames
    assert text.index(f"Cannot read the image {bad}") < text.index('Original Traceback') < text.index('_worker_loop')
    assert e.value.__cause__ is None and e.value.__suppress_context__  # torch's copy is not printed a second time


def test_an_error_in_a_labelling_function_names_the_item_being_built(colour_folder):
    calls = []

    def get_y(path):
        calls.append(path)
        if len(calls) > 16: raise ValueError(f"no label for {path.name}")  # fails once the items are built
        return parent_label(path)

    dls = _dls(colour_folder, num_workers=0, get_y=get_y)
    with pytest.raises(ValueError, match='no label for') as e: dls.train.one_batch()
    notes = '\n'.join(e.value.__notes__)
    assert 'while building item' in notes and 'of the training set' in notes and '.jpg' in notes, notes


def test_the_note_does_not_change_the_error_or_its_type(colour_folder):
    bad = colour_folder/'blue'/'empty.jpg'
    bad.write_bytes(b'')
    dls = _dls(colour_folder, num_workers=0)
    with pytest.raises(ImageReadError, match='empty') as e:
        for _ in range(2): list(dls.train)
    assert str(bad) in str(e.value) and 'while building item' in e.value.__notes__[-1]
