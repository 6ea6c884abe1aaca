"minifast keeps freed large blocks for reuse (glibc `mallopt`), unless MINIFAST_KEEP_FREED_MEMORY=0 says not to."
import os
import subprocess
import sys

import pytest

_GLIBC = sys.platform.startswith('linux') and os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc')
pytestmark = pytest.mark.skipif(not _GLIBC,
                                reason='the setting exists only with glibc')

# In a fresh process: import minifast, then how many bytes glibc maps on their own for one tensor of MB megabytes.
PROBE = """
import ctypes, torch
import minifast.vision.all
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks',
                                               'uordblks', 'fordblks', 'keepcost')]
info = ctypes.CDLL('libc.so.6').mallinfo2
info.restype = Info
before = info().hblkhd
t = torch.empty(MB * 2**20, dtype=torch.uint8)
print(info().hblkhd - before)
"""


def _mapped(env_value, mb=64):
    env = {k: v for k, v in os.environ.items() if k != 'MINIFAST_KEEP_FREED_MEMORY'}
    if env_value is not None: env['MINIFAST_KEEP_FREED_MEMORY'] = env_value
    out = subprocess.run([sys.executable, '-c', PROBE.replace('MB', str(mb))], env=env, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[-1])


def test_import_keeps_large_blocks_in_the_heap():
    assert _mapped(None) == 0


def test_blocks_over_256_mb_are_still_mapped_and_returned():
    assert _mapped(None, mb=300) >= 300 * 2**20


def test_opt_out_leaves_glibc_mapping_large_blocks():
    assert _mapped('0') >= 64 * 2**20


def test_keep_freed_memory_can_be_turned_off_and_on():
    from minifast.core import keep_freed_memory
    try:
        assert keep_freed_memory(False) is True
    finally:
        assert keep_freed_memory(True) is True


RELEASE_PROBE = """
import os, torch
from minifast.core import release_free_memory
def rss_mb(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
blocks = [torch.ones(2**20) for _ in range(50)]   # 50 x 4 MB, written so their pages are resident
pin = torch.ones(2**20)                            # a live block above them: the heap's top cannot shrink
before = rss_mb()
del blocks
kept = rss_mb()
assert release_free_memory()
print(before - kept, before - rss_mb())
"""


def test_release_free_memory_hands_freed_heap_blocks_back():
    env = {k: v for k, v in os.environ.items() if k != 'MINIFAST_KEEP_FREED_MEMORY'}
    out = subprocess.run([sys.executable, '-c', RELEASE_PROBE], env=env, capture_output=True, text=True, check=True)
    dropped_by_free, dropped_by_release = map(float, out.stdout.split())
    assert dropped_by_free < 50, "kept for reuse after del"
    assert dropped_by_release > 150, "malloc_trim gave the 200 MB back"
