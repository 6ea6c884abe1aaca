"Odd and broken image files: everything readable loads as upright RGB, everything else fails naming the file."
import io

import numpy as np
import pytest
from PIL import Image

from minifast.vision.core import ImageReadError, PILImage, load_image
from minifast.data.block import DataBlock, CategoryBlock
from minifast.data.transforms import get_image_files, parent_label
from minifast.vision.data import ImageBlock


def _exif_rotated_jpeg(path, orientation):
    img = Image.new('RGB', (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 8, 8))  # red marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes(), quality=95)


def test_exif_rotated_jpeg_loads_upright(tmp_path):
    _exif_rotated_jpeg(tmp_path/'phone.jpg', orientation=6)  # 6: rotate 90 degrees clockwise to display
    img = load_image(tmp_path/'phone.jpg')
    assert img.size == (20, 40)
    a = np.asarray(img).astype(int)
    assert a[2, -3, 0] > 200 and a[2, -3, 2] < 60, "the marker must end up at the top-right"
    assert a[-3, 2, 2] > 200


@pytest.mark.parametrize('mode,make', [
    ('L', lambda: Image.new('L', (7, 5), 90)),
    ('1', lambda: Image.new('1', (7, 5), 1)),
    ('P', lambda: Image.new('RGB', (7, 5), (10, 200, 30)).convert('P')),
    ('LA', lambda: Image.new('LA', (7, 5), (90, 255))),
    ('RGBA', lambda: Image.new('RGBA', (7, 5), (10, 200, 30, 255))),
    ('CMYK', lambda: Image.new('CMYK', (7, 5), (0, 0, 0, 0))),
])
def test_every_mode_becomes_rgb(tmp_path, mode, make):
    fmt = 'JPEG' if mode in ('L', 'CMYK') else 'PNG'
    path = tmp_path/f'img_{mode}.jpg'  # always named .jpg: the content decides, as with real scraped data
    make().save(path, format=fmt)
    img = load_image(path)
    assert img.mode == 'RGB' and img.size == (7, 5)


def test_pixel_values_of_converted_modes(tmp_path):
    pal = Image.new('RGB', (4, 4), (10, 200, 30)).convert('P')
    pal.save(tmp_path/'p.png')
    assert np.array_equal(np.asarray(load_image(tmp_path/'p.png')), np.asarray(pal.convert('RGB')))
    Image.new('CMYK', (4, 4), (0, 0, 0, 0)).save(tmp_path/'white_cmyk.jpg')
    assert np.asarray(load_image(tmp_path/'white_cmyk.jpg')).min() > 240
    ramp = (np.arange(16, dtype=np.uint32).reshape(4, 4) * 4369).astype(np.uint16)  # 0 .. 65535
    Image.fromarray(ramp).save(tmp_path/'deep.png')
    a = np.asarray(load_image(tmp_path/'deep.png'))[..., 0].astype(int)
    assert a[0, 0] == 0 and a[-1, -1] == 255 and abs(a[1, 3] - 119) <= 1   # 7 * 4369 / 65535 * 255 = 119
    rgba = Image.new('RGBA', (4, 4), (0, 0, 0, 0)); rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.save(tmp_path/'alpha.jpg', format='PNG')
    a = np.asarray(load_image(tmp_path/'alpha.jpg'))
    assert a[0, 0].tolist() == [255, 0, 0] and a[3, 3].tolist() == [255, 255, 255]


def _good_jpeg_bytes():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format='JPEG')
    return buf.getvalue()


@pytest.mark.parametrize('name,content', [
    ('empty.jpg', b''),
    ('truncated.jpg', _good_jpeg_bytes()[:600]),
    ('page.jpg', b'<!DOCTYPE html><html><body>404 Not Found</body></html>'),
    ('notes.jpg', b'just some text, not an image'),
])
def test_broken_files_name_the_file(tmp_path, name, content):
    (tmp_path/name).write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        load_image(tmp_path/name)
    assert str(tmp_path/name) in str(e.value)
    assert 'delete or replace' in str(e.value)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='gone.jpg'):
        PILImage.create(tmp_path/'gone.jpg')


def test_broken_file_in_a_batch_names_the_file(tmp_path):
    for label in ('a', 'b'):
        (tmp_path/label).mkdir()
        for i in range(3): Image.new('RGB', (8, 8)).save(tmp_path/label/f'{i}.jpg')
    (tmp_path/'a'/'bad.jpg').write_bytes(b'')
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label)
    dls = dblock.dataloaders(tmp_path, bs=8, device='cpu', num_workers=0)
    with pytest.raises(ImageReadError, match='bad.jpg'):
        for _ in dls.valid: pass
        for _ in dls.train: pass


def test_tiny_and_huge_images(tmp_path):
    Image.new('RGB', (3, 3), 'red').save(tmp_path/'tiny.png')
    assert load_image(tmp_path/'tiny.png').size == (3, 3)
    Image.new('RGB', (8000, 6000), 'blue').save(tmp_path/'huge.jpg', quality=50)
    img = load_image(tmp_path/'huge.jpg', draft_size=460)
    assert min(img.size) >= 460 and img.size[0] <= 1000, "JPEG draft decoding of a huge image at reduced scale"


def _gradient(w, h):
    "An RGB image whose colours change smoothly, so a small decode and a resized full decode can be compared."
    yy, xx = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.uint8))


def test_phone_mpo_jpeg_is_decoded_small_like_a_jpeg(tmp_path):
    "Phone cameras write MPO files (a JPEG plus appended previews) named .jpg; PIL says format 'MPO'."
    _gradient(800, 600).save(tmp_path/'phone.jpg', format='MPO', save_all=True, append_images=[_gradient(160, 120)],
                             quality=95)
    with Image.open(tmp_path/'phone.jpg') as img: assert img.format == 'MPO' and img.n_frames == 2
    full, small = load_image(tmp_path/'phone.jpg'), load_image(tmp_path/'phone.jpg', draft_size=150)
    assert full.size == (800, 600) and small.size == (200, 150), "decoded at 1/4 scale, as a plain JPEG is"
    diff = np.abs(np.asarray(small).astype(int) - np.asarray(full.resize((200, 150), Image.BILINEAR)).astype(int))
    assert diff.mean() < 3, "the first (main) image, not the preview"
    _gradient(800, 600).save(tmp_path/'plain.jpg', quality=95)
    assert load_image(tmp_path/'plain.jpg', draft_size=150).size == small.size
