"""`python -m hamer_ros`: the package's own user errors are one line (exit 2), anything else keeps its traceback."""
import subprocess
import sys

import numpy as np
import pytest

from hamer_ros import errors
from hamer_ros.cli import main
from hamer_ros.cli import view_mano

from offline_helpers import ROOT


def test_errors_of_other_libraries_keep_their_traceback(monkeypatch, tmp_path):
    def numpy_bug(args):
        return np.linalg.inv(np.zeros((2, 2)))     # LinAlgError, a ValueError: a bug, not a user error
    monkeypatch.setattr(view_mano, 'run', numpy_bug)
    with pytest.raises(np.linalg.LinAlgError, match='Singular matrix'):
        main(['view-mano', '--out', str(tmp_path / 'x.png')])

    def runtime_bug(args):
        raise RuntimeError('an internal invariant broke')
    monkeypatch.setattr(view_mano, 'run', runtime_bug)
    with pytest.raises(RuntimeError, match='invariant'):
        main(['view-mano', '--out', str(tmp_path / 'x.png')])


def test_user_errors_are_one_line(monkeypatch, tmp_path, capsys):
    def user_error(args):
        raise errors.InputError('--size 5 is too small: use 100 or more')
    monkeypatch.setattr(view_mano, 'run', user_error)
    assert main(['view-mano', '--out', str(tmp_path / 'x.png')]) == 2
    assert capsys.readouterr().err == 'hamer_ros view-mano: error: --size 5 is too small: use 100 or more\n'
    # The subclasses are also the builtin exceptions callers catch.
    assert issubclass(errors.InputError, ValueError) and issubclass(errors.MissingFileError, FileNotFoundError)
    assert issubclass(errors.SetupError, RuntimeError) and issubclass(errors.InputError, errors.UserError)


def test_module_entry_point(tmp_path):
    """Through `python -m hamer_ros`: a user error of the package is one line, without a traceback; a crash shows its
    traceback (tested in-process above)."""
    result = subprocess.run([sys.executable, '-m', 'hamer_ros', 'infer', str(tmp_path / 'missing.png'), '--out',
                             str(tmp_path / 'out')], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f'hamer_ros infer: error: input {tmp_path / "missing.png"} '
                                                  'does not exist']
