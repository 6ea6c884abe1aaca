import os

import matplotlib
import pytest

matplotlib.use('Agg')


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    "Every test gets its own MINIFAST_HOME, so nothing is read from or written to the user's ~/.minifast."
    monkeypatch.setenv('MINIFAST_HOME', str(tmp_path_factory.mktemp('minifast_home')))
