"`minifast demo` end to end at a tiny size, and `minifast predict` on its export."
import json
import subprocess
import sys

from minifast.cli import main, run_demo


def test_demo_runs_end_to_end_and_predict_uses_the_export(tmp_path, capsys):
    out = tmp_path/'demo'
    lines = []
    res = run_demo(out=out, epochs=1, size=32, presize=40, bs=16, n_per_breed=4, lr_find_iters=8, num_workers=0,
                   print_fn=lines.append)
    for name in ('show_batch.png', 'lr_find.png', 'loss.png', 'confusion_matrix.png', 'most_confused.txt', 'model.pkl',
                 'results.json'):
        assert (out/name).stat().st_size > 0, name
    saved = json.loads((out/'results.json').read_text())
    assert 0 <= saved['error_rate'] <= 1
    assert saved['prediction']['label'] == res['prediction']['label']
    assert any('fine_tune(1)' in l for l in lines) and lines[-1].startswith('Done in')
    image = res['prediction']['file']
    capsys.readouterr()  # drop the demo's tables
    assert main(['predict', str(out/'model.pkl'), image]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1].split('\t')
    assert printed[0] == image and printed[1] == res['prediction']['label']


def test_command_line_help_and_bad_arguments(capsys):
    import pytest
    with pytest.raises(SystemExit) as e: main(['demo', '--help'])
    assert e.value.code == 0 and '--no-pretrained' in capsys.readouterr().out
    bad = subprocess.run([sys.executable, '-c', 'from minifast.cli import main; main(["demo", "--epochs", "two"])'],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and '--epochs' in bad.stderr
