"fastbook chapter 5's data half on the built-in data set, with only the import changed."
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

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
    block = _pets_block(item_tfms=Resize(64), batch_tfms=aug_transforms(size=32))
    block.summary(pets_path/'images', print_fn=lines.append)
    assert lines[-1].strip() == 'All steps succeeded.'
    text = '\n'.join(lines)
    steps = ['2 datasets of sizes 89 (train) and 22 (valid)', 'vocab: 37 classes',
             'PILImage.create(draft_size=64) -> PILImage mode=RGB',
             'Categorize(37 classes) -> Tensor of shape (), dtype torch.int64',
             'Resize(size=[64, 64]', '-> PILImage mode=RGB size=64x64',
             'ToTensor() -> Tensor of shape (3, 64, 64), dtype torch.uint8',
             'Collating 4 samples', 'element 0: Tensor of shape (4, 3, 64, 64), dtype torch.uint8',
             'FusedGeometry(', ') -> Tensor of shape (4, 3, 32, 32), dtype torch.float32', 'FusedLighting(']
    positions = [text.find(s) for s in steps]
    assert -1 not in positions and positions == sorted(positions), list(zip(steps, positions))   # every step, in order


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
    img = next(im for im in (Image.open(f).convert('RGB') for f in get_image_files(pets_path/'images'))
               if im.size[0] != im.size[1])
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
    with pytest.raises(ValueError, match=r"does not match '.*\.jpg'") as e:
        block.datasets(pets_path/'images')
    assert repr(r'^(\d+)-.*png$') in str(e.value), "the pattern is named too"


def test_resize_pixels_against_pil_and_torchvision():
    "Each method's output against a reference computed by hand with PIL, numpy or torchvision."
    a = np.random.default_rng(0).integers(0, 256, (30, 60, 3), dtype=np.uint8)   # 60 wide, 30 high
    img = Image.fromarray(a)
    centre = Resize(24)(img, split_idx=1)                  # the centre square 15..45, resized
    assert np.array_equal(np.asarray(centre), np.asarray(img.resize((24, 24), Image.BILINEAR, box=(15, 0, 45, 30))))
    for s in range(4):                                     # training: a random window of the same, largest size
        l, t, r, b = Resize(24).crop_box(60, 30, split_idx=0, generator=torch.Generator().manual_seed(s))
        assert (r - l, b - t, t) == (30, 30, 0) and 0 <= l <= 30
    assert np.array_equal(np.asarray(Resize((10, 40), method='squish')(img)),
                          np.asarray(img.resize((40, 10), Image.BILINEAR)))
    fitted = torch.from_numpy(np.array(img.resize((64, 32), Image.BILINEAR))).permute(2, 0, 1)   # 60x30 fitted in 64x64
    for pad_mode, tv_mode in [('zeros', 'constant'), ('border', 'edge'), ('reflection', 'reflect')]:
        out = np.asarray(Resize(64, method='pad', pad_mode=pad_mode)(img))
        ref = TF.pad(fitted, [0, 16, 0, 16], padding_mode=tv_mode).permute(1, 2, 0).numpy()
        assert out.shape == (64, 64, 3) and np.array_equal(out, ref), pad_mode


def test_draft_decoding_through_the_datablock(pets_path):
    "The DataBlock tells the image loader the largest item size: JPEGs are decoded at reduced scale, never below it."
    dsets = _pets_block(item_tfms=Resize(64)).datasets(pets_path/'images')
    for i in range(5):
        f = dsets.items[i]
        with Image.open(f) as im: full = im.size
        decoded = dsets[i][0].size
        assert 64 <= min(decoded) and max(decoded) <= max(full) // 2, (f, full, decoded)
    dsets = _pets_block(item_tfms=Resize(400)).datasets(pets_path/'images')
    with Image.open(dsets.items[0]) as im: assert dsets[0][0].size == im.size   # no room to reduce: full size


class _OnlyInWorker(Transform):
    "An item transform that refuses to run outside a DataLoader worker process."
    order = 6   # after ToTensor
    def encodes(self, x):
        if torch.utils.data.get_worker_info() is None: raise RuntimeError('an item transform ran in the main process')
        return x


class _RecordBatch(Transform):
    "The first batch transform (before IntToFloatTensor): records the dtype and device of what the loader collated."
    order = 0
    def __init__(self): self.seen = []
    def encodes(self, x):
        self.seen.append((x.dtype, x.device.type, tuple(x.shape)))
        return x


def test_item_transforms_in_workers_uint8_until_the_device(pets_path):
    def dls(seed):
        record = _RecordBatch()
        block = _pets_block(item_tfms=[Resize(48), _OnlyInWorker()],
                            batch_tfms=[record, *aug_transforms(size=32, min_scale=0.75)])
        return block.dataloaders(pets_path/'images', bs=8, num_workers=2, device='cpu', seed=seed), record
    a, record = dls(0)
    assert a.train.num_workers == 2
    epoch1 = [xb for xb, _ in a.train]
    assert len(epoch1) == len(a.train) == (111 - 22) // 8
    assert all(x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 for x in epoch1)
    assert record.seen == [(torch.uint8, 'cpu', (8, 3, 48, 48))] * 11, \
        "collated uint8; converted only by the batch stage"
    epoch2 = [xb for xb, _ in a.train]
    assert not any(torch.equal(x, y) for x, y in zip(epoch1, epoch2)), "a new order and new augmentation each epoch"
    again = [xb for xb, _ in dls(0)[0].train]
    assert all(torch.equal(x, y) for x, y in zip(epoch1, again)), \
        "the same seed replays the same batches, workers or not"
    v1, v2 = [[xb for xb, _ in a.valid] for _ in range(2)]
    assert all(torch.equal(x, y) for x, y in zip(v1, v2))


def test_dataloaders_new_to_and_from_name_func(pets_path):
    files = get_image_files(pets_path/'images')
    dls = ImageDataLoaders.from_name_func(pets_path, files, lambda name: name.rsplit('_', 1)[0], valid_pct=0.2, seed=42,
                                          item_tfms=Resize(32), bs=8, device='cpu')
    assert list(dls.vocab) == sorted(PET_BREEDS) and dls.c == 37
    assert str(dls.train_ds.items[0]) in map(str, files)
    same = _pets_block(item_tfms=Resize(32)).dataloaders(pets_path/'images', bs=8, device='cpu')
    assert list(map(str, dls.valid_ds.items)) == list(map(str, same.valid_ds.items)), \
        "valid_pct + seed: RandomSplitter(seed=42)"
    small = dls.new(bs=4)
    assert small.train.bs == 4 and dls.train.bs == 8 and small.one_batch()[0].shape == (4, 3, 32, 32)
    assert small.vocab is dls.vocab and len(small.valid) == -(-len(dls.valid_ds) // 4)
    assert dls.to('cpu') is dls and dls.device == torch.device('cpu') and dls.train.one_batch()[0].device.type == 'cpu'
    assert ([dls.vocab[int(i)] for i in dls.valid.one_batch()[1]] ==
            [f.name.rsplit('_', 1)[0] for f in dls.valid_ds.items[:8]])


def test_show_batch_undoes_normalisation(pets_path):
    dls = _pets_block(item_tfms=Resize(48), batch_tfms=Normalize.from_stats(*imagenet_stats)).dataloaders(
        pets_path/'images', bs=4, device='cpu', seed=0)
    b = dls.valid.one_batch()
    assert b[0].min() < -1 and b[0].max() > 1.5, "normalised"
    fig = dls.valid.show_batch(b, max_n=4)
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    for f, a in zip(dls.valid_ds.items, shown):   # reference: PIL's draft decoding and centre crop, by hand
        with Image.open(f) as im:
            im.draft('RGB', (48, 48))
            im = im.convert('RGB')
            w, h = im.size
            s = min(w, h)
            box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
            ref = np.asarray(im.resize((48, 48), Image.BILINEAR, box=box))
        assert a.shape == (48, 48, 3) and np.abs(a.astype(int) - ref).max() <= 1
    plt.close(fig)


def test_validation_label_missing_from_training_is_caught_up_front(pets_path):
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                      splitter=FuncSplitter(lambda f: f.name.startswith('pug_')),
                      get_y=using_attr(RegexLabeller(PAT), 'name'),
                      item_tfms=Resize(32))
    with pytest.raises(ValueError, match=r"'pug' \(3 items\); e\.g\. item .*pug_1\.jpg") as e:
        block.dataloaders(pets_path/'images', device='cpu')
    assert 'vocab=' in str(e.value)
    lines = []
    block.summary(pets_path/'images', print_fn=lines.append)
    assert lines[-1].startswith('FAILED setting up the type transforms') and "'pug'" in lines[-1]


@pytest.mark.parametrize('broken', [0, 2])   # the sample shown step by step, or one of the others
def test_summary_names_the_failing_step_transform_and_item(pets_path, tmp_path, broken):
    files = sorted(get_image_files(pets_path/'images'))[:12:3]   # 4 files, 4 breeds
    for f in files: shutil.copy(f, tmp_path/f.name)
    items = sorted(get_image_files(tmp_path))
    items[broken].write_bytes(b'')
    lines = []
    DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=IndexSplitter([]),
              get_y=using_attr(RegexLabeller(PAT), 'name'),
              item_tfms=Resize(32)).summary(tmp_path, print_fn=lines.append)
    failed = [l for l in lines if 'FAILED' in l]
    assert len(failed) == 1 and 'PILImage.create' in failed[0]
    assert 'ImageReadError' in failed[0] and 'empty' in failed[0]
    assert items[broken].name in '\n'.join(lines[lines.index(failed[0]) - 2:lines.index(failed[0]) + 1])
    assert lines[-1].strip().startswith('Stopped') and 'All steps succeeded.' not in lines


def test_from_df_multi_label(pets_path):
    "A DataFrame with space-separated labels: MultiCategoryBlock, one-hot targets, decoded titles."
    import pandas as pd
    files = sorted(get_image_files(pets_path/'images'))[::9][:12]   # cats and dogs, short and long names
    tags = lambda f: ('cat' if f.name[0].isupper() else 'dog') + (' long_name' if f.name.count('_') > 1 else '')
    df = pd.DataFrame({'name': [f.name for f in files], 'tags': [tags(f) for f in files],
                       'is_valid': [i % 4 == 1 for i in range(12)]})
    assert set(df.tags[~df.is_valid]) == {'cat', 'cat long_name', 'dog', 'dog long_name'}
    dls = ImageDataLoaders.from_df(df, pets_path, folder='images', label_delim=' ', valid_col='is_valid',
                                   item_tfms=Resize(32), bs=4, device='cpu', seed=0)
    assert list(dls.vocab) == ['cat', 'dog', 'long_name'] and dls.c == 3 and len(dls.valid_ds) == 3
    x, y = dls.valid.one_batch()
    assert x.shape == (3, 3, 32, 32) and y.dtype == torch.float32
    valid_tags = list(df.tags[df.is_valid])
    assert y.tolist() == [[float(c in t.split()) for c in ['cat', 'dog', 'long_name']] for t in valid_tags]
    fig = dls.valid.show_batch((x, y), max_n=3)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [t.replace(' ', ';') for t in valid_tags]
    plt.close(fig)
