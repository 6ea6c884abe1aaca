"""`minifast train` on the built-in data: the export, results and pictures, `minifast predict` on the export, and
`--resume` after checkpoints were lost or cut short ends with the weights of the run that was never stopped."""
import json
import shutil

import pytest
import torch

from minifast.cli import _train_data, main
from minifast.data.toy_pets import draw_toy_pet


@pytest.fixture
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the same float reductions in every run
    yield
    torch.set_num_threads(n)


def _weights(path): return torch.load(path, map_location='cpu', weights_only=True)['model']


def _max_diff(a, b): return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_train_writes_its_outputs_predict_reads_the_export_and_resume_ends_where_the_full_run_did(
        tmp_path, capsys, single_thread):
    images, out = tmp_path/'images', tmp_path/'run'
    images.mkdir()
    for breed in ('Abyssinian', 'beagle', 'pug'):  # three of the built-in breeds: a small confusion matrix
        for n in range(1, 11): draw_toy_pet(breed, n).save(images/f'{breed}_{n}.jpg')
    args = ['train', str(images), '--label-re', r'(.+)_\d+.jpg$', '--size', '32', '--presize', '40', '--epochs', '2',
            '--bs', '8', '--num-workers', '0', '--out', str(out)]
    assert main(args) == 0
    for name in ('model.pkl', 'results.json', 'loss.png', 'confusion_matrix.png'): assert (out/name).stat().st_size > 0
    ck = out/'checkpoints'
    assert sorted(p.name for p in ck.iterdir()) == ['frozen_0.pth', 'unfrozen_0.pth', 'unfrozen_1.pth']
    results = json.loads((out/'results.json').read_text())
    assert [(r['phase'], r['epoch']) for r in results['history']] == [('frozen', 0), ('unfrozen', 0), ('unfrozen', 1)]
    assert results['resumed_from'] is None and results['final'] == results['history'][-1]
    assert set(results['final']) == {'phase', 'epoch', 'train_loss', 'valid_loss', 'error_rate'}

    image = sorted(images.iterdir())[0]
    capsys.readouterr()
    assert main(['predict', str(out/'model.pkl'), str(image)]) == 0
    fname, label, prob = capsys.readouterr().out.strip().splitlines()[-1].split('\t')
    assert fname == str(image) and label in results['vocab'] and 0 < float(prob) <= 1

    full = _weights(ck/'unfrozen_1.pth')
    # lost in the second phase: the resume runs the first phase's end (no epoch) and the whole second phase
    for p in ck.glob('unfrozen_*'): p.unlink()
    capsys.readouterr()
    assert main(args + ['--resume']) == 0
    said = capsys.readouterr().out
    assert f"--resume: continuing from {ck/'frozen_0.pth'} (frozen phase, after epoch 0)." in said
    assert _max_diff(_weights(ck/'unfrozen_1.pth'), full) <= 1e-5
    again = json.loads((out/'results.json').read_text())
    assert again['history'] == results['history'] and again['resumed_from'] == str(ck/'frozen_0.pth')

    # killed while writing: a checkpoint cut short and a temporary file are passed over, the one before is used
    (ck/'unfrozen_1.pth').write_bytes((ck/'unfrozen_0.pth').read_bytes()[:5000])
    (ck/'.unfrozen_2.pth.x7.tmp').write_bytes(b'PK')
    assert main(args + ['--resume']) == 0
    said = capsys.readouterr().out
    assert 'unfinished save' in said and 'unfrozen_1.pth: it is cut short or damaged' in said
    assert 'Resuming from unfrozen_0.pth, the last good checkpoint, instead of unfrozen_1.pth.' in said
    assert _max_diff(_weights(ck/'unfrozen_1.pth'), full) <= 1e-5
    assert _max_diff(load_export_weights(out/'model.pkl'), full) <= 1e-5


def load_export_weights(path):
    from minifast.learner import load_learner
    return {k: v.contiguous() for k, v in load_learner(path).model.state_dict().items()}


def test_train_labels_from_a_csv_or_the_folders_and_bad_inputs_get_clear_errors(tmp_path, colour_folder, capsys):
    (colour_folder/'labels.csv').write_text('image,colour\n' + ''.join(
        f'{c}/{c}_{i}.jpg,{c.upper()}\n' for c in ('red', 'blue') for i in range(8)))
    common = dict(size=16, presize=16, bs=4, valid_pct=0.25, seed=0, num_workers=0)
    dls = _train_data(colour_folder, None, None, 'labels.csv', 'image', 'colour', **common)
    assert list(dls.vocab) == ['BLUE', 'RED'] and len(dls.train_ds) + len(dls.valid_ds) == 16
    assert list(_train_data(colour_folder, None, 'folder', None, '0', '1', **common).vocab) == ['blue', 'red']
    shutil.copy(colour_folder/'labels.csv', tmp_path/'elsewhere.csv')
    (colour_folder/'red'/'red_7.jpg').unlink()
    base = ['train', str(colour_folder), '--out', str(tmp_path/'out')]
    for extra, message in [(['--csv', 'labels.csv', '--fn-col', 'image', '--label-col', 'colour'],
                            'image files do not exist, e.g. '),
                           (['--csv', 'labels.csv', '--label-col', 'shade'], "--label-col 'shade' is neither a column"),
                           (['--csv', 'nothere.csv'], '--csv nothere.csv: no such file')]:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert main(['train', str(tmp_path/'missing'), '--out', str(tmp_path/'out')]) == 2
    assert 'is not a folder of images' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: main(base + ['--label-re', 'x', '--label-from', 'folder'])
    assert e.value.code == 2 and 'not allowed with' in capsys.readouterr().err
