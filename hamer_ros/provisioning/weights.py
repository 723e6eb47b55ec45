"""Installing and checking HaMeR's data folder (`python -m hamer_ros setup-weights`, `check`).

The data folder has the official `_DATA` layout (hamer_ros.hamer.checkpoint) at
`hamer_ros.provisioning.paths.data_dir()`
(`HAMER_ROS_DATA_DIR` overrides it). Sources:
  - the official demo-data tarball, downloaded from the URL of the official `fetch_demo_data.sh`
    (geopavlakos/hamer); it holds `_DATA/hamer_ckpts/...`, `_DATA/data/...` and the official demo's ViTPose
    weights, which hamer_ros does not use and skips;
  - a tarball or folder the user already has (the same `_DATA` content, with or without the `_DATA/` level).
MANO_RIGHT.pkl is optional: the released checkpoint carries MANO as buffers (docs/model.md §1.1).

Archives are extracted member by member into a staging folder and refused as a whole when any member has an
absolute path, a `..` component, or is a link or device (nothing can land outside the data folder), appears
twice, declares a size far beyond the official archive's (`MAX_MEMBER_BYTES` and the totals below), or does not
fit the free disk space (checked from its header, before it is written). Zip archives are refused with what to do
instead. The staged files are verified (checkpoint, config, MANO) together with the installed files they do not
replace, and moved into place only when they pass, each with an atomic rename: a garbage checkpoint never
replaces a working one.
"""
from __future__ import annotations

import errno
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, List, Optional

from hamer_ros.errors import InputError, MissingFileError, SetupError
from hamer_ros.hamer.checkpoint import CHECKPOINT_IN_DATA_DIR, MANO_IN_DATA_DIR, MODEL_CONFIG_NAME

# geopavlakos/hamer, fetch_demo_data.sh (`?dl=1` asks the file host for the file rather than its web page).
OFFICIAL_URL = 'https://www.dropbox.com/s/6zejmxu0aur3568/hamer_demo_data.tar.gz?dl=1'
# The parts of `_DATA` that hamer_ros reads; everything else in the archive is skipped.
USED_FOLDERS = ('hamer_ckpts', 'data')
MEAN_PARAMS_IN_DATA_DIR = Path('data', 'mano_mean_params.npz')
_STAGING_NAME = '.setup-weights.partial'

Log = Callable[[str], None]


@dataclass
class Check:
    """One line of a verification: what, whether it is fine, details, and the fix when it is not."""
    name: str
    ok: bool
    detail: str
    fix: str = ''
    required: bool = True

    def line(self, indent: str = '') -> str:
        state = 'OK' if self.ok else ('MISSING' if self.required else 'optional, absent')
        text = f'{indent}{state:<17} {self.name}: {self.detail}'
        return text + (f'\n{indent}{"":<18}fix: {self.fix}' if self.fix and not self.ok else '')


# ------------------------------------------------------------------------------------------- extraction

# Bounds for what an archive may hold, far beyond the official one, so that a crafted or damaged archive (a
# sparse member declaring 50 GB, a small gzip of many GB of zeros, millions of empty members) is refused from
# its headers instead of filling the disk. Sizes assumed for the official hamer_demo_data.tar.gz: its largest
# member is hamer.ckpt, 2.7 GB; the parts hamer_ros uses (hamer_ckpts/, data/) are about 2.8 GB; the whole
# archive, ViTPose weights included, under 10 GB; a few dozen members.
MAX_MEMBER_BYTES = 8 << 30        # one member (declared size in its header)
MAX_INSTALL_BYTES = 12 << 30      # all members written (the used parts)
MAX_ARCHIVE_BYTES = 32 << 30      # all members read, skipped ones included
MAX_MEMBERS = 100_000
FREE_SPACE_MARGIN = 256 << 20     # left free on the disk after a member is written

_ZIP_MAGIC = (b'PK\x03\x04', b'PK\x05\x06')
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES)


def _gb(size: int) -> str:
    return f'{size / 1e9:.1f} GB'


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _check_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse before writing `needed` bytes into `folder` when the disk has not that much (plus a margin)."""
    free = _free_bytes(folder)
    if needed + FREE_SPACE_MARGIN > free:
        raise SetupError(f'not enough free disk space in {folder}: {what} needs {_gb(needed)}, '
                         f'{_gb(free)} free. Free some space (or install elsewhere with --data-dir). '
                         'Nothing was installed')


def _relative_data_path(name: str, where: str) -> Optional[PurePosixPath]:
    """Where an archive member goes inside the data folder (None: not a part hamer_ros uses).

    Raises InputError for names that could escape the destination."""
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(('/', '\\')) or '..' in path.parts:
        raise InputError(f'{where}: refused: member {name!r} has an absolute path or a ".." component '
                         '(a damaged or malicious archive). Nothing was installed')
    parts = [p for p in path.parts if p not in ('.', '')]
    if '_DATA' in parts:
        parts = parts[parts.index('_DATA') + 1:]
    if not parts or parts[0] not in USED_FOLDERS:
        return None
    return PurePosixPath(*parts)


class _StagedFiles:
    """The data paths written into the staging folder, refusing the same path twice and a path that is both a
    file and a folder: the archive as a whole is refused, before anything is installed."""

    def __init__(self, where: str):
        self.where = where
        self.paths: List[PurePosixPath] = []
        self._files = set()
        self._folders = set()

    def add(self, relative: PurePosixPath, member_name: str) -> None:
        if relative in self._files:
            raise InputError(f'{self.where}: refused: {relative} appears twice in the archive (member '
                             f'{member_name!r}); the official archive holds each file once. Nothing was installed')
        parents = set(relative.parents) - {PurePosixPath('.')}
        if relative in self._folders or parents & self._files:
            raise InputError(f'{self.where}: refused: {relative} (member {member_name!r}) is both a file and a '
                             'folder in the archive. Nothing was installed')
        self._files.add(relative)
        self._folders |= parents
        self.paths.append(relative)


def _refuse_unsupported_archive(archive: Path) -> None:
    with open(archive, 'rb') as f:
        magic = f.read(4)
    if magic in _ZIP_MAGIC:
        raise InputError(f'{archive} is a zip archive: setup-weights reads the official hamer_demo_data.tar.gz '
                         '(or a .tar). Unpack the zip and pass its _DATA folder with --from, or download the '
                         'official archive again')


def _extract_tarball(archive: Path, staging: Path, log: Log) -> List[PurePosixPath]:
    """The used members of a (compressed) tarball, written under `staging`; returns their data paths."""
    _refuse_unsupported_archive(archive)
    staged, skipped = _StagedFiles(str(archive)), set()
    members = read_bytes = written_bytes = 0
    try:
        # Streaming mode: one pass over a multi-GB archive, no seeking.
        with tarfile.open(archive, mode='r|*') as tar:
            for member in tar:
                members += 1
                relative = _relative_data_path(member.name, str(archive))
                if not (member.isfile() or member.isdir()):
                    raise InputError(f'{archive}: refused: member {member.name!r} is a link or a special file; '
                                     'the official archive holds plain files only. Nothing was installed')
                read_bytes += member.size
                if members > MAX_MEMBERS or member.size > MAX_MEMBER_BYTES or read_bytes > MAX_ARCHIVE_BYTES:
                    raise InputError(
                        f'{archive}: refused: ' + (
                            f'more than {MAX_MEMBERS} members' if members > MAX_MEMBERS else
                            f'member {member.name!r} declares {_gb(member.size)}, more than the '
                            f'{_gb(MAX_MEMBER_BYTES)} allowed for one file' if member.size > MAX_MEMBER_BYTES else
                            f'its members hold more than {_gb(MAX_ARCHIVE_BYTES)} in all')
                        + ' (the official archive holds a few dozen files, the largest hamer.ckpt of 2.7 GB). '
                        'Nothing was installed')
                if member.isdir():
                    continue
                if relative is None:
                    skipped.add('/'.join(PurePosixPath(member.name).parts[:2]))
                    continue
                staged.add(relative, member.name)
                written_bytes += member.size
                if written_bytes > MAX_INSTALL_BYTES:
                    raise InputError(f'{archive}: refused: the parts hamer_ros uses hold more than '
                                     f'{_gb(MAX_INSTALL_BYTES)} (about 2.8 GB in the official archive). '
                                     'Nothing was installed')
                _check_free_space(staging, member.size, f'{relative}')
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                try:
                    with open(target, 'wb') as out:
                        shutil.copyfileobj(source, out, length=16 << 20)
                except OSError as exc:
                    if exc.errno not in _WRITE_ERRNOS:
                        raise       # reading the archive failed
                    raise SetupError(f'cannot write {target} ({exc.strerror}): free some space or install '
                                     'elsewhere with --data-dir. Nothing was installed') from None
                log(f'  extracted {relative} ({member.size / 1e6:.1f} MB)')
    except (tarfile.TarError, EOFError) as exc:
        raise InputError(f'{archive}: cannot be read as a tarball ({exc}); the file is damaged or truncated: '
                         'download it again') from None
    except OSError as exc:     # zlib/bz2/lzma errors while decompressing
        raise InputError(f'{archive}: cannot be read as a tarball ({exc}); the file is damaged or truncated: '
                         'download it again') from None
    if skipped:
        log(f'  skipped (not used by hamer_ros): {", ".join(sorted(skipped))}')
    return staged.paths


def _collect_folder(folder: Path, staging: Path, log: Log) -> List[PurePosixPath]:
    """The used files of a `_DATA` folder (or the folder holding `_DATA`), hard-linked into `staging` when on
    the same file system (no second copy of 2.7 GB), else copied."""
    root = folder / '_DATA' if (folder / '_DATA').is_dir() else folder
    if not any((root / name).is_dir() for name in USED_FOLDERS):
        raise MissingFileError(f'{folder} holds neither _DATA/ nor hamer_ckpts/ or data/: give the official '
                               '_DATA folder (or the hamer_demo_data.tar.gz tarball)')
    written = []
    for name in USED_FOLDERS:
        for path in sorted((root / name).rglob('*')) if (root / name).is_dir() else ():
            if not path.is_file():
                continue
            relative = PurePosixPath(path.relative_to(root).as_posix())
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path.resolve(), target)
                how = 'linked'
            except OSError:
                _check_free_space(staging, path.stat().st_size, f'copying {relative}')
                shutil.copyfile(path, target)
                how = 'copied'
            written.append(relative)
            log(f'  {how} {relative}')
    return written


# Verification lines and the data file each one judges: a file from the source whose line fails is not installed.
_CHECKED_FILES = {'HaMeR checkpoint': PurePosixPath(CHECKPOINT_IN_DATA_DIR.as_posix()),
                  'model_config.yaml': PurePosixPath(CHECKPOINT_IN_DATA_DIR.parent.parent.as_posix(),
                                                     MODEL_CONFIG_NAME),
                  'MANO': PurePosixPath(MANO_IN_DATA_DIR.as_posix())}


def _verify_staging(source: Path, staging: Path, data_dir: Path, written: List[PurePosixPath]) -> None:
    """Check the install-to-be before it replaces anything: the staged files, completed by the installed files
    they do not replace (hard links), verified as a data folder. A checkpoint, config or MANO file from the
    source that fails its check refuses the whole install: the current install stays as it is."""
    for name in USED_FOLDERS:
        for path in sorted((data_dir / name).rglob('*')) if (data_dir / name).is_dir() else ():
            target = staging / path.relative_to(data_dir)
            if path.is_file() and not target.exists():
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.link(path, target)
                except OSError:
                    pass    # a file/folder clash, or another file system: the new files are verified on their own
    new = set(written)
    for check in verify(staging):
        if not check.ok and check.required and _CHECKED_FILES.get(check.name) in new:
            detail = check.detail.replace(str(staging), str(data_dir))
            raise InputError(f'{source}: refused: its {_CHECKED_FILES[check.name]} does not pass verification '
                             f'({detail}); the data folder {data_dir} was left as it was. Download the archive '
                             'again')


def install(source, data_dir, log: Log = print) -> List[Path]:
    """Install HaMeR's data from a tarball or folder into `data_dir`; returns the installed files.

    The files are extracted into a staging folder inside `data_dir`, verified there (together with the installed
    files they do not replace), and only then moved into place: a refused or damaged source leaves the data
    folder as it was."""
    source, data_dir = Path(source).expanduser(), Path(data_dir).expanduser()
    if not source.exists():
        raise MissingFileError(f'{source} does not exist: give the path of hamer_demo_data.tar.gz or of a _DATA '
                               'folder')
    if source.is_dir() and (source.resolve() == data_dir.resolve() or
                            (source / '_DATA').resolve() == data_dir.resolve()):
        log(f'{source} is the data folder itself: nothing to install')
        return []
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / _STAGING_NAME
    shutil.rmtree(staging, ignore_errors=True)     # left by an interrupted install
    staging.mkdir()
    try:
        log(f'installing from {source} into {data_dir}')
        written = (_collect_folder(source, staging, log) if source.is_dir()
                   else _extract_tarball(source, staging, log))
        if not written:
            raise InputError(f'{source} holds none of {", ".join(f"_DATA/{n}/" for n in USED_FOLDERS)}: is it '
                             'the HaMeR demo data (hamer_demo_data.tar.gz)?')
        _verify_staging(source, staging, data_dir, written)
        for relative in written:    # refuses a path that is a file here but a folder in the source, before moving
            for parent in [data_dir / p for p in reversed(relative.parents) if str(p) != '.']:
                if parent.exists() and not parent.is_dir():
                    raise InputError(f'{data_dir}: {parent} is a file where {source} has a folder: move it away '
                                     'and run setup-weights again. Nothing was installed')
        installed = []
        for relative in written:
            target = data_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, target)
            installed.append(target)
        return installed
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download(url: str, folder: Path, log: Log = print, timeout: float = 30.0) -> Path:
    """Download `url` into `folder` (temporary name until complete); returns the file."""
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / 'hamer_demo_data.tar.gz'
    partial = folder / '.hamer_demo_data.tar.gz.partial'
    log(f'downloading {url}')
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, 'wb') as out:
            total = int(response.headers.get('Content-Length') or 0) or None
            with tqdm(total=total, unit='B', unit_scale=True, desc='download') as progress:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    progress.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, 'reason', exc)
        raise SetupError(
            f'cannot download the HaMeR demo data from {url} ({reason}). On a machine with internet access '
            f'download it (the official fetch_demo_data.sh does: wget {url.split("?")[0]}), copy the file here '
            'and run: python -m hamer_ros setup-weights --from hamer_demo_data.tar.gz') from None
    os.replace(partial, target)
    return target


# ------------------------------------------------------------------------------------------ verification

def verify(data_dir) -> List[Check]:
    """What the data folder provides, checked by loading (checkpoint tensors memory-mapped, checked against
    the network's expected names/shapes on the meta device: the model itself is not built)."""
    from hamer_ros.hamer import checkpoint as ckpt_io
    from hamer_ros.hamer import mano as mano_lib

    data_dir = Path(data_dir).expanduser()
    install_fix = (f'python -m hamer_ros setup-weights --data-dir {data_dir} (downloads them) or add '
                   '--from hamer_demo_data.tar.gz')
    checks = []
    checkpoint_path = data_dir / CHECKPOINT_IN_DATA_DIR
    config_path = checkpoint_path.parent.parent / MODEL_CONFIG_NAME
    settings = None
    try:
        settings = ckpt_io.read_model_config(config_path if config_path.is_file() else None)
        checks.append(Check('model_config.yaml', True, str(config_path) if config_path.is_file() else
                            'absent: the released configuration values are used', required=False))
    except ValueError as exc:
        checks.append(Check('model_config.yaml', False, str(exc), install_fix))

    loaded = None
    if not checkpoint_path.is_file():
        checks.append(Check('HaMeR checkpoint', False, f'{checkpoint_path} not found', install_fix))
    else:
        try:
            loaded = ckpt_io.read_checkpoint(checkpoint_path)
            if settings is not None:
                ckpt_io.check_network_tensors(loaded, settings.network, settings.source)
            size = checkpoint_path.stat().st_size / 1e9
            checks.append(Check('HaMeR checkpoint', True, f'{checkpoint_path} ({size:.2f} GB, '
                                f'{len(loaded.state_dict)} inference tensors, all expected ones present)'))
        except ValueError as exc:
            loaded = None
            checks.append(Check('HaMeR checkpoint', False, str(exc), install_fix))

    mano_in_checkpoint = loaded is not None and mano_lib.mano_from_state_dict(loaded.state_dict) is not None
    pkl = data_dir / MANO_IN_DATA_DIR
    pkl_detail, pkl_ok = f'{pkl} not found', False
    if pkl.is_file():
        try:
            mano_lib.load_mano_pkl(pkl)
            pkl_detail, pkl_ok = f'{pkl} (loads)', True
        except (ValueError, OSError) as exc:
            pkl_detail = str(exc)
    if mano_in_checkpoint:
        checks.append(Check('MANO', True, 'from the checkpoint\'s mano.* buffers' +
                            (f'; also {pkl_detail}' if pkl.is_file() else ' (MANO_RIGHT.pkl not needed)')))
    elif loaded is None:
        checks.append(Check('MANO', pkl_ok, f'{pkl_detail} (the released checkpoint carries MANO itself)',
                            required=False))
    else:
        checks.append(Check('MANO', pkl_ok, f'the checkpoint has no mano.* buffers, and {pkl_detail}',
                            f'register at the MANO website, download MANO_RIGHT.pkl (mano_v1_2) and put it at {pkl}'))
    return checks


def ready(checks: List[Check]) -> bool:
    return all(check.ok or not check.required for check in checks)
