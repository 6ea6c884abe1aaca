"fastbook chapter 5's data half on the built-in data set, with only the import changed."
import matplotlib.pyplot as plt
import pytest
import torch

from minifast.vision.all import *
from minifast.data.toy_pets import PET_BREEDS

PAT = r'(.+)_\d+.jpg$'


@pytest.fixture(scope='module')
def pets_path(tmp_path_factory):
    return toy_pets(dest=tmp_path_factory.mktemp('pets'), n_per_breed=3)


def _pets_block(**kw):
    return DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=RandomSplitter(seed=42),
                     get_y=using_attr(RegexLabeller(PAT), 'name'), **kw)


def test_the_chapter_pipeline(pets_path):
    files = (pets_path/'images').ls()
    assert len(files) == 37 * 3
    pets = _pets_block(item_tfms=Resize(96), batch_tfms=aug_transforms(size=64, min_scale=0.75))
    dls = pets.dataloaders(pets_path/'images', bs=8, device='cpu')
    assert list(dls.vocab) == sorted(PET_BREEDS), "all 37 names labelled by the regex, vocab sorted"
    x, y = dls.one_batch()
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert len(dls.train_ds) + len(dls.valid_ds) == 111 and len(dls.valid_ds) == int(0.2 * 111)


def test_summary_explains_why_items_cannot_be_collated(pets_path):
    lines = []
    _pets_block().summary(pets_path/'images', print_fn=lines.append)
    text = '\n'.join(lines)
    assert 'Found 111 items' in text and 'cannot be stacked' in text
    assert text.count('(3, ') >= 3, "the shapes of the items are listed"
    assert 'Resize(460)' in text
    lines = []
    _pets_block(item_tfms=Resize(64)).summary(pets_path/'images', print_fn=lines.append)
    assert lines[-1].strip() == 'All steps succeeded.'


def test_show_batch_draws_decoded_class_names(pets_path):
    dls = _pets_block(item_tfms=Resize(64)).dataloaders(pets_path/'images', bs=6, device='cpu', seed=0)
    x, y = dls.one_batch()
    fig = dls.show_batch(b=(x, y), max_n=6, nrows=2, ncols=3)
    titles = [ax.get_title() for ax in fig.axes][:6]
    assert titles == [dls.vocab[int(i)] for i in y]
    assert all(t in PET_BREEDS for t in titles)
    plt.close(fig)
    fig = dls.show_batch(unique=True, max_n=4)
    assert len({ax.get_title() for ax in fig.axes if ax.get_title()}) == 1
    plt.close(fig)


def test_resize_random_on_train_centred_on_valid(pets_path):
    from PIL import Image
    img = next(im for im in (Image.open(f).convert('RGB') for f in get_image_files(pets_path/'images')) if im.size[0] != im.size[1])
    rs = Resize(32)
    w, h = img.size
    centre = rs.crop_box(w, h, split_idx=1)
    assert rs.crop_box(w, h, split_idx=1) == centre
    boxes = {rs.crop_box(w, h, split_idx=0, generator=torch.Generator().manual_seed(s)) for s in range(6)}
    assert len(boxes) > 1 and centre not in boxes
    dls = _pets_block(item_tfms=Resize(48)).dataloaders(pets_path/'images', bs=8, device='cpu', seed=1)
    v1, v2 = dls.valid.one_batch()[0], dls.valid.one_batch()[0]
    assert torch.equal(v1, v2), "validation batches are identical across passes"


def test_splitter_determinism_and_global_rng(pets_path):
    items = get_image_files(pets_path/'images')
    torch.manual_seed(123); before = torch.rand(1)
    torch.manual_seed(123)
    s1 = RandomSplitter(seed=42)(items); s2 = RandomSplitter(seed=42)(items)
    assert s1 == s2 and torch.equal(torch.rand(1), before), "the split is reproducible and leaves the global RNG alone"


def test_empty_folder_says_so(tmp_path):
    (tmp_path/'images').mkdir()
    with pytest.raises(ValueError, match='no items found in .*images'):
        _pets_block().dataloaders(tmp_path/'images')


def test_regex_that_matches_no_file_names_it(pets_path):
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=RandomSplitter(seed=0),
                      get_y=using_attr(RegexLabeller(r'^(\d+)-.*png$'), 'name'))
    with pytest.raises(ValueError, match=r"does not match '.*\.jpg'"):
        block.datasets(pets_path/'images')
