"The data API behaves as fastai documents it: splitters, readers, vocabularies, categorizers, `DataBlock.new`."
from pathlib import Path

import pandas as pd
import pytest
import torch

from minifast.vision.all import (CategoryBlock, CategoryMap, Categorize, ColReader, ColSplitter, DataBlock,
                                 EncodedMultiCategorize, GrandparentSplitter, ImageBlock, MultiCategorize,
                                 MultiCategoryBlock, OneHotEncode, RandomResizedCrop, RandomSplitter, Resize,
                                 TransformBlock, get_image_files, parent_label)


# --- splitters and readers ---

def test_grandparent_splitter_takes_lists_of_folder_names():
    items = [Path(f'data/{split}/cat/{i}.jpg') for i, split in enumerate(['train', 'valid', 'test', 'train'])]
    train, valid = GrandparentSplitter(train_name=('train', 'valid'), valid_name='test')(items)
    assert sorted(train) == [0, 1, 3] and list(valid) == [2]
    train, valid = GrandparentSplitter(train_name='train', valid_name=['valid', 'test'])(items)
    assert sorted(train) == [0, 3] and sorted(valid) == [1, 2]


def test_col_splitter_takes_a_column_name_or_position():
    df = pd.DataFrame({'fname': list('abcd'), 'is_valid': [True, False, False, True]})
    assert [list(s) for s in ColSplitter()(df)] == [[1, 2], [0, 3]]
    assert [list(s) for s in ColSplitter(1)(df)] == [[1, 2], [0, 3]]
    with pytest.raises(IndexError, match='column 5'): ColSplitter(5)(df)


def test_col_reader_reads_itertuples_rows_and_series_rows():
    df = pd.DataFrame({'fname': ['a', 'b'], 'labels': ['x y', '']})
    row = next(df.itertuples())   # namedtuple: position 0 is the DataFrame's index
    assert ColReader('fname', pref='img/', suff='.jpg')(row) == 'img/a.jpg'
    assert ColReader(1)(row) == 'a' and ColReader(0)(df.iloc[0]) == 'a'
    assert ColReader('labels', label_delim=' ')(row) == ['x', 'y']
    assert ColReader('labels', label_delim=' ')(df.iloc[1]) == []   # an empty cell: no labels
    assert list(ColReader(['fname', 'labels'])(df.iloc[0])) == ['a', 'x y']
    assert list(ColReader(['fname', 'labels'])(row)) == ['a', 'x y']
    with pytest.raises(KeyError, match="'label'"): ColReader('label')(row)


# --- CategoryMap ---

def test_category_map_sorts_and_maps_both_ways():
    vocab = CategoryMap(['dog', 'cat', 'dog', 'bird'])
    assert list(vocab) == ['bird', 'cat', 'dog'] and vocab.o2i == {'bird': 0, 'cat': 1, 'dog': 2}
    assert list(vocab[[0, 2]]) == ['bird', 'dog'] and vocab[1] == 'cat'
    assert list(vocab.map_objs(['dog', 'bird'])) == [2, 0] and list(vocab.map_ids([1, 2])) == ['cat', 'dog']
    assert list(CategoryMap(['b', 'a'], sort=False)) == ['b', 'a']


def test_category_map_add_na_puts_na_first_and_takes_unknown_labels():
    vocab = CategoryMap(['b', 'a'], add_na=True)
    assert list(vocab) == ['#na#', 'a', 'b'] and vocab.o2i['a'] == 1
    assert list(vocab.map_objs(['b', 'zebra'])) == [2, 0]


def test_category_map_keeps_a_pandas_categorical_order_and_strict_drops_unused():
    col = pd.Series(['lo', 'hi', 'lo'], dtype=pd.CategoricalDtype(['lo', 'mid', 'hi'], ordered=True))
    assert list(CategoryMap(col)) == ['lo', 'mid', 'hi']
    assert list(CategoryMap(col, strict=True)) == ['lo', 'hi']
    assert list(CategoryMap(pd.Series(['b', None, 'a']))) == ['a', 'b']   # a missing label is no class


# --- categorizers ---

def test_categorize_decode_gives_the_label_back():
    cat = Categorize()
    cat.setup(['dog', 'cat'])
    assert cat('dog').item() == 1
    assert cat.decode(cat('dog')) == 'dog' and cat.decodes(torch.tensor(0)) == 'cat'
    assert Categorize(vocab=['a', 'b'], add_na=True)('c').item() == 0


def test_multicategorize_gives_indices_and_one_hot_encode_the_vector():
    mc = MultiCategorize()
    mc.setup([['c', 'a'], ['b']])
    idxs = mc(['c', 'a'])
    assert idxs.dtype == torch.long and idxs.tolist() == [2, 0] and mc.decode(idxs) == ['c', 'a']
    ohe = OneHotEncode(c=3)
    assert ohe(idxs).tolist() == [1., 0., 1.] and ohe.decode(ohe(idxs)) == [0, 2]
    emc = EncodedMultiCategorize(vocab=['x', 'y', 'z'])
    assert emc([0, 1, 1]).tolist() == [0., 1., 1.] and emc.decode(torch.tensor([1., 0., 1.])) == ['x', 'z']


def test_multicategory_block_makes_one_hot_targets():
    tags = ['a b', 'b', 'c', 'a c', 'b c', 'a']
    db = DataBlock(blocks=(TransformBlock, MultiCategoryBlock), get_x=lambda o: torch.zeros(2),
                   get_y=lambda o: o.split(), splitter=lambda items: (list(range(4)), [4, 5]))
    dsets = db.datasets(tags)
    assert list(dsets.vocab) == ['a', 'b', 'c']
    assert dsets[0][1].tolist() == [1., 1., 0.] and dsets[0][1].dtype == torch.float32
    assert dsets.decode(dsets[4])[1] == ['b', 'c']
    enc = DataBlock(blocks=(TransformBlock, MultiCategoryBlock(encoded=True, vocab=['x', 'y'])),
                    get_x=lambda o: torch.zeros(2), get_y=lambda o: o, splitter=lambda items: ([0], [1]))
    assert enc.datasets([[0, 1], [1, 0]])[1][1].tolist() == [1., 0.]


# --- DataBlock.new, dls.loss_func, dls.decode ---

def _bears(colour_folder):
    return DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                     splitter=RandomSplitter(valid_pct=0.25, seed=42), item_tfms=Resize(16))


def test_datablock_new_is_a_copy_with_other_transforms(colour_folder):
    bears = _bears(colour_folder)
    new = bears.new(item_tfms=RandomResizedCrop(12, min_scale=0.3))
    assert [type(t).__name__ for t in new.item_tfms] == ['RandomResizedCrop']
    assert [type(t).__name__ for t in bears.item_tfms] == ['Resize']   # the original keeps its transforms
    xb, yb = new.dataloaders(colour_folder, bs=4, device='cpu', num_workers=0).one_batch()
    assert xb.shape == (4, 3, 12, 12)


def test_dls_decode_batch_gives_the_labels(colour_folder):
    dls = _bears(colour_folder).dataloaders(colour_folder, bs=4, device='cpu', num_workers=0)
    b = dls.valid.one_batch()
    assert dls.decode(b)[1].tolist() == b[1].tolist()   # no batch transform on the labels: unchanged
    assert [s[1] for s in dls.decode_batch(b)] == [dls.vocab[int(i)] for i in b[1]]


def test_dls_loss_func_is_the_default_loss_of_the_target_block(colour_folder):
    from minifast.vision.all import BCEWithLogitsLossFlat, CrossEntropyLossFlat, MSELossFlat
    from minifast.data.core import _default_losses
    assert {k: _default_losses[k] for k in ('category', 'multicategory', 'regression')} == {
        'category': CrossEntropyLossFlat, 'multicategory': BCEWithLogitsLossFlat, 'regression': MSELossFlat}
    dls = _bears(colour_folder).dataloaders(colour_folder, bs=4, device='cpu', num_workers=0)
    assert isinstance(dls.loss_func, CrossEntropyLossFlat)


def test_predict_takes_a_file_name_when_the_data_came_from_a_table(colour_folder):
    "fastai's test_dl skips the getter an item does not need: predict(fname) and predict(row) both work."
    from minifast.vision.all import ImageDataLoaders, Learner, nn
    files = sorted(colour_folder.rglob('*.jpg'))
    df = pd.DataFrame({'fname': [str(f.relative_to(colour_folder)) for f in files],
                       'label': [f.parent.name for f in files]})
    dls = ImageDataLoaders.from_df(df, colour_folder, fn_col='fname', label_col='label', item_tfms=Resize(8),
                                   bs=4, num_workers=0, seed=0, device='cpu')
    torch.manual_seed(0)
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)))
    by_name, by_row = learn.predict(files[0]), learn.predict(df.iloc[0])
    assert by_name[0] in ('red', 'blue') and torch.equal(by_name[2], by_row[2])
