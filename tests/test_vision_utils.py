"verify_images: every unreadable file found, named, in the order given; readable ones left alone."
from pathlib import Path

from PIL import Image

from minifast.vision.all import L, verify_image, verify_images


def _folder(tmp_path):
    Image.new('RGB', (64, 48), (10, 200, 10)).save(tmp_path/'ok_0.jpg', quality=95)
    Image.new('L', (20, 20), 128).save(tmp_path/'ok_1.png')
    full = (tmp_path/'ok_0.jpg').read_bytes()
    (tmp_path/'cut.jpg').write_bytes(full[:len(full) // 2])          # opens, fails when decoded
    (tmp_path/'page.jpg').write_text('<!doctype html><title>404</title>')
    (tmp_path/'empty.jpg').write_bytes(b'')
    return tmp_path


def test_verify_images_finds_every_unreadable_file_in_order(tmp_path):
    folder = _folder(tmp_path)
    files = sorted(folder.iterdir()) * 3   # many files, so that several threads share the work
    failed = verify_images(files, n_workers=4)
    assert isinstance(failed, L)
    assert [f.name for f in failed] == ['cut.jpg', 'empty.jpg', 'page.jpg'] * 3
    assert verify_image(folder/'ok_0.jpg') and verify_image(folder/'ok_1.png') and not verify_image(folder/'cut.jpg')


def test_verify_images_says_why_each_file_failed(tmp_path):
    folder = _folder(tmp_path)
    whys = dict(verify_images(sorted(folder.iterdir()) + [folder/'gone.jpg'], reasons=True))
    assert set(whys) == {folder/'cut.jpg', folder/'empty.jpg', folder/'page.jpg', Path(folder/'gone.jpg')}
    assert whys[folder/'gone.jpg'] == 'the file does not exist'
    assert all(isinstance(w, str) and w for w in whys.values())
