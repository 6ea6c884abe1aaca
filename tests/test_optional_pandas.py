"pandas is optional: minifast imports and trains without it; the three DataFrame results say how to get it."
import configparser
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minifast.interpret import ClassificationInterpretation

ROOT = Path(__file__).resolve().parents[1]

_WITHOUT_PANDAS = r"""
import sys
sys.modules['pandas'] = None   # `import pandas` now raises ImportError, as when it is not installed
import torch
from minifast.vision.all import *
import minifast.cli, minifast.interpret, minifast.callback.misc, minifast.callback.tta

def message(f):
    try: f()
    except ImportError as e: return str(e)
    raise AssertionError(f"{f} did not raise ImportError")

interp = ClassificationInterpretation(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]), torch.zeros(4),
                                      decoded=torch.tensor([0, 1, 1, 1]), vocab=['a', 'b'])
interp.print_classification_report()                               # text, no pandas needed
assert interp.classification_report(output_dict=True)['accuracy'] == 0.75
logger = CSVLogger(); logger.path = 'history.csv'
for name, f in [('classification_report', interp.classification_report), ('read_log', logger.read_log),
                ('ensemble_preds', lambda: ensemble_preds([object()]))]:
    print('MESSAGE', name, message(f))
"""


def test_library_works_and_says_pip_install_pandas_without_it(tmp_path):
    out = subprocess.run([sys.executable, '-c', _WITHOUT_PANDAS], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ['precision', 'recall', 'f1-score', 'support'] and lines[5].startswith('weighted avg')
    messages = {l.split()[1]: l for l in lines if l.startswith('MESSAGE ')}
    assert set(messages) == {'classification_report', 'read_log', 'ensemble_preds'}
    for name, m in messages.items():
        assert 'pandas' in m and 'is not installed' in m and 'pip install pandas' in m and "minifast[pandas]" in m, m
    report = messages['classification_report']
    assert 'print_classification_report()' in report and 'output_dict=True' in report
    assert 'csv.DictReader' in messages['read_log'] and 'history.csv' in messages['read_log']


def test_importing_the_library_does_not_import_pandas():
    code = ("import sys\nfrom minifast.vision.all import *\nimport minifast.cli\n"
            "assert 'pandas' not in sys.modules, 'pandas imported eagerly'")
    subprocess.run([sys.executable, '-c', code], check=True, timeout=300)


def test_pandas_is_an_extra_not_a_requirement():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT/'setup.cfg')
    names = lambda s: {line.split('>')[0].split('=')[0].split('<')[0].strip() for line in s.strip().splitlines()}
    assert 'pandas' not in names(cfg['options']['install_requires'])
    extras = cfg['options.extras_require']
    assert 'pandas' in names(extras['pandas']) and 'pandas' in names(extras['dev'])
    ini = configparser.ConfigParser()
    ini.read(ROOT/'settings.ini')
    assert 'pandas' not in ini['DEFAULT']['requirements'] and 'pandas' in ini['DEFAULT']['dev_requirements']


def _interp():
    g = torch.Generator().manual_seed(0)
    targs = torch.randint(0, 4, (60,), generator=g)
    decoded = torch.where(torch.rand(60, generator=g) < 0.4, targs, torch.randint(0, 4, (60,), generator=g))
    decoded[decoded == 3] = 2   # class 'd' is never predicted: precision and F1 0, as in scikit-learn
    return ClassificationInterpretation(torch.zeros(60, 4), targs, torch.zeros(60), decoded=decoded,
                                        vocab=['a', 'b', 'c', 'd']), targs, decoded


def test_classification_report_dict_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip('sklearn.metrics')
    interp, targs, decoded = _interp()
    ours = interp.classification_report(output_dict=True)
    theirs = sklearn_metrics.classification_report(targs.numpy(), decoded.numpy(), labels=[0, 1, 2, 3],
                                                   target_names=['a', 'b', 'c', 'd'], output_dict=True, zero_division=0)
    assert ours.keys() == theirs.keys()
    assert ours['accuracy'] == pytest.approx(theirs['accuracy'])
    for k in ours:
        if k == 'accuracy': continue
        for col in ('precision', 'recall', 'f1-score', 'support'):
            assert ours[k][col] == pytest.approx(theirs[k][col]), (k, col)


def test_printed_report_is_the_dataframe_as_text(capsys):
    pytest.importorskip('pandas')
    interp, _, _ = _interp()
    interp.print_classification_report()
    printed = capsys.readouterr().out.rstrip('\n')
    assert printed == interp.classification_report().to_string(float_format=lambda x: f"{x:.2f}", na_rep='')
