"""Loading HaMeR's files: layout, memory-mapped restricted checkpoint reading, config, clear refusals."""
import os
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch

from hamer_ros.hamer import checkpoint as ckpt_io
from hamer_ros.hamer.model import HamerModel
from hamer_ros.hamer.network import NetworkConfig
from hamer_test_files import SMALL, save_checkpoint, small_state_dict, write_small_data_dir

CFG = {'MODEL': {'IMAGE_SIZE': 256, 'IMAGE_MEAN': [0.485, 0.456, 0.406]}, 'EXTRA': {'FOCAL_LENGTH': 5000},
       'MANO': {'MODEL_PATH': 'data/mano', 'NUM_HAND_JOINTS': 15}}


class _RunsShellCommand:
    """A pickle that would run a shell command when unpickled by an unrestricted loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.fixture(scope='module')
def small_data_dir(tmp_path_factory):
    return write_small_data_dir(tmp_path_factory.mktemp('small') / '_DATA', cfg=CFG)


def test_lightning_checkpoint_with_yacs_cfgnode_loads_memory_mapped(small_data_dir):
    path = small_data_dir / ckpt_io.CHECKPOINT_IN_DATA_DIR
    loaded = ckpt_io.read_checkpoint(path)
    # The CfgNode came back as plain nested dicts with its values.
    cfg = loaded.hyper_parameters['cfg']
    assert type(cfg) is dict and type(cfg['MODEL']) is dict
    assert cfg == CFG
    # Training-only entries are skipped; the inference ones are all there.
    assert sorted(loaded.skipped_keys) == ['discriminator.D_conv1.weight', 'initialized']
    expected = small_state_dict(0)
    assert set(loaded.state_dict) == {k for k in expected if k.startswith(('backbone.', 'mano_head.', 'mano.'))}
    for key, value in loaded.state_dict.items():
        assert torch.equal(value, expected[key]), key
    # Parameters become the loaded tensors themselves (no random init, no copy).
    network = ckpt_io.load_network(loaded, SMALL, 'test config')
    assert network.backbone.pos_embed.data_ptr() == loaded.state_dict['backbone.pos_embed'].data_ptr()
    assert not any(p.is_meta for p in network.state_dict().values())


def test_resolve_official_layout_and_explicit_paths(small_data_dir, mano_only_data_dir, tmp_path):
    files = ckpt_io.resolve_data_files(small_data_dir)
    assert files.checkpoint == small_data_dir / 'hamer_ckpts' / 'checkpoints' / 'hamer.ckpt'
    assert files.model_config == small_data_dir / 'hamer_ckpts' / 'model_config.yaml'   # two levels up
    assert files.mano_pkl is None
    # Explicit files: a checkpoint elsewhere has no config next to it; --mano may name the folder.
    lone = tmp_path / 'elsewhere' / 'x.ckpt'
    lone.parent.mkdir()
    shutil.copy(files.checkpoint, lone)
    explicit = ckpt_io.resolve_data_files(checkpoint=lone, mano=mano_only_data_dir / 'data' / 'mano')
    assert explicit == ckpt_io.DataFiles(lone, None, mano_only_data_dir / 'data' / 'mano' / 'MANO_RIGHT.pkl')
    # The environment variable picks the default data folder.
    os.environ['HAMER_ROS_DATA_DIR'] = str(small_data_dir)
    try:
        assert ckpt_io.resolve_data_files().checkpoint == files.checkpoint
    finally:
        del os.environ['HAMER_ROS_DATA_DIR']


def test_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'no HaMeR checkpoint at .*hamer_ckpts/checkpoints/hamer.ckpt.*--data-dir'):
        ckpt_io.resolve_data_files(tmp_path)
    with pytest.raises(FileNotFoundError, match=r'nope.ckpt does not exist.*--checkpoint'):
        ckpt_io.resolve_data_files(checkpoint=tmp_path / 'nope.ckpt')
    with pytest.raises(FileNotFoundError, match=r'MANO file .*MANO_RIGHT.pkl does not exist.*--mano'):
        write_small_data_dir(tmp_path / '_DATA')
        ckpt_io.resolve_data_files(tmp_path / '_DATA', mano=tmp_path)


def test_truncated_checkpoint_is_refused_with_file_name(small_data_dir, tmp_path):
    data = (small_data_dir / ckpt_io.CHECKPOINT_IN_DATA_DIR).read_bytes()
    truncated = tmp_path / 'truncated.ckpt'
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r'truncated\.ckpt is not a zip-format PyTorch checkpoint: the file is truncated'):
        ckpt_io.read_checkpoint(truncated)
    # Damaged inside (the zip directory intact, the pickle overwritten).
    damaged = tmp_path / 'damaged.ckpt'
    start = data.index(b'data.pkl') + 100
    damaged.write_bytes(data[:start] + b'\x00' * 64 + data[start + 64:])
    with pytest.raises(ValueError, match=r'damaged\.ckpt: (cannot be read|refused)'):
        ckpt_io.read_checkpoint(damaged)


def test_hostile_pickles_are_refused_without_running_anything(tmp_path):
    marker = tmp_path / 'code_ran'
    hostile_ckpt = tmp_path / 'hostile.ckpt'
    torch.save({'state_dict': {'backbone.pos_embed': torch.zeros(1)}, 'payload': _RunsShellCommand(marker)},
               hostile_ckpt)
    with pytest.raises(ValueError, match=r'hostile\.ckpt: refused to load: it references posix\.system'):
        ckpt_io.read_checkpoint(hostile_ckpt)
    # A bare pickle (not a torch zip) with the same payload.
    hostile_pkl = tmp_path / 'hostile_plain.ckpt'
    hostile_pkl.write_bytes(pickle.dumps({'state_dict': _RunsShellCommand(marker)}))
    with pytest.raises(ValueError, match=r'hostile_plain\.ckpt is not a zip-format PyTorch checkpoint'):
        ckpt_io.read_checkpoint(hostile_pkl)
    # A YAML config that asks for a Python object.
    yaml_file = tmp_path / 'model_config.yaml'
    yaml_file.write_text(f'EXTRA: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ValueError, match=r'model_config\.yaml: cannot be read as YAML'):
        ckpt_io.read_model_config(yaml_file)
    assert not marker.exists()


def test_wrong_shape_missing_key_and_dtype_name_file_and_key(tmp_path):
    def check(mutate, pattern):
        state = small_state_dict(0)
        mutate(state)
        path = save_checkpoint(tmp_path / 'bad.ckpt', state)
        with pytest.raises(ValueError, match=pattern):
            ckpt_io.load_network(ckpt_io.read_checkpoint(path), SMALL, 'the test config')

    check(lambda s: s.update({'backbone.blocks.1.attn.qkv.weight': torch.zeros(3, 3)}),
          r"bad\.ckpt: key 'backbone\.blocks\.1\.attn\.qkv\.weight' has shape \[3, 3\], expected \[192, 64\] for "
          r'the network described by the test config')
    check(lambda s: s.pop('mano_head.decpose.bias'),
          r"bad\.ckpt: key 'mano_head\.decpose\.bias' is missing \(expected \[96\] torch\.float32\)")
    check(lambda s: s.update({'mano_head.init_cam': torch.zeros(1, 3, dtype=torch.float64)}),
          r"bad\.ckpt: key 'mano_head\.init_cam' is torch\.float64, expected torch\.float32")
    other = tmp_path / 'other.ckpt'
    torch.save({'weights': torch.zeros(2)}, other)
    with pytest.raises(ValueError, match=r"other\.ckpt: no HaMeR state_dict in this file \(found \['weights'\]\)"):
        ckpt_io.read_checkpoint(other)


def test_released_model_config_and_unsupported_settings(mano_only_data_dir, tmp_path):
    settings = ckpt_io.read_model_config(mano_only_data_dir / 'hamer_ckpts' / 'model_config.yaml')
    assert settings.network == NetworkConfig()
    assert settings.focal_length == 5000.0 and settings.image_size == 256
    assert settings.image_mean == (0.485, 0.456, 0.406) and settings.image_std == (0.229, 0.224, 0.225)
    assert ckpt_io.read_model_config(None) == ckpt_io.ModelSettings()
    bad = tmp_path / 'model_config.yaml'
    bad.write_text('MODEL:\n  MANO_HEAD:\n    JOINT_REP: aa\n')
    with pytest.raises(ValueError, match=r"model_config\.yaml: MODEL\.MANO_HEAD\.JOINT_REP = 'aa' is not supported"):
        ckpt_io.read_model_config(bad)
    bad.write_text('MODEL:\n  IMAGE_MEAN: [0.5, 0.5]\n')
    with pytest.raises(ValueError, match=r'MODEL\.IMAGE_MEAN must be 3 number\(s\)'):
        ckpt_io.read_model_config(bad)


def test_mano_from_checkpoint_or_pkl(tmp_path, mano_only_data_dir):
    with_buffers = HamerModel.load(write_small_data_dir(tmp_path / 'a'), device='cpu')
    assert with_buffers.mano.source.endswith('hamer.ckpt')
    np.testing.assert_array_equal(with_buffers.faces, HamerModel.small_random(0).faces)
    # No mano.* buffers: the pkl is used, and without one the error says where to put it.
    bare = write_small_data_dir(tmp_path / 'b', with_mano=False)
    with pytest.raises(FileNotFoundError, match=r'carries no MANO buffers.*data/mano/MANO_RIGHT\.pkl.*--mano'):
        HamerModel.load(bare, device='cpu')
    model = HamerModel.load(bare, mano=mano_only_data_dir / 'data' / 'mano' / 'MANO_RIGHT.pkl', device='cpu')
    assert model.mano.source.endswith('MANO_RIGHT.pkl') and model.faces.shape == (1538, 3)
    assert 'training-only entries skipped' in model.describe()


# ------------------------------------------------------------- other training setups, crafted and hostile files

class _Recorder:
    """Calls made on the fake training-library classes below (must stay empty: the loader never uses them)."""
    calls = []


def _install_fake_training_modules(monkeypatch):
    """Stand-ins registered under the real module paths of classes a Lightning checkpoint may carry outside
    state_dict: Lightning's AttributeDict (lightning_fabric/utilities/data.py: a dict subclass) and omegaconf's
    DictConfig / ListConfig (omegaconf/dictconfig.py, listconfig.py; pickled through their instance state) with
    its ContainerMetadata (omegaconf/base.py). Each records every construction or state restore."""
    import types

    def module(name, **classes):
        mod = types.ModuleType(name)
        for class_name, cls in classes.items():
            cls.__module__, cls.__qualname__, cls.__name__ = name, class_name, class_name
            setattr(mod, class_name, cls)
        parts = name.split('.')
        for i in range(1, len(parts)):
            monkeypatch.setitem(sys.modules, '.'.join(parts[:i]), sys.modules.get('.'.join(parts[:i]))
                                or types.ModuleType('.'.join(parts[:i])))
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    class AttributeDict(dict):
        def __init__(self, *args, **kwargs):
            _Recorder.calls.append('AttributeDict')
            super().__init__(*args, **kwargs)

        def __setstate__(self, state):
            _Recorder.calls.append('AttributeDict.__setstate__')

    class _Container:
        def __init__(self, content):
            self.__dict__['_content'] = content
            self.__dict__['_metadata'] = ContainerMetadata()

        def __setstate__(self, state):
            _Recorder.calls.append(f'{type(self).__name__}.__setstate__')

    class DictConfig(_Container):
        pass

    class ListConfig(_Container):
        pass

    class ContainerMetadata:
        def __init__(self):
            self.ref_type, self.object_type, self.optional = object, dict, True

        def __setstate__(self, state):
            _Recorder.calls.append('ContainerMetadata.__setstate__')

    lightning = module('lightning_fabric.utilities.data', AttributeDict=AttributeDict)
    omegaconf = {'DictConfig': module('omegaconf.dictconfig', DictConfig=DictConfig).DictConfig,
                 'ListConfig': module('omegaconf.listconfig', ListConfig=ListConfig).ListConfig}
    module('omegaconf.base', ContainerMetadata=ContainerMetadata)
    return lightning.AttributeDict, omegaconf


def _lightning_checkpoint(path, monkeypatch, hyper_parameters_extra=None, state_extra=None):
    """A Lightning-style checkpoint whose hyper_parameters/callbacks/loops carry numpy scalars and arrays,
    pathlib paths, an AttributeDict and omegaconf containers (saved with the fake classes importable)."""
    from pathlib import PurePosixPath
    AttributeDict, omegaconf = _install_fake_training_modules(monkeypatch)
    hyper_parameters = AttributeDict(
        lr=np.float64(1e-5), steps=np.int64(1000), mean=np.arange(3.0), out_dir=PurePosixPath('/runs/hamer'),
        cfg=omegaconf['DictConfig']({'MODEL': {'IMAGE_SIZE': 256}}),
        tags=omegaconf['ListConfig'](['dev']), **(hyper_parameters_extra or {}))
    state_dict = small_state_dict(0)
    state_dict.update(state_extra or {})
    torch.save({'state_dict': state_dict, 'hyper_parameters': hyper_parameters, 'epoch': 3, 'global_step': 100,
                'callbacks': {'ModelCheckpoint': {'best_model_path': PurePosixPath('/runs/best.ckpt'),
                                                  'best_model_score': torch.tensor(0.5)}},
                'loops': {'fit_loop': {'epoch_progress': {'total': np.int64(3)}}},
                'optimizer_states': [{'state': {0: {'exp_avg': torch.zeros(3)}}, 'param_groups': [{'lr': 1e-5}]}]},
               path)
    _Recorder.calls.clear()
    return path


def test_lightning_extras_outside_state_dict_load_as_inert_stand_ins_with_a_warning(tmp_path, monkeypatch):
    path = _lightning_checkpoint(tmp_path / 'lightning.ckpt', monkeypatch)
    with pytest.warns(UserWarning) as caught:
        loaded = ckpt_io.read_checkpoint(path)
    assert _Recorder.calls == []    # none of the file's classes was constructed or given its state
    expected = small_state_dict(0)
    assert set(loaded.state_dict) == {k for k in expected if k.startswith(('backbone.', 'mano_head.', 'mano.'))}
    for key, value in loaded.state_dict.items():
        assert torch.equal(value, expected[key]), key
    names = set(loaded.ignored_globals)
    for name in ('lightning_fabric.utilities.data.AttributeDict', 'omegaconf.dictconfig.DictConfig',
                 'omegaconf.listconfig.ListConfig', 'pathlib.PurePosixPath'):
        assert name in names
    assert any(name.startswith('numpy') for name in names)      # numpy scalars and arrays
    message = str(caught[0].message)
    assert str(path) in message and 'omegaconf.dictconfig.DictConfig' in message and 'nothing was imported' in message
    # The model builds from it.
    network = ckpt_io.load_network(loaded, SMALL, 'test config')
    assert torch.equal(network.backbone.pos_embed, expected['backbone.pos_embed'])


def test_hostile_payloads_inside_lightning_extras_run_nothing(tmp_path, monkeypatch):
    marker = tmp_path / 'code_ran'

    class _RunsThroughPager:
        """pydoc.pipepager(text, cmd) pipes text into a shell command: not in any refused module, so it is read
        as an inert stand-in, never called."""

        def __reduce__(self):
            import pydoc
            return pydoc.pipepager, ('', f'touch {marker}')

    path = _lightning_checkpoint(tmp_path / 'pager.ckpt', monkeypatch, {'payload': _RunsThroughPager()})
    with pytest.warns(UserWarning, match=r'pydoc\.pipepager'):
        loaded = ckpt_io.read_checkpoint(path)
    assert 'pydoc.pipepager' in loaded.ignored_globals and 'payload' not in str(loaded.hyper_parameters)
    assert not marker.exists()
    # A shell call in the same place is refused outright, naming it.
    path = _lightning_checkpoint(tmp_path / 'shell.ckpt', monkeypatch, {'payload': _RunsShellCommand(marker)})
    with pytest.raises(ValueError, match=r'shell\.ckpt: refused to load: it references posix\.system \(GLOBAL\)'):
        ckpt_io.read_checkpoint(path)
    assert not marker.exists()
    # Anything but tensors on the tensors' path is refused (a numpy array as a state_dict value).
    path = _lightning_checkpoint(tmp_path / 'numpy_in_state.ckpt', monkeypatch,
                                 state_extra={'backbone.extra': np.zeros(3)})
    with pytest.raises(ValueError, match=r'numpy_in_state\.ckpt: refused to load: its tensors come with numpy'):
        ckpt_io.read_checkpoint(path)


def _checkpoint_with_pickle(path, pickled: bytes):
    """A zip-format torch checkpoint whose data.pkl is `pickled` (the other records of an empty save)."""
    import zipfile
    plain = path.with_suffix('.plain')
    torch.save({'state_dict': {}}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, 'w') as target:
        for info in source.infolist():
            data = pickled if info.filename.endswith('/data.pkl') else source.read(info)
            target.writestr(info.filename, data)
    plain.unlink()
    return path


def _short_unicode(text: str) -> bytes:
    return b'\x8c' + bytes([len(text)]) + text.encode()


@pytest.mark.parametrize('opcode, name, make', [
    # protocol 4: module and name pushed as strings (memoized), then STACK_GLOBAL + REDUCE
    ('STACK_GLOBAL', 'os.system', lambda marker: b'\x80\x04' + _short_unicode('os') + b'\x94'
     + _short_unicode('system') + b'\x94\x93' + _short_unicode(f'touch {marker}') + b'\x85R.'),
    # protocol 0: INST reads module and name inline and calls it with the marked arguments
    ('INST', 'posix.system', lambda marker: f"(S'touch {marker}'\niposix\nsystem\n.".encode()),
    # GLOBAL + OBJ (class and arguments after a mark)
    ('GLOBAL', 'builtins.eval', lambda marker: f"(cbuiltins\neval\nS'open(\"{marker}\", \"w\")'\no.".encode()),
])
def test_hostile_opcodes_name_the_global_and_never_suggest_disabling_the_safety(tmp_path, opcode, name, make):
    marker = tmp_path / 'code_ran'
    path = _checkpoint_with_pickle(tmp_path / 'hostile.ckpt', make(marker))
    with pytest.raises(ValueError) as raised:
        ckpt_io.read_checkpoint(path)
    message = str(raised.value)
    assert f'hostile.ckpt: refused to load: it references {name} ({opcode})' in message
    assert 'weights_only' not in message and '\x1b' not in message and '\n' not in message
    assert not marker.exists()


def _memo_bomb(levels: int) -> list:
    value = []
    for _ in range(levels):
        value = [value, value]      # each level holds the previous one twice (shared, 2 pickle memo gets)
    return value


@pytest.mark.parametrize('what, make, expected', [
    ('memo_bomb', lambda: _memo_bomb(20), r'more than 100000 values'),
    ('self_reference', lambda: (lambda x: (x.append(x), x)[1])([]), r'contains itself'),
])
def test_crafted_structures_fail_fast_naming_the_file(tmp_path, what, make, expected):
    path = tmp_path / f'{what}.ckpt'
    torch.save({'state_dict': small_state_dict(0), 'hyper_parameters': {'x': make()}}, path)
    import zipfile
    with zipfile.ZipFile(path) as archive:   # the crafted part is a few kB of pickle
        assert sum(i.file_size for i in archive.infolist() if i.filename.endswith('data.pkl')) < 30_000
    with pytest.raises(ValueError, match=rf'{what}\.ckpt: .*{expected}'):
        ckpt_io.read_checkpoint(path)


def test_deeply_nested_pickle_fails_naming_the_file(tmp_path):
    depth = 200_000   # EMPTY_LIST x n, then APPEND x (n-1): a list in a list ... 200k deep
    pickled = b'\x80\x02}(' + _short_unicode('state_dict') + b'}' + _short_unicode('hyper_parameters') \
        + b']' * depth + b'a' * (depth - 1) + b'u.'
    path = _checkpoint_with_pickle(tmp_path / 'deep.ckpt', pickled)
    with pytest.raises(ValueError, match=r'deep\.ckpt: nested deeper than 64 levels'):
        ckpt_io.read_checkpoint(path)


def test_model_config_bombs_and_out_of_range_values_fail_fast_naming_the_file(tmp_path):
    import fixture_weights   # its MODEL_CONFIG_YAML holds the released values
    cases = {
        'DEPTH': fixture_weights.MODEL_CONFIG_YAML.replace('    TYPE: vit\n', '    TYPE: vit\n    DEPTH: 100000000\n'),
        'FOCAL_LENGTH': fixture_weights.MODEL_CONFIG_YAML.replace('FOCAL_LENGTH: 5000', 'FOCAL_LENGTH: -5000'),
        'nan_mean': fixture_weights.MODEL_CONFIG_YAML.replace('  - 0.485', '  - .nan'),
        'alias_bomb': 'a: &a [x, x, x, x, x, x, x, x, x, x]\n' + ''.join(
            f'{chr(98 + i)}: &{chr(98 + i)} [' + ', '.join([f'*{chr(97 + i)}'] * 10) + ']\n' for i in range(8))
            + 'MODEL:\n  IMAGE_MEAN: *i\n',
        'deep': 'MODEL: ' + '[' * 50_000 + ']' * 50_000 + '\n',
    }
    expected = {'DEPTH': r'MODEL\.BACKBONE\.DEPTH must be an integer from 1 to 64, got 100000000',
                'FOCAL_LENGTH': r'EXTRA\.FOCAL_LENGTH = -5000 is out of range',
                'nan_mean': r'MODEL\.IMAGE_MEAN = .* is out of range',
                'alias_bomb': r'more than 100000 values',
                'deep': r'(nested too deeply|nested deeper than 64)'}
    for name, text in cases.items():
        path = tmp_path / name / 'model_config.yaml'
        path.parent.mkdir()
        path.write_text(text)
        with pytest.raises(ValueError, match=rf'{name}/model_config\.yaml: .*{expected[name]}') as raised:
            ckpt_io.read_model_config(path)
        assert len(str(raised.value)) < 600 and '\n' not in str(raised.value), name


def test_verify_is_not_ready_for_a_crafted_checkpoint_or_an_out_of_range_config(tmp_path):
    from hamer_ros.provisioning import weights
    folder = write_small_data_dir(tmp_path / 'bad_config' / '_DATA')
    config = folder / 'hamer_ckpts' / 'model_config.yaml'
    config.write_text(config.read_text().replace('FOCAL_LENGTH: 5000', 'FOCAL_LENGTH: -5000'))
    checks = {c.name: c for c in weights.verify(folder)}
    assert not weights.ready(checks.values())
    assert not checks['model_config.yaml'].ok
    assert 'FOCAL_LENGTH = -5000 is out of range' in checks['model_config.yaml'].detail

    folder = write_small_data_dir(tmp_path / 'bomb' / '_DATA')
    checkpoint = folder / ckpt_io.CHECKPOINT_IN_DATA_DIR
    torch.save({'state_dict': small_state_dict(0), 'hyper_parameters': {'x': _memo_bomb(40)}}, checkpoint)
    checks = {c.name: c for c in weights.verify(folder)}
    assert not weights.ready(checks.values())
    assert not checks['HaMeR checkpoint'].ok
    assert f'{checkpoint}: more than 100000 values' in checks['HaMeR checkpoint'].detail


def test_names_from_the_file_are_printed_without_terminal_escapes(tmp_path):
    path = _checkpoint_with_pickle(tmp_path / 'escape.ckpt', b'\x80\x02cos\nsystem\x1b[2J\x1b[31m\n)R.')
    with pytest.raises(ValueError) as raised:
        ckpt_io.read_checkpoint(path)
    message = str(raised.value)
    assert 'it references os.system\\x1b[2J\\x1b[31m (GLOBAL)' in message and '\x1b' not in message


def test_a_record_stored_twice_is_refused(tmp_path):
    """Zip readers may pick different copies of a duplicated record: the scanned pickle must be the loaded one."""
    import warnings
    import zipfile
    path = _checkpoint_with_pickle(tmp_path / 'twice.ckpt', pickle.dumps({'state_dict': {}}, protocol=2))
    with zipfile.ZipFile(path, 'a') as archive, warnings.catch_warnings():
        warnings.simplefilter('ignore')   # zipfile warns about the duplicate name
        name = next(n for n in archive.namelist() if n.endswith('/data.pkl'))
        archive.writestr(name, b'\x80\x02cos\nsystem\n)R.')
    with pytest.raises(ValueError, match=r'twice\.ckpt: cannot be read as a PyTorch checkpoint \(the same record name '
                                         r'twice\)'):
        ckpt_io.read_checkpoint(path)
