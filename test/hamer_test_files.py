"""Small HaMeR data folders for the loading/CLI tests: the real `_DATA` layout and file formats, tiny network.

`write_small_data_dir` saves a Lightning-style checkpoint (state_dict with training-only entries, a yacs
CfgNode in hyper_parameters) of `HamerModel.small_random` plus a model_config.yaml that declares the small sizes.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from hamer_ros.hamer.checkpoint import CHECKPOINT_IN_DATA_DIR
from hamer_ros.hamer.model import HamerModel
from hamer_ros.hamer.network import NetworkConfig

SMALL = NetworkConfig.small()

SMALL_MODEL_CONFIG = textwrap.dedent(f"""\
    EXTRA:
      FOCAL_LENGTH: 5000
    MODEL:
      IMAGE_SIZE: 256
      IMAGE_MEAN: [0.485, 0.456, 0.406]
      IMAGE_STD: [0.229, 0.224, 0.225]
      BACKBONE:
        TYPE: vit
        EMBED_DIM: {SMALL.embed_dim}
        DEPTH: {SMALL.depth}
        NUM_HEADS: {SMALL.num_heads}
      MANO_HEAD:
        TYPE: transformer_decoder
        DECODER_DIM: {SMALL.decoder_dim}
        TRANSFORMER_DECODER:
          depth: {SMALL.decoder_depth}
          heads: {SMALL.decoder_heads}
          mlp_dim: {SMALL.decoder_mlp_dim}
          dim_head: {SMALL.decoder_dim_head}
          context_dim: {SMALL.embed_dim}
    """)

# A stand-in for yacs with the real CfgNode's pickled structure (dict subclass + instance attributes, see
# yacs/config.py): pickling depends only on the class's module/name, its base and its __dict__.
FAKE_YACS = textwrap.dedent("""\
    class CfgNode(dict):
        def __init__(self, init_dict=None, key_list=None, new_allowed=False):
            init_dict = dict(init_dict or {})
            for key, value in init_dict.items():
                if type(value) is dict:
                    init_dict[key] = CfgNode(value)
            super().__init__(init_dict)
            self.__dict__['__immutable__'] = False
            self.__dict__['__deprecated_keys__'] = set()
            self.__dict__['__renamed_keys__'] = {}
            self.__dict__['__new_allowed__'] = new_allowed
    """)


def mano_buffers(model: HamerModel) -> dict:
    """The `mano.*` entries HaMeR's state_dict holds (docs/model.md §1.1 names)."""
    mano = model.mano
    return {'mano.shapedirs': torch.from_numpy(mano.shapedirs), 'mano.faces_tensor': torch.from_numpy(mano.faces),
            'mano.v_template': torch.from_numpy(mano.v_template), 'mano.J_regressor': torch.from_numpy(mano.J_regressor),
            'mano.posedirs': torch.from_numpy(mano.posedirs), 'mano.parents': torch.from_numpy(mano.parents),
            'mano.lbs_weights': torch.from_numpy(mano.lbs_weights),
            'mano.extra_joints_idxs': torch.tensor([744, 320, 443, 554, 671]),
            'mano.joint_map': torch.tensor([0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20])}


def small_state_dict(seed: int = 0, with_mano: bool = True) -> dict:
    """What Lightning would save for a small HAMER: network, training-only entries, MANO buffers."""
    model = HamerModel.small_random(seed)
    state = {'initialized': torch.tensor(False)}
    state.update({k: v.clone() for k, v in model.core.network.state_dict().items()})
    state['discriminator.D_conv1.weight'] = torch.randn(32, 9, 1, 1)
    if with_mano:
        state.update(mano_buffers(model))
    return state


def save_checkpoint(path: Path, state_dict: dict, cfg: dict = None) -> Path:
    """torch.save a Lightning-style checkpoint; `cfg` goes into hyper_parameters as a (fake) yacs CfgNode,
    pickled in a child process so that this process never imports the fake yacs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if cfg is None:
        torch.save({'state_dict': state_dict, 'epoch': 0, 'global_step': 0}, path)
        return path
    module_dir = path.parent / '_fake_yacs'
    (module_dir / 'yacs').mkdir(parents=True, exist_ok=True)
    (module_dir / 'yacs' / '__init__.py').write_text('')
    (module_dir / 'yacs' / 'config.py').write_text(FAKE_YACS)
    tensors = path.parent / '_state.pt'
    torch.save(state_dict, tensors)
    script = ('import ast, sys, torch; sys.path.insert(0, sys.argv[1]); from yacs.config import CfgNode; '
              'cfg = CfgNode(ast.literal_eval(sys.argv[2])); cfg.__dict__["__deprecated_keys__"].add("OLD.KEY"); '
              'torch.save({"state_dict": torch.load(sys.argv[3]), "hyper_parameters": {"cfg": cfg}, '
              '"hparams_name": "kwargs", "epoch": 0, "global_step": 0}, sys.argv[4])')
    subprocess.run([sys.executable, '-c', script, str(module_dir), repr(cfg), str(tensors), str(path)], check=True)
    tensors.unlink()
    return path


def write_small_data_dir(root: Path, seed: int = 0, with_mano: bool = True, cfg: dict = None) -> Path:
    """A `_DATA` folder (hamer_ckpts/checkpoints/hamer.ckpt + hamer_ckpts/model_config.yaml) of a small model."""
    save_checkpoint(root / CHECKPOINT_IN_DATA_DIR, small_state_dict(seed, with_mano), cfg)
    (root / 'hamer_ckpts' / 'model_config.yaml').write_text(SMALL_MODEL_CONFIG)
    return root
