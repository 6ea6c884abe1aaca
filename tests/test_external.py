"Integration tests for minifast.data.external, against a tiny HTTP server on 127.0.0.1 (no internet)."
import hashlib
import io
import os
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from minifast.data.external import (CHECKSUMS, ChecksumError, DownloadError, UnsafeArchiveError, URLs,
                                    download_data, download_url, extract_archive, file_sha256,
                                    minifast_home, untar_data)

FILES = {'tiny/a.txt': b'hello', 'tiny/sub/b.txt': b'world' * 1000}


def make_tar(files, mode='w:gz', symlinks=()):
    "Tar archive bytes holding `files` (name -> bytes) and `symlinks` (name -> target)."
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in dict(symlinks).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


def make_zip(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as zf:
        for name, data in files.items(): zf.writestr(name, data)
    return buf.getvalue()


class Server:
    "Serves `files` (URL path -> bytes); records every request; paths in `truncate` send half the body."
    def __init__(self):
        self.files, self.requests, self.truncate = {}, [], set()
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                state.requests.append(self.path)
                body = state.files.get(self.path)
                if body is None: return self.send_error(404)
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if self.path in state.truncate else body)

            def log_message(self, *args): pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def add(self, name, body, truncate=False):
        self.files['/' + name] = body
        if truncate: self.truncate.add('/' + name)
        return f'http://127.0.0.1:{self.httpd.server_port}/{name}'


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def all_files(folder):
    "Every path under `folder` (hidden temporary files included), relative, as strings."
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob('*'))


def sha(b): return hashlib.sha256(b).hexdigest()


def test_urls_and_paths(tmp_path, monkeypatch):
    assert URLs.PETS == 'https://s3.amazonaws.com/fast-ai-imageclas/oxford-iiit-pet.tgz'
    assert URLs.MNIST_SAMPLE == 'https://s3.amazonaws.com/fast-ai-sample/mnist_sample.tgz'
    assert URLs.IMAGENETTE_160 == 'https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz'
    assert URLs.COCO_TINY == 'https://s3.amazonaws.com/fast-ai-coco/coco_tiny.tgz'
    for name in ['MNIST_TINY', 'IMAGENETTE_320', 'IMAGEWOOF_160', 'CIFAR', 'BIWI_SAMPLE', 'PLANET_TINY',
                 'CAMVID_TINY']:
        assert getattr(URLs, name).startswith('https://s3.amazonaws.com/fast-ai-')
        assert getattr(URLs, name).endswith('.tgz')
    monkeypatch.setenv('MINIFAST_HOME', str(tmp_path))
    assert minifast_home() == tmp_path
    assert URLs.path(URLs.PETS) == tmp_path/'archive'/'oxford-iiit-pet.tgz'
    assert URLs.path(URLs.PETS, c_key='data') == tmp_path/'data'/'oxford-iiit-pet'
    monkeypatch.delenv('MINIFAST_HOME')
    monkeypatch.setenv('HOME', str(tmp_path/'me'))
    assert minifast_home() == tmp_path/'me'/'.minifast'
    with pytest.raises(ValueError, match="c_key='bogus'"): URLs.path(URLs.PETS, c_key='bogus')


def test_untar_data_downloads_checks_extracts_and_caches(server, tmp_path):
    blob = make_tar(FILES)
    url = server.add('tiny.tgz', blob)
    path = untar_data(url, base=tmp_path, size=len(blob), checksum=sha(blob), show_progress=False)
    assert path == tmp_path/'data'/'tiny'
    assert (path/'a.txt').read_bytes() == FILES['tiny/a.txt']
    assert (path/'sub'/'b.txt').read_bytes() == FILES['tiny/sub/b.txt']
    assert (tmp_path/'archive'/'tiny.tgz').read_bytes() == blob
    assert all_files(tmp_path) == ['archive', 'archive/tiny.tgz', 'data', 'data/tiny', 'data/tiny/a.txt',
                                   'data/tiny/sub', 'data/tiny/sub/b.txt']
    assert server.requests == ['/tiny.tgz']

    # Cached: no request at all and no new extraction (which would replace the folder and lose
    # the marker); with the data folder gone, the cached archive is extracted again.
    (path/'marker').write_text('kept')
    assert untar_data(url, base=tmp_path) == path and (path/'marker').read_text() == 'kept'
    (path/'marker').unlink()
    (path/'a.txt').unlink(); (path/'sub'/'b.txt').unlink(); (path/'sub').rmdir(); path.rmdir()
    assert (untar_data(url, base=tmp_path, show_progress=False)/'a.txt').read_bytes() == b'hello'
    assert download_data(url, base=tmp_path) == tmp_path/'archive'/'tiny.tgz'
    assert server.requests == ['/tiny.tgz']

    # force_download fetches and extracts again, replacing the folder with the new content.
    blob2 = make_tar({'tiny/a.txt': b'new'})
    server.add('tiny.tgz', blob2)
    path2 = untar_data(url, base=tmp_path, force_download=True, show_progress=False)
    assert path2 == path and server.requests == ['/tiny.tgz', '/tiny.tgz']
    assert all_files(path) == ['a.txt'] and (path/'a.txt').read_bytes() == b'new'
    assert (tmp_path/'archive'/'tiny.tgz').read_bytes() == blob2


def test_archive_and_data_folders_can_be_moved(server, tmp_path):
    blob = make_tar(FILES)
    url = server.add('tiny.tar.gz', blob)
    path = untar_data(url, archive=tmp_path/'a', data=tmp_path/'d', show_progress=False)
    assert path == tmp_path/'d'/'tiny' and (tmp_path/'a'/'tiny.tar.gz').read_bytes() == blob


@pytest.mark.parametrize('ext,mode', [('tgz', 'w:gz'), ('tar.gz', 'w:gz'), ('tar', 'w'), ('tar.xz', 'w:xz')])
def test_tar_formats_and_flat_archives(server, tmp_path, ext, mode):
    # No single top folder: the content goes directly into the folder named after the archive.
    url = server.add(f'flat.{ext}', make_tar({'a.txt': b'1', 'b/c.txt': b'2'}, mode=mode))
    path = untar_data(url, base=tmp_path, show_progress=False)
    assert path == tmp_path/'data'/'flat'
    assert all_files(path) == ['a.txt', 'b', 'b/c.txt'] and (path/'b'/'c.txt').read_bytes() == b'2'


def test_zip(server, tmp_path):
    url = server.add('pics.zip', make_zip({'pics/x.txt': b'zip!', 'pics/y/z.txt': b'zz'}))
    path = untar_data(url, base=tmp_path, show_progress=False)
    assert path == tmp_path/'data'/'pics' and all_files(path) == ['x.txt', 'y', 'y/z.txt']
    assert (path/'y'/'z.txt').read_bytes() == b'zz'


@pytest.mark.parametrize('how', ['checksum', 'size', 'registry'])
def test_wrong_checksum_leaves_nothing(server, tmp_path, monkeypatch, how):
    blob = make_tar(FILES)
    url = server.add('tiny.tgz', blob)
    kwargs = {}
    if how == 'checksum': kwargs['checksum'] = sha(blob + b'x')
    if how == 'size': kwargs['size'] = len(blob) + 1
    if how == 'registry': monkeypatch.setitem(CHECKSUMS, url, (len(blob), sha(b'other')))
    with pytest.raises(ChecksumError, match='tiny.tgz') as e:
        untar_data(url, base=tmp_path, show_progress=False, **kwargs)
    assert url in str(e.value)
    assert all_files(tmp_path) == ['archive']  # no archive, no .part file, no data folder
    assert server.requests == ['/tiny.tgz']


def test_registry_entry_that_matches_is_accepted(server, tmp_path, monkeypatch):
    blob = make_tar(FILES)
    url = server.add('tiny.tgz', blob)
    monkeypatch.setitem(CHECKSUMS, url, (len(blob), sha(blob)))
    assert (untar_data(url, base=tmp_path, show_progress=False)/'a.txt').exists()
    # A file put by hand in the cache with the wrong size is refused, not extracted.
    (tmp_path/'archive'/'tiny.tgz').write_bytes(blob[:-10])
    with pytest.raises(ChecksumError, match='force_download=True'): download_data(url, base=tmp_path)


def test_truncated_response_raises(server, tmp_path):
    url = server.add('cut.tgz', make_tar(FILES), truncate=True)
    with pytest.raises(DownloadError, match='cut short') as e: untar_data(url, base=tmp_path, show_progress=False)
    assert url in str(e.value)
    assert all_files(tmp_path) == ['archive']


def test_http_error_names_url(server, tmp_path):
    url = server.add('exists.tgz', b'x').replace('exists', 'missing')
    with pytest.raises(DownloadError, match='HTTP 404') as e: download_data(url, base=tmp_path)
    assert url in str(e.value) and all_files(tmp_path) == ['archive']


def test_unreachable_url_names_url_and_what_to_do(tmp_path):
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    url = f'http://127.0.0.1:{port}/pets.tgz'
    with pytest.raises(DownloadError) as e: untar_data(url, base=tmp_path, show_progress=False, timeout=5)
    msg = str(e.value)
    assert url in msg and 'toy_pets' in msg and str(tmp_path/'archive'/'pets.tgz') in msg
    assert all_files(tmp_path) == ['archive']


@pytest.mark.parametrize('files,links,culprit', [
    ({'tiny/ok.txt': b'ok', '../evil.txt': b'bad'}, {}, "'../evil.txt'"),
    ({'tiny/ok.txt': b'ok', 'tiny/../../evil.txt': b'bad'}, {}, "'tiny/../../evil.txt'"),
    ({'/tmp/evil.txt': b'bad'}, {}, 'absolute path'),
    ({'tiny/ok.txt': b'ok'}, {'tiny/link': '../../evil.txt'}, 'link pointing outside'),
    ({'tiny/ok.txt': b'ok'}, {'tiny/link': '/etc/passwd'}, 'link pointing outside'),
])
def test_malicious_tar_is_refused(server, tmp_path, files, links, culprit):
    home = tmp_path/'home'
    url = server.add('evil.tgz', make_tar(files, symlinks=links))
    with pytest.raises(UnsafeArchiveError, match='Refusing to extract') as e:
        untar_data(url, base=home, show_progress=False)
    assert culprit in str(e.value)
    assert all_files(tmp_path) == ['home', 'home/archive', 'home/archive/evil.tgz', 'home/data']
    assert not Path('/tmp/evil.txt').exists() or Path('/tmp/evil.txt').read_bytes() != b'bad'


@pytest.mark.parametrize('files,links,culprit', [
    # Each link target stays inside by name; 'z' escapes only through the link 'a/b/l' on disk,
    # which tarfile's data filter resolves.
    ({'f.txt': b''}, {'a/b/l': '../..', 'z': 'a/b/l/..'}, "'z'"),
    # Inside the extraction folder, but outside the single top folder that becomes the data set.
    ({'d/f.txt': b''}, {'d/up': '..'}, "'d/up'"),
    ({'d/f.txt': b''}, {'d/a/x': '..', 'd/b': 'a/x/..'}, "'d/b'"),
])
def test_links_escaping_on_disk_are_refused(tmp_path, files, links, culprit):
    arc = tmp_path/'trick.tar'
    arc.write_bytes(make_tar(files, mode='w', symlinks=links))
    with pytest.raises(UnsafeArchiveError, match=culprit): extract_archive(arc, tmp_path/'out'/'trick')
    assert all_files(tmp_path/'out') == []


def test_links_inside_are_kept(tmp_path):
    arc = tmp_path/'ok.tar'
    arc.write_bytes(make_tar({'d/f.txt': b'data'}, mode='w', symlinks={'d/g.txt': 'f.txt', 'd/s/h': '../f.txt'}))
    out = extract_archive(arc, tmp_path/'out'/'ok')
    assert (out/'g.txt').is_symlink() and (out/'g.txt').read_bytes() == b'data'
    assert (out/'s'/'h').read_bytes() == b'data'


def test_malicious_zip_is_refused(tmp_path):
    arc = tmp_path/'evil.zip'
    arc.write_bytes(make_zip({'ok.txt': b'ok', '../evil.txt': b'bad'}))
    with pytest.raises(UnsafeArchiveError, match="'../evil.txt'"): extract_archive(arc, tmp_path/'out'/'evil')
    assert all_files(tmp_path) == ['evil.zip', 'out']


def test_damaged_archive_is_not_extracted(tmp_path):
    # A truncated archive put in the cache by hand: the error names it, no data folder appears.
    blob = make_tar({f'tiny/{i}.bin': os.urandom(4000) for i in range(20)})
    (tmp_path/'archive').mkdir()
    (tmp_path/'archive'/'tiny.tgz').write_bytes(blob[:len(blob) // 2])
    with pytest.raises(ValueError, match='damaged') as e:
        untar_data('http://127.0.0.1:9/tiny.tgz', base=tmp_path)  # cached, so the URL is never used
    assert str(tmp_path/'archive'/'tiny.tgz') in str(e.value)
    assert all_files(tmp_path/'data') == []


def test_local_paths_and_file_urls(tmp_path):
    blob = make_tar(FILES)
    src = tmp_path/'src'/'tiny.tgz'
    src.parent.mkdir()
    src.write_bytes(blob)
    home = tmp_path/'home'
    assert (untar_data(src, base=home)/'a.txt').read_bytes() == b'hello'
    assert not (home/'archive').exists()  # a local archive is extracted where it is, not copied
    got = download_data(src.as_uri(), base=tmp_path/'home2', checksum=sha(blob), show_progress=False)
    assert got == tmp_path/'home2'/'archive'/'tiny.tgz' and file_sha256(got) == sha(blob)
    with pytest.raises(FileNotFoundError, match='nope.tgz'): untar_data(tmp_path/'nope.tgz', base=home)


def test_download_url_progress_bar_and_streaming(server, tmp_path, capsys):
    blob = os.urandom(300_000)
    url = server.add('big.bin', blob)
    dest = download_url(url, tmp_path/'big.bin', chunk_size=4096)
    assert dest.read_bytes() == blob and file_sha256(dest, chunk_size=1000) == sha(blob)
    err = capsys.readouterr().err
    assert 'big.bin' in err and '293k' in err.lower()  # 300,000 bytes = 293 KiB, shown by tqdm
    download_url(url, tmp_path/'quiet.bin', show_progress=False)
    assert capsys.readouterr().err == ''


def test_empty_archive_gives_empty_folder(tmp_path):
    (tmp_path/'empty.tgz').write_bytes(make_tar({}))
    (tmp_path/'empty.zip').write_bytes(make_zip({}))
    assert all_files(extract_archive(tmp_path/'empty.tgz', tmp_path/'o'/'a')) == []
    assert all_files(extract_archive(tmp_path/'empty.zip', tmp_path/'o'/'b')) == []
    assert all_files(tmp_path/'o') == ['a', 'b']
