"download_images: against a local server, exactly the good images are saved, each failure is named with its reason."
import http.server
import io
import threading
import time
import warnings

import pytest
from PIL import Image

from minifast.vision.all import L, download_images


def _img(fmt, color):
    b = io.BytesIO()
    Image.new('RGB', (32, 24), color).save(b, fmt)
    return b.getvalue()


JPG, PNG, PNG2 = _img('JPEG', (200, 10, 10)), _img('PNG', (10, 200, 10)), _img('PNG', (10, 10, 200))
ROUTES = {'/good.jpg': ('image/jpeg', JPG), '/pic': ('image/png', PNG), '/flaky.png': ('image/png', PNG2),
          '/slow.jpg': ('image/jpeg', JPG), '/cut.jpg': ('image/jpeg', JPG[:len(JPG) // 2]),
          '/page.jpg': ('text/html; charset=utf-8', b'<!doctype html><title>hi</title>')}


@pytest.fixture
def server():
    hits = {}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a): pass

        def do_GET(self):
            with lock: hits[self.path] = n = hits.get(self.path, 0) + 1
            if self.path == '/flaky.png' and n == 1: return self.send_error(500)
            if self.path == '/slow.jpg': time.sleep(2)
            if self.path not in ROUTES: return self.send_error(404)
            ctype, body = ROUTES[self.path]
            try:
                self.send_response(200)
                self.send_header('Content-Type', ctype)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError): pass  # the client gave up on the slow one

    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try: yield f'http://127.0.0.1:{srv.server_address[1]}', hits
    finally:
        srv.shutdown()
        srv.server_close()


def _run(dest, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        saved = download_images(dest, **kw)
    msgs = [str(x.message) for x in w if 'download_images' in str(x.message)]
    assert len(msgs) <= 1
    reasons = dict(line.split(': ', 1) for line in msgs[0].splitlines()[1:]) if msgs else {}
    return saved, reasons


def test_download_images_saves_good_ones_and_names_each_failure(server, tmp_path):
    base, hits = server
    names = ['good.jpg', 'pic', 'slow.jpg', 'cut.jpg', 'page.jpg', 'missing.jpg', 'flaky.png']
    urls = [f'{base}/{n}' for n in names]
    dest = tmp_path/'new'/'bears'
    saved, reasons = _run(dest, urls=urls, timeout=0.5, retries=1, n_workers=4)
    assert isinstance(saved, L)
    assert [p.name for p in saved] == ['00000000.jpg', '00000001.png', '00000006.png']
    assert sorted(p.name for p in dest.iterdir()) == ['00000000.jpg', '00000001.png', '00000006.png']  # no temp files
    assert [p.read_bytes() for p in saved] == [JPG, PNG, PNG2]
    assert sorted(reasons) == sorted(urls[2:6])
    assert reasons[f'{base}/slow.jpg'] == 'connection failed: timed out'
    assert reasons[f'{base}/cut.jpg'].startswith('not a readable image: ')
    assert reasons[f'{base}/page.jpg'] == 'not an image: Content-Type text/html'
    assert reasons[f'{base}/missing.jpg'].startswith('HTTP 404')
    assert hits['/flaky.png'] == 2 and hits['/missing.jpg'] == 1   # 5xx retried, 4xx not


def test_download_images_url_file_max_pics_and_no_retries(server, tmp_path):
    base, hits = server
    url_file = tmp_path/'urls.txt'
    url_file.write_text(f'{base}/flaky.png\n\n{base}/good.jpg\n{base}/pic\n')
    saved, reasons = _run(tmp_path/'d', url_file=url_file, max_pics=2, retries=0)
    assert [p.name for p in saved] == ['00000001.jpg']
    assert reasons == {f'{base}/flaky.png': 'HTTP 500 (Internal Server Error)'}
    assert '/pic' not in hits and hits['/flaky.png'] == 1
    assert sorted(p.name for p in (tmp_path/'d').iterdir()) == ['00000001.jpg']


def test_download_images_preserve_filename_and_all_good_is_silent(server, tmp_path):
    base, _ = server
    saved, reasons = _run(tmp_path, urls=[f'{base}/good.jpg', f'{base}/flaky.png'], preserve_filename=True)
    assert [p.name for p in saved] == ['good.jpg', 'flaky.png'] and reasons == {}
    assert (tmp_path/'good.jpg').read_bytes() == JPG


def test_download_images_needs_urls(tmp_path):
    with pytest.raises(ValueError, match='url_file'): download_images(tmp_path)
