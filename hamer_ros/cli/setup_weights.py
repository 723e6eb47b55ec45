"""`python -m hamer_ros setup-weights [--from TARBALL_OR_FOLDER] [--data-dir DIR]`: install and verify HaMeR's data.

It also provisions the MediaPipe hand model (as `check --provision`; the node never fetches it). Without
--from it downloads the official demo data (hamer_demo_data.tar.gz, the URL of the official
fetch_demo_data.sh). The data folder defaults to HAMER_ROS_DATA_DIR or ~/.local/share/hamer_ros/_DATA, where the
node and the other commands look by default. Exit status: 0 when the folder is complete, 1 when something is
still missing (printed with its fix).
"""
from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument('--from', dest='source', type=Path, metavar='TARBALL_OR_FOLDER',
                        help='hamer_demo_data.tar.gz (or .tar) or a _DATA folder you already have; without it the '
                        'official archive is downloaded')
    parser.add_argument('--data-dir', type=Path, help='where to install (default: HAMER_ROS_DATA_DIR or '
                        '~/.local/share/hamer_ros/_DATA)')
    parser.add_argument('--url', help='download from this URL instead of the official one')
    parser.add_argument('--keep-download', action='store_true', help='keep the downloaded archive')
    parser.add_argument('--verify-only', action='store_true', help='install nothing, only check the data folder')
    parser.add_argument('--no-hand-model', action='store_true',
                        help='do not provision the MediaPipe hand model (python -m hamer_ros check --provision does it '
                        'later; it reads a registry package once)')


def run(args) -> int:
    from hamer_ros.provisioning import paths, weights

    data_dir = (args.data_dir or paths.data_dir()).expanduser()
    if not args.verify_only:
        if args.source is not None:
            installed = weights.install(args.source, data_dir)
        else:
            archive = weights.download(args.url or weights.OFFICIAL_URL, data_dir.parent)
            try:
                installed = weights.install(archive, data_dir)
            finally:
                if not args.keep_download:
                    archive.unlink(missing_ok=True)
        print(f'installed {len(installed)} file(s) into {data_dir}')
    checks = weights.verify(data_dir)
    print(f'HaMeR data folder {data_dir}:')
    for check in checks:
        print(check.line('  '))
    print(_provision_hand_model(build=not (args.verify_only or args.no_hand_model)).line('  '))
    if weights.ready(checks):
        print('ready: the node and `python -m hamer_ros infer` will use these weights by default'
              + ('' if args.data_dir is None else f' (or with --data-dir {data_dir} / data_dir:={data_dir})'))
        return 0
    print('not ready: see the fixes above')
    return 1


def _provision_hand_model(build: bool):
    """The MediaPipe hand model too is provisioned here, at set-up time: the node never fetches anything."""
    from hamer_ros.provisioning.weights import Check

    try:
        from hamer_ros.detection.model import ensure_hand_landmarker_model
        from hamer_ros.detection.search_models import ensure_search_models
        model = ensure_hand_landmarker_model(provision=build)
        search_models = ensure_search_models(provision=build)
        return Check('MediaPipe hand models', True, f'{model}; hand search: {len(search_models)} models in '
                     f'{next(iter(search_models.values())).parent}', required=False)
    except (ImportError, ValueError, RuntimeError, OSError) as exc:
        return Check('MediaPipe hand model', False, str(exc), 'python -m hamer_ros check --provision',
                     required=False)
