"""Finding and reading HaMeR's files without executing anything from them.

Layout (the official ``_DATA`` folder, docs/model.md §1)::

    <data_dir>/hamer_ckpts/checkpoints/hamer.ckpt    Lightning checkpoint (only ``state_dict`` is used)
    <data_dir>/hamer_ckpts/model_config.yaml         read from two levels above the .ckpt, like the official code
    <data_dir>/data/mano/MANO_RIGHT.pkl              optional when the checkpoint carries ``mano.*`` buffers
    <data_dir>/data/mano_mean_params.npz             not needed: the checkpoint's ``mano_head.init_*`` replace it

The checkpoint is opened with ``torch.load(mmap=True)`` (tensors stay memory-mapped: no copy, well under a
second) through this module's own restricted unpickler. Before anything is unpickled, the pickle's opcodes are
scanned (`hamer_ros.hamer.untrusted`): a file naming anything that runs code (``os.system``, ``builtins.eval``,
...) is refused, naming it. While unpickling, the tensors' own machinery (torch's tensor rebuild function and
storages, ``collections.OrderedDict``) is the only thing built for real; yacs' ``CfgNode`` (in
``hyper_parameters`` of the official checkpoint, ``save_hyperparameters``) becomes a plain dict; every other
class a training setup may leave outside ``state_dict`` (numpy scalars, pathlib paths, Lightning's AttributeDict,
omegaconf containers, ...) becomes an inert stand-in, ignored with a warning that names it: nothing from the
file is imported or called. A stand-in anywhere on the tensors' path (the top level, ``state_dict`` and what it
holds) refuses the file. The unpickled data is walked with bounded depth and size (crafted files fail fast).
"""
from __future__ import annotations

import pickle
import types
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch

from hamer_ros.provisioning import paths
from hamer_ros.errors import UserError
from hamer_ros.hamer import untrusted
from hamer_ros.hamer.network import HamerNetwork, NetworkConfig

PathLike = Union[str, Path]

CHECKPOINT_IN_DATA_DIR = Path('hamer_ckpts', 'checkpoints', 'hamer.ckpt')
MANO_IN_DATA_DIR = Path('data', 'mano', 'MANO_RIGHT.pkl')
MODEL_CONFIG_NAME = 'model_config.yaml'



class CheckpointError(UserError, ValueError):
    """A checkpoint or model_config.yaml that cannot be used; the message names the file and what to do."""


# state_dict prefixes inference uses (docs/model.md §1.1); everything else (discriminator.*, initialized) is training-only.
INFERENCE_PREFIXES = ('backbone.', 'mano_head.', 'mano.')


@dataclass
class DataFiles:
    """The files one model is made of."""
    checkpoint: Path
    model_config: Optional[Path]   # None: the released configuration values are used
    mano_pkl: Optional[Path]       # None: MANO comes from the checkpoint's buffers


def resolve_data_files(data_dir: Optional[PathLike] = None, checkpoint: Optional[PathLike] = None,
                       mano: Optional[PathLike] = None) -> DataFiles:
    """Finds the checkpoint, its model_config.yaml and MANO_RIGHT.pkl.

    `checkpoint` / `mano` (a .pkl or the folder holding MANO_RIGHT.pkl) override the files of `data_dir`;
    `data_dir` defaults to `hamer_ros.provisioning.paths.data_dir()`.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else paths.data_dir()
    if checkpoint is not None:
        ckpt = Path(checkpoint).expanduser()
        if not ckpt.is_file():
            raise FileNotFoundError(f'HaMeR checkpoint {ckpt} does not exist: check the --checkpoint path')
    else:
        ckpt = root / CHECKPOINT_IN_DATA_DIR
        if not ckpt.is_file():
            raise FileNotFoundError(
                f'no HaMeR checkpoint at {ckpt}: put the official _DATA folder there (it must contain '
                f'{CHECKPOINT_IN_DATA_DIR}), or name another data folder: node parameter data_dir (launch '
                'argument data_dir:=DIR), --data-dir DIR of the commands (or their --checkpoint FILE), or '
                'HAMER_ROS_DATA_DIR for all of them')
    # The official loader reads the config next to `checkpoints/`, not next to the .ckpt (docs/model.md §1).
    config = ckpt.parent.parent / MODEL_CONFIG_NAME
    if mano is not None:
        mano_pkl = Path(mano).expanduser()
        if mano_pkl.is_dir():
            mano_pkl = mano_pkl / MANO_IN_DATA_DIR.name
        if not mano_pkl.is_file():
            raise FileNotFoundError(f'MANO file {mano_pkl} does not exist: pass the path of MANO_RIGHT.pkl '
                                    '(or the folder that holds it) with --mano')
    else:
        candidates = [root / MANO_IN_DATA_DIR]
        if checkpoint is not None:   # a checkpoint inside some _DATA folder: look next to it too
            candidates.insert(0, ckpt.parent.parent.parent / MANO_IN_DATA_DIR)
        mano_pkl = next((c for c in candidates if c.is_file()), None)
    return DataFiles(ckpt, config if config.is_file() else None, mano_pkl)


# ------------------------------------------------------------------------------------------ the checkpoint

class _ConfigNodeStandIn:
    """Stands in for ``yacs.config.CfgNode`` (a dict subclass, pickled as NEWOBJ + SETITEMS + BUILD of its
    instance attributes): "constructing" one yields an empty OrderedDict that receives the items (turned into
    plain dicts by `_plain`). Nothing of yacs is imported."""

    def __new__(cls, *args):
        return OrderedDict()


# What the restricted unpickler builds for real. Storages are resolved by torch.load itself (by name, to a
# dtype holder); these are the other globals torch.save writes for tensors and ordered dicts.
_TENSOR_GLOBALS = {
    'collections.OrderedDict': OrderedDict,
    'torch._utils._rebuild_tensor_v2': torch._utils._rebuild_tensor_v2,
    'torch._utils._rebuild_parameter': torch._utils._rebuild_parameter,
}
_STAND_INS = {'yacs.config.CfgNode': _ConfigNodeStandIn}

MAX_PICKLE_BYTES = 4 << 20      # the official checkpoint's data.pkl is ~70 kB (the tensors are separate records)


def _plain(value):
    """Nested OrderedDict/dict/list/tuple -> plain dicts and lists; ignored stand-ins -> None. Only called on
    data `untrusted.check_bounded` accepted (bounded size, no cycles)."""
    if isinstance(value, untrusted.Inert):
        return None
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


@dataclass
class Checkpoint:
    """What inference needs from a checkpoint file."""
    path: Path
    state_dict: Dict[str, torch.Tensor]   # backbone.*, mano_head.*, mano.* (memory-mapped tensors)
    hyper_parameters: dict = field(default_factory=dict)   # plain dicts (yacs CfgNode mapped), {} if none
    skipped_keys: List[str] = field(default_factory=list)  # training-only entries that were left out
    ignored_globals: List[str] = field(default_factory=list)  # classes outside state_dict read as inert stand-ins


def _data_pickle(path: Path) -> bytes:
    """The pickle of a zip-format torch checkpoint (``<archive>/data.pkl``), size-checked."""
    damaged = (f'{path}: cannot be read as a PyTorch checkpoint (%s); the file is damaged or truncated: download it '
               'again')
    try:
        with zipfile.ZipFile(path) as archive:
            if len({info.filename for info in archive.infolist()}) != len(archive.infolist()):
                # Readers may disagree on which of two same-named records counts: refuse rather than guess.
                raise CheckpointError(damaged % 'the same record name twice')
            names = [info for info in archive.infolist() if info.filename.count('/') == 1
                     and info.filename.endswith('/data.pkl')]
            if len(names) != 1:
                raise CheckpointError(damaged % f'{len(names)} data.pkl records') from None
            if names[0].file_size > MAX_PICKLE_BYTES:
                raise CheckpointError(f'{path}: refused to load: its pickle is {names[0].file_size / 1e6:.0f} MB, far '
                                      f'beyond a HaMeR checkpoint\'s (~0.1 MB; limit {MAX_PICKLE_BYTES >> 20} MB)')
            return archive.read(names[0])
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(damaged % _one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's text, bounded and printable (it may quote the file's bytes)."""
    return untrusted.printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _restricted_pickle_module(path: Path, found: List[untrusted.PickleGlobal]) -> types.ModuleType:
    """A pickle module for torch.load whose Unpickler resolves globals only from the allow-list and the
    stand-ins made for this file's globals; anything else (e.g. a name hidden from the scan) is refused."""
    allowed = dict(_TENSOR_GLOBALS)
    allowed.update(untrusted.DATA_BUILTINS)
    allowed.update(_STAND_INS)
    for item in found:
        allowed.setdefault(item.name, untrusted.inert_class(item.name))

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            found_class = allowed.get(f'{module}.{name}')
            if found_class is None:
                named = untrusted.printable(f'{module}.{name}')
                raise CheckpointError(f'{path}: refused to load: it references {named}, which the opcode scan did '
                                      'not see (a crafted file); nothing was run')
            return found_class

    module = types.ModuleType('hamer_ros_restricted_pickle')
    module.Unpickler = Unpickler
    module.load = lambda file, **kwargs: Unpickler(file, **kwargs).load()
    module.__name__ = 'hamer_ros_restricted_pickle'
    return module


def _refuse_code(path: Path, found: List[untrusted.PickleGlobal]) -> None:
    code = [item for item in found if untrusted.runs_code(item)]
    if code:
        named = ', '.join(f'{item.name} ({item.opcode})' for item in code[:5])
        raise CheckpointError(f'{path}: refused to load: it references {named}: code, not data. Checkpoints are read '
                              'with a restricted unpickler that builds only tensors and plain containers and never '
                              'runs code from the file; use the official hamer.ckpt, or re-save just its state_dict '
                              'with torch.save')


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Loads a HaMeR checkpoint memory-mapped, without executing code; keeps only the inference entries."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'HaMeR checkpoint {path} does not exist')
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f'{path} is not a zip-format PyTorch checkpoint: the file is truncated or damaged '
                              '(download it again), or it was saved in the legacy pre-1.6 format or is no checkpoint '
                              'at all')
    data = _data_pickle(path)
    try:
        found = untrusted.pickle_globals(data)
    except untrusted.UntrustedDataError as exc:
        raise CheckpointError(f'{path}: refused to load: {exc}') from None
    except Exception as exc:   # pickletools' parse errors: not a pickle
        raise CheckpointError(f'{path}: cannot be read as a PyTorch checkpoint ({_one_line(exc)}); the file is '
                              'damaged or truncated: download it again') from None
    _refuse_code(path, found)
    try:
        raw = torch.load(path, map_location='cpu', mmap=True, weights_only=False,
                         pickle_module=_restricted_pickle_module(path, found))
    except CheckpointError:
        raise
    except Exception as exc:   # anything the file's bytes provoke, named in one line
        raise CheckpointError(f'{path}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}: '
                              f'{_one_line(exc)}); the file is damaged or truncated: download it again') from None

    try:   # (path inside the file, stand-in) pairs
        stand_ins = untrusted.check_bounded(raw, str(path), collect=untrusted.Inert)
    except untrusted.UntrustedDataError as exc:
        raise CheckpointError(str(exc)) from None
    on_tensor_path = [node.global_name for where, node in stand_ins if where == '' or where.startswith("['state_dict']")
                      or not (isinstance(raw, Mapping) and isinstance(raw.get('state_dict'), Mapping))]
    if on_tensor_path:
        named = ', '.join(sorted(set(on_tensor_path)))
        raise CheckpointError(f'{path}: refused to load: its tensors come with {named}; a HaMeR state_dict holds '
                              'tensors only (nothing was imported or run)')

    if isinstance(raw, Mapping) and isinstance(raw.get('state_dict'), Mapping):   # Lightning checkpoint
        state_dict, hyper_parameters = raw['state_dict'], raw.get('hyper_parameters') or {}
    elif isinstance(raw, Mapping) and any(str(k).startswith('backbone.') for k in raw):   # a bare state_dict
        state_dict, hyper_parameters = raw, {}
    else:
        keys = untrusted.short_repr(list(raw)[:8]) if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(f'{path}: no HaMeR state_dict in this file (found {keys}); expected a Lightning '
                              "checkpoint with a 'state_dict' entry holding backbone.* and mano_head.* tensors")
    kept, skipped = {}, []
    for key, value in state_dict.items():
        if isinstance(key, str) and key.startswith(INFERENCE_PREFIXES):
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f'{path}: state_dict key {untrusted.short_repr(key)} holds a '
                                      f'{type(value).__name__}, not a tensor')
            kept[key] = value
        else:
            skipped.append(untrusted.short_repr(key) if not isinstance(key, str) else key)
    hyper_parameters = _plain(hyper_parameters) if isinstance(hyper_parameters, Mapping) else {}
    # Every global of the file that got a stand-in, also those inside other stand-ins (whose content is dropped).
    real = set(_TENSOR_GLOBALS) | set(untrusted.DATA_BUILTINS) | set(_STAND_INS)
    ignored = sorted({item.name for item in found if item.name not in real
                      and not (item.name.startswith('torch.') and item.name.endswith('Storage'))})
    if ignored:
        warnings.warn(f'{path}: ignored {", ".join(ignored)} outside the state_dict (training metadata inference '
                      'does not need; read as inert placeholders: nothing was imported or run)', stacklevel=2)
    return Checkpoint(path, kept, hyper_parameters, skipped, ignored)


def expected_network_tensors(config: NetworkConfig) -> Dict[str, Tuple[Tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor `HamerNetwork(config)` needs (built on the meta device: free)."""
    with torch.device('meta'):
        network = HamerNetwork(config)
    return {name: (tuple(t.shape), t.dtype) for name, t in network.state_dict().items()}


def check_network_tensors(checkpoint: Checkpoint, config: NetworkConfig, config_source: str) -> None:
    """Every tensor the network needs is present with the right shape and dtype, or a clear error."""
    for name, (shape, dtype) in expected_network_tensors(config).items():
        tensor = checkpoint.state_dict.get(name)
        if tensor is None:
            raise CheckpointError(f'{checkpoint.path}: key {name!r} is missing (expected {list(shape)} {dtype}); this '
                             'is not a complete HaMeR checkpoint: download hamer.ckpt again')
        if tuple(tensor.shape) != shape:
            raise CheckpointError(f'{checkpoint.path}: key {name!r} has shape {list(tensor.shape)}, expected '
                             f'{list(shape)} for the network described by {config_source}; the checkpoint and '
                             'its model_config.yaml do not belong together')
        if tensor.dtype != dtype:
            raise CheckpointError(f'{checkpoint.path}: key {name!r} is {tensor.dtype}, expected {dtype}')


def load_network(checkpoint: Checkpoint, config: NetworkConfig, config_source: str) -> HamerNetwork:
    """The network with the checkpoint's tensors assigned as they are (no random init, no copy: the module is
    built on the meta device, then its parameters *become* the memory-mapped tensors)."""
    check_network_tensors(checkpoint, config, config_source)
    with torch.device('meta'):
        network = HamerNetwork(config)
    wanted = {k: v for k, v in checkpoint.state_dict.items() if k.startswith(('backbone.', 'mano_head.'))}
    network.load_state_dict(wanted, strict=True, assign=True)
    return network.eval()


# -------------------------------------------------------------------------------------- model_config.yaml

@dataclass(frozen=True)
class ModelSettings:
    """What the inference code takes from model_config.yaml (docs/model.md §1; defaults = the released file)."""
    network: NetworkConfig = NetworkConfig()
    focal_length: float = 5000.0                           # EXTRA.FOCAL_LENGTH, crop camera focal (docs/model.md §5)
    image_mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)   # MODEL.IMAGE_MEAN, RGB
    image_std: Tuple[float, float, float] = (0.229, 0.224, 0.225)    # MODEL.IMAGE_STD, RGB
    source: str = 'the released model_config.yaml values (no model_config.yaml found)'

    @property
    def image_size(self) -> int:
        return self.network.image_size


# Settings with only one supported value: the official defaults that the released yaml leaves unset (docs/model.md §1).
_FIXED_SETTINGS = {
    ('MODEL', 'BACKBONE', 'TYPE'): 'vit',
    ('MODEL', 'MANO_HEAD', 'TYPE'): 'transformer_decoder',
    ('MODEL', 'MANO_HEAD', 'JOINT_REP'): '6d',
    ('MODEL', 'MANO_HEAD', 'TRANSFORMER_INPUT'): 'zero',
    ('MODEL', 'MANO_HEAD', 'IEF_ITERS'): 1,
    ('MODEL', 'BBOX_SHAPE'): [192, 256],
    ('MODEL', 'IMAGE_SIZE'): 256,
}

# Optional hamer_ros keys for other network sizes (the official code hard-codes ViT-H and a 1024-wide
# decoder); absent from the released yaml. Tests use them to describe small checkpoints. Each with the range
# accepted before anything is built: well beyond the released model (ViT-H: 1280 wide, 32 deep, 16 heads).
_SIZE_KEYS = {
    ('MODEL', 'BACKBONE', 'EMBED_DIM'): ('embed_dim', 4096),
    ('MODEL', 'BACKBONE', 'DEPTH'): ('depth', 64),
    ('MODEL', 'BACKBONE', 'NUM_HEADS'): ('num_heads', 64),
    ('MODEL', 'BACKBONE', 'MLP_RATIO'): ('mlp_ratio', 16),
    ('MODEL', 'MANO_HEAD', 'DECODER_DIM'): ('decoder_dim', 4096),
    ('MODEL', 'MANO_HEAD', 'TRANSFORMER_DECODER', 'depth'): ('decoder_depth', 32),
    ('MODEL', 'MANO_HEAD', 'TRANSFORMER_DECODER', 'heads'): ('decoder_heads', 64),
    ('MODEL', 'MANO_HEAD', 'TRANSFORMER_DECODER', 'dim_head'): ('decoder_dim_head', 512),
    ('MODEL', 'MANO_HEAD', 'TRANSFORMER_DECODER', 'mlp_dim'): ('decoder_mlp_dim', 16384),
    ('MANO', 'NUM_HAND_JOINTS'): ('num_hand_joints', 15),
}
# Numbers the crop camera and normalization use: (low, high) inclusive, checked finite.
_NUMBER_RANGES = {
    ('EXTRA', 'FOCAL_LENGTH'): (1.0, 1e6),     # px of the 256 px crop camera; released: 5000
    ('MODEL', 'IMAGE_MEAN'): (0.0, 1.0),       # fractions of 255, RGB
    ('MODEL', 'IMAGE_STD'): (1e-3, 1.0),
}
MAX_CONFIG_BYTES = 256 << 10    # the released model_config.yaml has ~2.6 kB


def _lookup(tree: Mapping, keys: Tuple[str, ...]):
    for key in keys:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def read_model_config(path: Optional[PathLike]) -> ModelSettings:
    """Reads model_config.yaml with ``yaml.safe_load``; None gives the released values."""
    if path is None:
        return ModelSettings()
    import yaml

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise CheckpointError(f'{path}: refused: {size / 1e6:.1f} MB is far beyond a model_config.yaml (~3 kB); '
                                  'use the model_config.yaml of the release')
        tree = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        reason = 'nested too deeply' if isinstance(exc, RecursionError) else _one_line(exc)
        raise CheckpointError(f'{path}: cannot be read as YAML ({reason}); use the model_config.yaml of the '
                              'release') from None
    try:   # alias bombs and deep nesting stop here, before any value is compared or printed
        untrusted.check_bounded(tree, str(path))
    except untrusted.UntrustedDataError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(tree, Mapping):
        raise CheckpointError(f'{path}: expected a YAML mapping (MODEL:, EXTRA:, ...), found {type(tree).__name__}')

    for keys, supported in _FIXED_SETTINGS.items():
        value = _lookup(tree, keys)
        if value is not None and value != supported:
            raise CheckpointError(f'{path}: {".".join(keys)} = {untrusted.short_repr(value)} is not supported (only '
                                  f'{supported!r}, the released HaMeR model)')
    sizes = {}
    for keys, (name, largest) in _SIZE_KEYS.items():
        value = _lookup(tree, keys)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= largest:
                raise CheckpointError(f'{path}: {".".join(keys)} must be an integer from 1 to {largest}, got '
                                      f'{untrusted.short_repr(value)}')
            sizes[name] = value
    network = replace(NetworkConfig(), **sizes)
    if network.embed_dim % network.num_heads:
        raise CheckpointError(f'{path}: MODEL.BACKBONE.EMBED_DIM = {network.embed_dim} is not a multiple of '
                              f'NUM_HEADS = {network.num_heads}')
    context_dim = _lookup(tree, ('MODEL', 'MANO_HEAD', 'TRANSFORMER_DECODER', 'context_dim'))
    if context_dim is not None and context_dim != network.embed_dim:
        raise CheckpointError(f'{path}: MODEL.MANO_HEAD.TRANSFORMER_DECODER.context_dim = '
                              f'{untrusted.short_repr(context_dim)} must equal the backbone width {network.embed_dim}')

    def floats(keys, count, default):
        value = _lookup(tree, keys)
        if value is None:
            return default
        try:
            numbers = tuple(float(v) for v in value) if count else float(value)
        except (TypeError, ValueError):
            numbers = None
        if numbers is None or (count and len(numbers) != count):
            raise CheckpointError(f'{path}: {".".join(keys)} must be {count or "a"} number(s), got '
                                  f'{untrusted.short_repr(value)}')
        low, high = _NUMBER_RANGES[keys]
        if not all(low <= number <= high for number in (numbers if count else (numbers,))):   # NaN fails too
            raise CheckpointError(f'{path}: {".".join(keys)} = {untrusted.short_repr(value)} is out of range: '
                                  f'expected {"each " if count else ""}between {low:g} and {high:g} (the released '
                                  f'value is {default}); use the model_config.yaml of the release')
        return numbers

    defaults = ModelSettings()
    return ModelSettings(network=network,
                         focal_length=floats(('EXTRA', 'FOCAL_LENGTH'), 0, defaults.focal_length),
                         image_mean=floats(('MODEL', 'IMAGE_MEAN'), 3, defaults.image_mean),
                         image_std=floats(('MODEL', 'IMAGE_STD'), 3, defaults.image_std),
                         source=str(path))
