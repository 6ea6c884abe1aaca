"""The built-in toy pets: names, determinism, caching on disk, image sizes, learnability."""
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import minifast.data.toy_pets as tp
from minifast.data.toy_pets import PET_BREEDS, draw_toy_pet, is_cat, minifast_home, toy_pets

PAT = re.compile(r'(.+)_\d+.jpg$')  # fastbook's labelling regex

# Typed from the Oxford-IIIT Pet data set, independently of the module's table.
CATS = ['Abyssinian', 'Bengal', 'Birman', 'Bombay', 'British_Shorthair', 'Egyptian_Mau', 'Maine_Coon',
        'Persian', 'Ragdoll', 'Russian_Blue', 'Siamese', 'Sphynx']
DOGS = ['american_bulldog', 'american_pit_bull_terrier', 'basset_hound', 'beagle', 'boxer', 'chihuahua',
        'english_cocker_spaniel', 'english_setter', 'german_shorthaired', 'great_pyrenees', 'havanese',
        'japanese_chin', 'keeshond', 'leonberger', 'miniature_pinscher', 'newfoundland', 'pomeranian', 'pug',
        'saint_bernard', 'samoyed', 'scottish_terrier', 'shiba_inu', 'staffordshire_bull_terrier',
        'wheaten_terrier', 'yorkshire_terrier']


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    "Every test gets its own MINIFAST_HOME, so nothing is written under ~/.minifast."
    monkeypatch.setenv('MINIFAST_HOME', str(tmp_path/'home'))
    return tmp_path/'home'


def _files(root): return sorted((root/'images').iterdir())
def _label(path): return PAT.search(path.name).group(1)


@pytest.fixture(scope='module')
def pets20(tmp_path_factory):
    "20 images per breed (740 files), shared by the read-only tests below."
    return toy_pets(tmp_path_factory.mktemp('pets')/'toy_pets', n_per_breed=20)


# ---------------------------------------------------------------- names

def test_breed_names_match_the_real_data_set():
    assert PET_BREEDS == CATS + DOGS
    assert [b for b in PET_BREEDS if is_cat(b)] == CATS
    assert is_cat('Maine_Coon_7.jpg') and not is_cat('/x/images/pug_1.jpg')
    with pytest.raises(ValueError, match='file name'): is_cat('/x/images/')


def test_file_names_round_trip_through_fastbook_regex(pets20):
    files = _files(pets20)
    assert len(files) == 37*20
    counts = {}
    for f in files:
        counts[_label(f)] = counts.get(_label(f), 0) + 1
        assert is_cat(f) == (_label(f) in CATS)
    assert counts == {b: 20 for b in CATS + DOGS}
    assert {f.name for f in files} == {f'{b}_{n}.jpg' for b in CATS + DOGS for n in range(1, 21)}


# ---------------------------------------------------------------- determinism

def _bytes(root): return {f.name: f.read_bytes() for f in _files(root)}

def test_same_seed_gives_identical_files_other_seed_differs(tmp_path):
    a = _bytes(toy_pets(tmp_path/'a', n_per_breed=2, seed=3))
    b = _bytes(toy_pets(tmp_path/'b', n_per_breed=2, seed=3))
    c = _bytes(toy_pets(tmp_path/'c', n_per_breed=2, seed=4))
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_image_depends_only_on_seed_breed_and_n(tmp_path, pets20):
    one = _bytes(toy_pets(tmp_path/'one', n_per_breed=1))
    assert one == {k: (pets20/'images'/k).read_bytes() for k in one}
    # drawn alone and out of order, the pixels match the file's (up to JPEG loss)
    img = np.asarray(draw_toy_pet('pug', 17), dtype=np.float32)
    saved = np.asarray(Image.open(pets20/'images'/'pug_17.jpg'), dtype=np.float32)
    assert img.shape == saved.shape and np.abs(img - saved).mean() < 4


# ---------------------------------------------------------------- on disk

def _stamp(root):
    return {p.relative_to(root): p.stat().st_mtime_ns for p in [root/'toy_pets.json', *_files(root)]}

def test_default_dest_is_reused_without_drawing(home, monkeypatch):
    root = toy_pets(n_per_breed=2)
    assert root == minifast_home()/'data'/'toy_pets_n2' == home/'data'/'toy_pets_n2'
    before = _stamp(root)
    def boom(*args, **kwargs): raise AssertionError('a complete folder must not be drawn again')
    monkeypatch.setattr(tp, 'draw_toy_pet', boom)
    assert toy_pets(n_per_breed=2) == root
    assert _stamp(root) == before
    marker = json.loads((root/'toy_pets.json').read_text())
    assert marker['seed'] == 42 and marker['n_per_breed'] == 2 and marker['n_files'] == 74


def _plain_pet(breed, n, seed):
    "A stand-in for draw_toy_pet that is quick to draw and says what it was asked for."
    return Image.new('RGB', (8, 8), (PET_BREEDS.index(breed), n % 256, seed % 256))

def test_default_parameters_keep_the_default_folder(home, monkeypatch):
    "The README, the demo and the benchmarks rely on toy_pets() being minifast_home()/'data'/'toy_pets'."
    monkeypatch.setattr(tp, 'draw_toy_pet', _plain_pet)   # 1,480 real images take several seconds
    root = toy_pets()
    assert root == toy_pets(n_per_breed=40, seed=42) == home/'data'/'toy_pets'
    assert len(_files(root)) == 37*40 and json.loads((root/'toy_pets.json').read_text())['n_per_breed'] == 40


def test_different_sizes_and_seeds_get_their_own_folders_and_coexist(home, monkeypatch):
    "Notebooks run in parallel with different sizes must not replace each other's folder (files vanishing mid-read)."
    small = toy_pets(n_per_breed=1)
    before = _stamp(small)
    monkeypatch.setattr(tp, 'draw_toy_pet', _plain_pet)
    big, other_seed, default = toy_pets(n_per_breed=3), toy_pets(n_per_breed=1, seed=7), toy_pets()
    assert (small.name, big.name, other_seed.name, default.name) == ('toy_pets_n1', 'toy_pets_n3', 'toy_pets_n1_seed7',
                                                                     'toy_pets')
    assert len({small, big, other_seed, default}) == 4 and all(p.parent == home/'data'
                                                               for p in (small, big, other_seed, default))
    assert _stamp(small) == before   # untouched by the others
    assert [len(_files(p)) for p in (small, big, other_seed, default)] == [37, 111, 37, 1480]
    assert toy_pets(n_per_breed=1) == small and _stamp(small) == before   # still complete: reused, not drawn again
    assert sorted(p.name for p in (home/'data').iterdir()) == ['toy_pets', 'toy_pets_n1', 'toy_pets_n1_seed7',
                                                               'toy_pets_n3']


def test_a_folder_another_process_finished_meanwhile_is_kept(tmp_path, monkeypatch):
    """Two processes drawing the same folder: the one finishing second keeps the first one's folder
    (a reader may be in it)."""
    root = tmp_path/'pets'
    real_draw_all = tp._draw_all
    def draw_all_while_another_finishes(folder, n_per_breed, seed):
        real_draw_all(folder, n_per_breed, seed)
        monkeypatch.setattr(tp, '_draw_all', real_draw_all)
        toy_pets(root, n_per_breed=n_per_breed, seed=seed)   # the other process, faster
        draw_all_while_another_finishes.first = _stamp(root)
    monkeypatch.setattr(tp, '_draw_all', draw_all_while_another_finishes)
    assert toy_pets(root, n_per_breed=1) == root
    assert _stamp(root) == draw_all_while_another_finishes.first and len(_files(root)) == 37
    assert sorted(p.name for p in tmp_path.iterdir()) == ['pets']  # our copy was removed


@pytest.mark.parametrize('damage', ['no marker', 'garbled marker', 'file missing', 'other seed', 'force'])
def test_incomplete_or_stale_folder_is_drawn_again(tmp_path, damage):
    root = toy_pets(tmp_path/'pets', n_per_breed=2)
    reference = _bytes(root)
    seed, force = 42, False
    if damage == 'no marker': (root/'toy_pets.json').unlink()
    if damage == 'garbled marker': (root/'toy_pets.json').write_text('{"version": 1, "se')
    if damage == 'file missing': (root/'images'/'beagle_2.jpg').unlink()
    if damage == 'other seed': seed = 5
    if damage == 'force': force = True
    (root/'images'/'pug_1.jpg').write_bytes(b'left over from an older run')
    assert toy_pets(root, n_per_breed=2, seed=seed, force=force) == root
    assert (root/'toy_pets.json').is_file() and len(_files(root)) == 74
    for kind in ('trimaps', 'points'): assert len(list((root/'annotations'/kind).iterdir())) == 74
    if seed == 42: assert _bytes(root) == reference
    else: assert (root/'images'/'pug_1.jpg').read_bytes() != reference['pug_1.jpg']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['pets']  # no temporary folders left


@pytest.mark.parametrize('damage', ['no annotations', 'trimap missing', 'point missing'])
def test_missing_annotations_are_drawn_without_touching_the_images(tmp_path, damage):
    root = toy_pets(tmp_path/'pets', n_per_breed=1)
    stamps = {f.name: f.stat().st_mtime_ns for f in _files(root)}
    annotations = {p.relative_to(root): p.read_bytes() for p in (root/'annotations').rglob('*.*')}
    if damage == 'no annotations': shutil.rmtree(root/'annotations')   # a folder written before they existed
    if damage == 'trimap missing': (root/'annotations'/'trimaps'/'pug_1.png').unlink()
    if damage == 'point missing': (root/'annotations'/'points'/'pug_1.txt').unlink()
    assert toy_pets(root, n_per_breed=1) == root
    assert {f.name: f.stat().st_mtime_ns for f in _files(root)} == stamps
    assert {p.relative_to(root): p.read_bytes() for p in (root/'annotations').rglob('*.*')} == annotations
    assert sorted(p.name for p in root.iterdir()) == ['annotations', 'images', 'toy_pets.json']
    assert json.loads((root/'toy_pets.json').read_text())['version'] == 1   # older minifasts still read the folder
    (root/'annotations'/'points'/'notes.md').write_text('mine')
    (root/'annotations'/'trimaps'/'pug_1.png').unlink()
    with pytest.raises(FileExistsError, match='annotations/points/notes.md'): toy_pets(root, n_per_breed=1)


def test_interrupted_generation_leaves_nothing_and_is_redone(tmp_path, monkeypatch):
    drawn, real_draw = [], tp._draw   # what the folder writer calls: image, trimap and key point at once
    def flaky(breed, n, seed):
        drawn.append(breed)
        if len(drawn) == 10: raise KeyboardInterrupt
        return real_draw(breed, n, seed)
    monkeypatch.setattr(tp, '_draw', flaky)
    with pytest.raises(KeyboardInterrupt): toy_pets(tmp_path/'pets', n_per_breed=4)
    assert list(tmp_path.iterdir()) == []
    assert len(drawn) < 37*4  # the rest was cancelled, not drawn in the background
    monkeypatch.setattr(tp, '_draw', real_draw)
    root = toy_pets(tmp_path/'pets', n_per_breed=4)
    assert len(_files(root)) == 148 and (root/'toy_pets.json').is_file()


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    (tmp_path/'mine').mkdir()
    (tmp_path/'mine'/'thesis.tex').write_text('precious')
    with pytest.raises(FileExistsError, match='thesis.tex'): toy_pets(tmp_path/'mine', n_per_breed=1)
    (tmp_path/'mine'/'thesis.tex').unlink()
    (tmp_path/'mine'/'annotations'/'xmls').mkdir(parents=True)   # the real data set's head boxes: not ours
    with pytest.raises(FileExistsError, match='annotations/xmls'): toy_pets(tmp_path/'mine', n_per_breed=1)
    (tmp_path/'mine'/'annotations'/'xmls').rmdir()
    (tmp_path/'mine'/'thesis.tex').write_text('precious')
    assert (tmp_path/'mine'/'thesis.tex').read_text() == 'precious'
    (tmp_path/'file').write_text('x')
    with pytest.raises(FileExistsError, match='not a folder'): toy_pets(tmp_path/'file', n_per_breed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file', 'mine']


@pytest.mark.parametrize('kwargs, culprit', [({'n_per_breed': 0}, 'n_per_breed'), ({'n_per_breed': 2.5}, 'n_per_breed'),
                                             ({'seed': -1}, 'seed'), ({'seed': '42'}, 'seed')])
def test_bad_arguments_are_named(tmp_path, kwargs, culprit):
    with pytest.raises(ValueError, match=culprit): toy_pets(tmp_path/'p', **kwargs)
    assert not (tmp_path/'p').exists()


def test_draw_toy_pet_rejects_unknown_breed_and_n():
    with pytest.raises(ValueError, match='Dalmatian'): draw_toy_pet('Dalmatian', 1)
    with pytest.raises(ValueError, match='n=0'): draw_toy_pet('pug', 0)


# ---------------------------------------------------------------- images

def test_images_are_rgb_jpegs_of_varied_size_and_orientation(pets20):
    sizes = []
    for f in _files(pets20):
        with Image.open(f) as im:
            assert im.format == 'JPEG' and im.mode == 'RGB'
            sizes.append(im.size)
    w, h = np.array(sizes).T
    assert w.min() >= 200 and h.min() >= 200 and w.max() <= 500 and h.max() <= 500
    assert (w > h).sum() > 200 and (h > w).sum() > 200  # both orientations, plenty of each
    assert len(set(sizes)) > 500


# ---------------------------------------------------------------- learnability

def _thumbnail(path, size):
    with Image.open(path) as im:
        im.draft('RGB', (4*size, 4*size))  # let the JPEG decoder skip most of the work
        return np.asarray(im.convert('RGB').resize((size, size), Image.BILINEAR), np.float32).ravel()/255

def _features(files, size): return np.stack([_thumbnail(f, size) for f in files])

def _logistic_regression_accuracy(x, y, train, steps=200):
    "Softmax regression fitted with L-BFGS on standardised features; accuracy on the rest."
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x, y, train = torch.tensor((x - mean)/std), torch.tensor(y), torch.tensor(train)
    w = torch.zeros(x.shape[1], 37, requires_grad=True)
    b = torch.zeros(37, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn='strong_wolfe')
    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[train] @ w + b, y[train]) + 1e-3*(w**2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad(): return ((x[~train] @ w + b).argmax(1) == y[~train]).float().mean().item()

def _nearest_centroid_accuracy(x, y, train):
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean)/std
    centroids = np.stack([x[train & (y == c)].mean(0) for c in range(37)])
    pred = ((x[~train][:, None] - centroids[None])**2).sum(-1).argmin(1)
    return (pred == y[~train]).mean()

def test_learnable_by_a_linear_model_but_not_trivially(pets20):
    files = _files(pets20)
    y = np.array([PET_BREEDS.index(_label(f)) for f in files])
    train = np.array([int(re.search(r'_(\d+)\.jpg$', f.name).group(1)) <= 15 for f in files])  # 555 / 185
    chance = 1/37
    thumbs = _features(files, 8)
    acc_logreg = _logistic_regression_accuracy(thumbs, y, train)
    acc_centroid = _nearest_centroid_accuracy(thumbs, y, train)
    acc_mean_colour = _nearest_centroid_accuracy(_features(files, 1), y, train)
    print(f'held-out accuracy: logistic regression on 8x8 {acc_logreg:.3f}, nearest centroid 8x8 '
          f'{acc_centroid:.3f}, nearest centroid on mean colour {acc_mean_colour:.3f} (chance {chance:.3f})')
    assert 3*chance < acc_logreg < 0.6      # learnable, far from solved by a linear model
    assert acc_centroid < 0.6
    assert acc_mean_colour < 0.15            # one pixel statistic does not solve it


# ---------------------------------------------------------------- annotations

def _annotations(root, name):
    trimap = np.asarray(Image.open(root/'annotations'/'trimaps'/f'{name}.png'))
    x, y = map(float, (root/'annotations'/'points'/f'{name}.txt').read_text().split())
    return trimap, x, y


def test_a_trimap_and_a_key_point_per_image_in_the_real_layout(pets20):
    names = [f.stem for f in _files(pets20)]
    assert sorted(p.stem for p in (pets20/'annotations'/'trimaps').glob('*.png')) == sorted(names)
    assert sorted(p.stem for p in (pets20/'annotations'/'points').glob('*.txt')) == sorted(names)
    on_pet = 0
    for name in names[::5]:
        with Image.open(pets20/'annotations'/'trimaps'/f'{name}.png') as t:
            with Image.open(pets20/'images'/f'{name}.jpg') as im: assert t.mode == 'L' and t.size == im.size
        trimap, x, y = _annotations(pets20, name)
        assert set(np.unique(trimap)) <= {1, 2, 3} and {1, 2} <= set(np.unique(trimap))
        h, w = trimap.shape
        assert 0 <= x < w and 0 <= y < h
        on_pet += trimap[int(y), int(x)] == 1
    assert on_pet >= 0.9 * len(names[::5])   # the centre of a crescent (Bombay) lies off the pet


def test_the_border_separates_pet_and_background(pets20):
    for name in [f.stem for f in _files(pets20)][::7]:
        trimap = _annotations(pets20, name)[0]
        pet, bkg = trimap == 1, trimap == 2
        vertical = (pet[1:] & bkg[:-1]) | (pet[:-1] & bkg[1:])
        horizontal = (pet[:, 1:] & bkg[:, :-1]) | (pet[:, :-1] & bkg[:, 1:])
        assert not vertical.any() and not horizontal.any(), name


def test_the_trimap_covers_the_pet_in_the_picture(pets20):
    "For the dark solid breeds the picture is dark where the trimap says pet, whatever the background."
    for breed in ('Bombay', 'newfoundland', 'scottish_terrier'):
        for n in (1, 2, 3):
            trimap = _annotations(pets20, f'{breed}_{n}')[0]
            img = np.asarray(Image.open(pets20/'images'/f'{breed}_{n}.jpg'), np.float32)
            body = np.median(img[trimap == 1], axis=0)
            assert (np.abs(body - tp._LOOKS[breed][1]) < 45).all(), (breed, n, body)


def test_annotations_are_drawn_with_the_image_and_images_stay_the_same():
    img, trimap, (x, y) = tp._draw('pug', 3, 42)
    assert np.array_equal(np.asarray(img), np.asarray(draw_toy_pet('pug', 3)))
    t2, (x2, y2) = tp.toy_pet_annotations('pug', 3)
    assert np.array_equal(np.asarray(trimap), np.asarray(t2)) and (x, y) == (x2, y2)
    with pytest.raises(ValueError, match='toy_pet_annotations: unknown breed'): tp.toy_pet_annotations('Dalmatian', 1)
