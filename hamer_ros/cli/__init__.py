"""`python -m hamer_ros <command>`: one entry point, one module per command (imported only when used)."""
import argparse
import importlib
import sys

from hamer_ros.errors import UserError


# command name -> module under hamer_ros.cli exposing add_arguments(parser) and run(args) -> int
COMMANDS = {
    'predict': ('predict', 'run HaMeR on given boxes of one image and write the raw outputs (.npz)'),
    'detect': ('detect', 'find hands with MediaPipe in one image and write them as JSON'),
    'live': ('live', 'webcam/video/stream demo without ROS: overlay window, or --headless with a rate printout'),
    'mano-to-obj': ('mano_to_obj', 'write the MANO template hand (optionally reshaped by betas) as an OBJ mesh'),
    'infer': ('infer', 'hand meshes for an image, a folder, a video or a bag: overlays, meshes, records, a bag'),
    'evaluate': ('evaluate', 'accuracy on a hand benchmark (FreiHAND, HO3D, InterHand2.6M): PA-MPJPE, F-scores...'),
    'check': ('check', 'what works here (weights, MediaPipe, device, ROS) and how to fix what does not'),
    'export-onnx': ('export_onnx', 'export the HaMeR network to ONNX (dynamic batch) and check it with onnxruntime'),
    'setup-weights': ('setup_weights', 'install HaMeR\'s data (download, or --from a tarball/folder) and verify it'),
    'view-mano': ('view_mano', 'draw the MANO template hand with its 21 joints labelled into a PNG'),
}


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m hamer_ros', description=__doc__)
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        # add_arguments is cheap by contract: heavy imports happen in run()
        importlib.import_module(f'hamer_ros.cli.{module_name}').add_arguments(p)
    return parser


def main(argv=None) -> int:
    from hamer_ros.runtime_tuning import tune_process
    tune_process()   # before any command imports PyTorch: idle OpenMP threads sleep, freed memory is reused
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f'hamer_ros.cli.{args._module}')
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserError as exc:
        # The package's own user errors carry what to do; a traceback would only hide it. Anything else (a
        # bug here, or an error inside PyTorch/NumPy/OpenCV) propagates with its traceback.
        print(f'hamer_ros {args.command}: error: {exc}', file=sys.stderr)
        return 2
