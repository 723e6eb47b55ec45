"""Finding and reading HaMeR's files without executing anything from them.

Layout (the official ``_DATA`` folder, SPEC §1)::

    <data_dir>/hamer_ckpts/checkpoints/hamer.ckpt    Lightning checkpoint (only ``state_dict`` is used)
    <data_dir>/hamer_ckpts/model_config.yaml         read from two levels above the .ckpt, like the official code
    <data_dir>/data/mano/MANO_RIGHT.pkl              optional when the checkpoint carries ``mano.*`` buffers
    <data_dir>/data/mano_mean_params.npz             not needed: the checkpoint's ``mano_head.init_*`` replace it

The checkpoint is opened with ``torch.load(mmap=True, weights_only=True)``: tensors stay memory-mapped (no copy,
loading takes well under a second) and PyTorch's restricted unpickler builds nothing but tensors and plain
containers. The one class a real HaMeR checkpoint is expected to carry besides those, the yacs ``CfgNode`` in
``hyper_parameters`` (SPEC §1, ``save_hyperparameters``), is allow-listed under its name as a stand-in that
builds a plain dict instead. Any other class or function in the file (e.g. a pickle whose ``__reduce__``
calls ``os.system``) makes the load fail with an error naming the file and the global; nothing from the file
is imported or called.
"""
from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch

from hamer_ros import paths
from hamer_ros.hamer.network import HamerNetwork, NetworkConfig

PathLike = Union[str, Path]

CHECKPOINT_IN_DATA_DIR = Path('hamer_ckpts', 'checkpoints', 'hamer.ckpt')
MANO_IN_DATA_DIR = Path('data', 'mano', 'MANO_RIGHT.pkl')
MODEL_CONFIG_NAME = 'model_config.yaml'

# state_dict prefixes inference uses (SPEC §1.1); everything else (discriminator.*, initialized) is training-only.
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
    `data_dir` defaults to `hamer_ros.paths.data_dir()`.
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
    # The official loader reads the config next to `checkpoints/`, not next to the .ckpt (SPEC §1).
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
    """Allow-listed under the name ``yacs.config.CfgNode``. yacs pickles a CfgNode (a dict subclass) as
    NEWOBJ + SETITEMS + BUILD(instance attributes); PyTorch's restricted unpickler only lets SETITEMS/BUILD
    touch dict/OrderedDict, so "constructing" one yields an empty OrderedDict that receives the items
    (turned into plain dicts by `_plain`). Nothing of yacs is imported."""

    def __new__(cls, *args):
        return OrderedDict()


# Config containers a Lightning checkpoint may carry in hyper_parameters, mapped to plain containers.
_STAND_INS = [(_ConfigNodeStandIn, 'yacs.config.CfgNode')]


def _plain(value):
    """Nested OrderedDict/dict/list/tuple -> plain dicts and lists (drops the stand-ins' attributes)."""
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


def _forbidden_globals(path: Path) -> List[str]:
    """Classes/functions the file would need that are not allowed (a static scan: nothing is executed)."""
    try:
        with torch.serialization.safe_globals(_STAND_INS):
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:   # a file too damaged to scan gets the generic message
        return []


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Loads a HaMeR checkpoint memory-mapped, without executing code; keeps only the inference entries."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'HaMeR checkpoint {path} does not exist')
    if not zipfile.is_zipfile(path):
        raise ValueError(f'{path} is not a zip-format PyTorch checkpoint: the file is truncated or damaged '
                         '(download it again), or it was saved in the legacy pre-1.6 format or is no checkpoint '
                         'at all')
    try:
        with torch.serialization.safe_globals(_STAND_INS):
            raw = torch.load(path, map_location='cpu', mmap=True, weights_only=True)
    except pickle.UnpicklingError as exc:
        forbidden = _forbidden_globals(path)
        what = f'it references {", ".join(forbidden)}' if forbidden else f'{str(exc).splitlines()[0]}'
        raise ValueError(f'{path}: refused to load: {what}. Checkpoints are read with a restricted unpickler '
                         'that builds only tensors and plain containers and never runs code from the file; '
                         'use the official hamer.ckpt, or re-save just its state_dict with torch.save') from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ValueError(f'{path}: cannot be read as a PyTorch checkpoint ({exc}); the file is damaged or '
                         'truncated: download it again') from None

    if isinstance(raw, Mapping) and isinstance(raw.get('state_dict'), Mapping):   # Lightning checkpoint
        state_dict, hyper_parameters = raw['state_dict'], raw.get('hyper_parameters') or {}
    elif isinstance(raw, Mapping) and any(str(k).startswith('backbone.') for k in raw):   # a bare state_dict
        state_dict, hyper_parameters = raw, {}
    else:
        keys = list(raw)[:8] if isinstance(raw, Mapping) else type(raw).__name__
        raise ValueError(f'{path}: no HaMeR state_dict in this file (found {keys}); expected a Lightning '
                         "checkpoint with a 'state_dict' entry holding backbone.* and mano_head.* tensors")
    kept, skipped = {}, []
    for key, value in state_dict.items():
        if isinstance(key, str) and key.startswith(INFERENCE_PREFIXES):
            if not isinstance(value, torch.Tensor):
                raise ValueError(f'{path}: state_dict key {key!r} holds a {type(value).__name__}, not a tensor')
            kept[key] = value
        else:
            skipped.append(str(key))
    hyper_parameters = _plain(hyper_parameters) if isinstance(hyper_parameters, Mapping) else {}
    return Checkpoint(path, kept, hyper_parameters, skipped)


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
            raise ValueError(f'{checkpoint.path}: key {name!r} is missing (expected {list(shape)} {dtype}); this '
                             'is not a complete HaMeR checkpoint: download hamer.ckpt again')
        if tuple(tensor.shape) != shape:
            raise ValueError(f'{checkpoint.path}: key {name!r} has shape {list(tensor.shape)}, expected '
                             f'{list(shape)} for the network described by {config_source}; the checkpoint and '
                             'its model_config.yaml do not belong together')
        if tensor.dtype != dtype:
            raise ValueError(f'{checkpoint.path}: key {name!r} is {tensor.dtype}, expected {dtype}')


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
    """What the inference code takes from model_config.yaml (SPEC §1; defaults = the released file)."""
    network: NetworkConfig = NetworkConfig()
    focal_length: float = 5000.0                           # EXTRA.FOCAL_LENGTH, crop camera focal (SPEC §5)
    image_mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)   # MODEL.IMAGE_MEAN, RGB
    image_std: Tuple[float, float, float] = (0.229, 0.224, 0.225)    # MODEL.IMAGE_STD, RGB
    source: str = 'the released model_config.yaml values (no model_config.yaml found)'

    @property
    def image_size(self) -> int:
        return self.network.image_size


# Settings with only one supported value: the official defaults that the released yaml leaves unset (SPEC §1).
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
# decoder); absent from the released yaml. Tests use them to describe small checkpoints.
_SIZE_KEYS = {
    ('MODEL', 'BACKBONE', 'EMBED_DIM'): 'embed_dim',
    ('MODEL', 'BACKBONE', 'DEPTH'): 'depth',
    ('MODEL', 'BACKBONE', 'NUM_HEADS'): 'num_heads',
    ('MODEL', 'BACKBONE', 'MLP_RATIO'): 'mlp_ratio',
    ('MODEL', 'MANO_HEAD', 'DECODER_DIM'): 'decoder_dim',
    ('MODEL', 'MANO_HEAD', 'TRANSFORMER_DECODER', 'depth'): 'decoder_depth',
    ('MODEL', 'MANO_HEAD', 'TRANSFORMER_DECODER', 'heads'): 'decoder_heads',
    ('MODEL', 'MANO_HEAD', 'TRANSFORMER_DECODER', 'dim_head'): 'decoder_dim_head',
    ('MODEL', 'MANO_HEAD', 'TRANSFORMER_DECODER', 'mlp_dim'): 'decoder_mlp_dim',
    ('MANO', 'NUM_HAND_JOINTS'): 'num_hand_joints',
}


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
        tree = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f'{path}: cannot be read as YAML ({exc}); use the model_config.yaml of the release') \
            from None
    if not isinstance(tree, Mapping):
        raise ValueError(f'{path}: expected a YAML mapping (MODEL:, EXTRA:, ...), found {type(tree).__name__}')

    for keys, supported in _FIXED_SETTINGS.items():
        value = _lookup(tree, keys)
        if value is not None and value != supported:
            raise ValueError(f'{path}: {".".join(keys)} = {value!r} is not supported (only {supported!r}, the '
                             'released HaMeR model)')
    sizes = {}
    for keys, name in _SIZE_KEYS.items():
        value = _lookup(tree, keys)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f'{path}: {".".join(keys)} must be a positive integer, got {value!r}')
            sizes[name] = value
    network = replace(NetworkConfig(), **sizes)
    context_dim = _lookup(tree, ('MODEL', 'MANO_HEAD', 'TRANSFORMER_DECODER', 'context_dim'))
    if context_dim is not None and context_dim != network.embed_dim:
        raise ValueError(f'{path}: MODEL.MANO_HEAD.TRANSFORMER_DECODER.context_dim = {context_dim!r} must equal '
                         f'the backbone width {network.embed_dim}')

    def floats(keys, count, default):
        value = _lookup(tree, keys)
        if value is None:
            return default
        try:
            numbers = tuple(float(v) for v in value) if count else float(value)
        except (TypeError, ValueError):
            numbers = None
        if numbers is None or (count and len(numbers) != count):
            raise ValueError(f'{path}: {".".join(keys)} must be {count or "a"} number(s), got {value!r}')
        return numbers

    defaults = ModelSettings()
    return ModelSettings(network=network,
                         focal_length=floats(('EXTRA', 'FOCAL_LENGTH'), 0, defaults.focal_length),
                         image_mean=floats(('MODEL', 'IMAGE_MEAN'), 3, defaults.image_mean),
                         image_std=floats(('MODEL', 'IMAGE_STD'), 3, defaults.image_std),
                         source=str(path))
