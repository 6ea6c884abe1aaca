"`from minifast.vision.all import *` gives a notebook the basics fastai's star-import gives, with fastai's behaviour."
import functools
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

BASICS = ['torch', 'nn', 'F', 'np', 'partial', 'Path', 'L', 'tensor', 'first', 'set_seed', 'to_cpu', 'to_np',
          'to_device', 'default_device', 'image2tensor', 'show_image', 'show_images', 'plt', 'pd', 're',
          'array', 'noop', 'store_attr', 'ifnone', 'tuplify', 'detuplify', 'range_of', 'FileSplitter', 'EndSplitter']


def _star():
    ns = {}
    exec('from minifast.vision.all import *', ns)
    return ns


def _run(code, **env):
    "Run `code` in a fresh interpreter (matplotlib on Agg); its stdout, or an AssertionError with its stderr."
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, 'MPLBACKEND': 'Agg', **env})
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize('name', [n for n in BASICS if n != 'image2tensor'])
def test_star_import_gives_the_name(name):
    assert name in _star()


def test_star_import_gives_image2tensor():
    from PIL import Image
    image2tensor = _star()['image2tensor']
    rgb = image2tensor(Image.new('RGB', (5, 3), (1, 2, 3)))
    assert rgb.shape == (3, 3, 5) and rgb.dtype == torch.uint8 and rgb[:, 0, 0].tolist() == [1, 2, 3]
    assert image2tensor(Image.new('L', (5, 3))).shape == (1, 3, 5)


def test_modules_and_stdlib_names_are_the_real_ones():
    ns = _star()
    assert ns['torch'] is torch and ns['np'] is np and ns['nn'] is torch.nn and ns['F'] is torch.nn.functional
    assert ns['partial'] is functools.partial and ns['Path'] is pathlib.Path
    assert ns['Path']('.').ls() is not None   # fastcore's Path.ls, which fastbook uses


def test_numpy_and_fastcore_basics_are_the_real_ones():
    import fastcore.basics
    ns = _star()
    assert ns['array'] is np.array
    for name in ('noop', 'store_attr', 'ifnone', 'tuplify', 'detuplify', 'range_of'):
        assert ns[name] is getattr(fastcore.basics, name), name
    assert ns['ifnone'](None, 3) == 3 and ns['noop'](5) == 5 and ns['range_of']('abc') == [0, 1, 2]


def test_L_is_fastcores_list():
    from fastcore.foundation import L as fastcore_L
    L = _star()['L']
    assert L is fastcore_L and L([5, 6, 7])[[0, 2]] == [5, 7]


def test_tensor_builds_from_lists_scalars_arrays_and_elements():
    tensor = _star()['tensor']
    assert tensor([1, 2]).tolist() == [1, 2] and tensor(1, 2, 3).tolist() == [1, 2, 3]
    assert tensor([[1, 2], [3, 4]]).shape == (2, 2) and tensor(3).ndim == 0
    assert tensor(np.array([1.5, 2.5])).dtype == torch.float32, "float64 arrays become float32"
    t = torch.arange(3)
    assert tensor(t) is t
    assert tensor([1, 2], dtype=torch.float64).dtype == torch.float64


def test_first_is_the_first_element_or_none():
    first = _star()['first']
    assert first([7, 8]) == 7 and first([]) is None and first(x for x in [1, 2, 3] if x > 1) == 2
    assert first([1, 2, 3], lambda o: o > 1) == 2


def test_to_cpu_and_to_np_work_on_nested_structures():
    ns = _star()
    b = {'x': (torch.ones(2, requires_grad=True), [torch.tensor(3)]), 'name': 'a'}
    cpu = ns['to_cpu'](b)
    assert cpu['x'][0].device.type == 'cpu' and isinstance(cpu['x'], tuple) and cpu['name'] == 'a'
    a = ns['to_np'](b)
    assert isinstance(a['x'][0], np.ndarray) and a['x'][0].tolist() == [1.0, 1.0] and a['x'][1][0] == 3
    assert isinstance(a['x'], tuple) and isinstance(a['x'][1], list) and a['name'] == 'a'


def test_devices():
    ns = _star()
    assert ns['default_device']() == torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    assert ns['to_device']([torch.zeros(1)], 'cpu')[0].device.type == 'cpu'


def test_set_seed_repeats_python_numpy_and_torch_draws():
    import random
    set_seed = _star()['set_seed']
    draws = lambda: (random.random(), np.random.rand(), torch.rand(2).tolist(), torch.nn.Linear(2, 2).weight.tolist())
    set_seed(42); one = draws()
    set_seed(42); assert draws() == one
    set_seed(7); assert draws() != one


def test_set_seed_reproducible_makes_cudnn_deterministic():
    set_seed = _star()['set_seed']
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True
        set_seed(0, reproducible=True)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally: torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def test_show_image_and_show_images_draw(tmp_path):
    import matplotlib.pyplot as real_plt
    ns = _star()
    ax = ns['show_image'](torch.rand(3, 8, 8), title='x')
    assert ax.get_title() == 'x'
    fig = ns['show_images']([torch.rand(3, 8, 8)] * 3, titles=['a', 'b', 'c'])
    assert [a.get_title() for a in fig.axes[:3]] == ['a', 'b', 'c']
    real_plt.close('all')


def test_plt_and_pd_load_matplotlib_and_pandas_on_first_use():
    out = _run("import sys\nfrom minifast.vision.all import *\n"
               "print(sorted(m for m in ('matplotlib.pyplot', 'pandas') if m in sys.modules))\n"
               "lines = plt.plot([1, 2])\n"
               "df = pd.DataFrame({'a': [1]})\n"
               "print(sorted(m for m in ('matplotlib.pyplot', 'pandas') if m in sys.modules))\n"
               "import matplotlib.pyplot, pandas\n"
               "assert lines[0].get_ydata().tolist() == [1, 2] and plt.gcf() is matplotlib.pyplot.gcf()\n"
               "assert type(df) is pandas.DataFrame and isinstance(df, pd.DataFrame)\n"
               "assert pd.DataFrame is pandas.DataFrame and pd.__version__ == pandas.__version__\n"
               "assert 'read_csv' in dir(pd) and df['a'].tolist() == [1]\n")
    assert out.split('\n')[:2] == ['[]', "['matplotlib.pyplot', 'pandas']"]


def test_plt_and_pd_work_when_the_modules_were_imported_before():
    _run("import pandas, matplotlib.pyplot as real_plt\nfrom minifast.vision.all import *\n"
         "assert pd.DataFrame is pandas.DataFrame and plt.subplots is real_plt.subplots\n"
         "pd.options.display.max_rows = 7\nassert pandas.get_option('display.max_rows') == 7\n")


def test_pd_without_pandas_says_how_to_install_it():
    out = _run("import sys\nsys.modules['pandas'] = None\nfrom minifast.vision.all import *\n"
               "assert getattr(pd, '_repr_html_', None) is None\n"
               "try: pd.DataFrame({'a': [1]})\nexcept ImportError as e: print(e)\n"
               "else: raise AssertionError('no ImportError')\n")
    assert 'pip install pandas' in out and 'not installed' in out and out.startswith('pd ')
