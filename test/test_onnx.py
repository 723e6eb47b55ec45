"""export-onnx: the ONNX graph has a dynamic batch and gives PyTorch's outputs under onnxruntime, also with its
weights in an external data file (how the 2.5 GB full model is written)."""
import numpy as np
import pytest

pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

import onnx  # noqa: E402

from hamer_ros.io import onnx_export  # noqa: E402
from hamer_ros.cli import main  # noqa: E402
from hamer_ros.hamer.model import HamerModel  # noqa: E402
from hamer_ros.hamer.preprocess import make_crops  # noqa: E402

from hamer_test_files import write_small_data_dir  # noqa: E402
from offline_helpers import synthetic_image  # noqa: E402


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return write_small_data_dir(tmp_path_factory.mktemp('onnx') / '_DATA')


def _real_crops(count):
    """Crops as the pipeline makes them: left and right hands of a textured image."""
    boxes = np.array([[40, 60, 130, 170], [180, 50, 290, 180], [10, 10, 300, 230], [150, 100, 200, 140]][:count],
                     np.float64)
    crops, _, _ = make_crops(synthetic_image(), boxes, np.arange(count) % 2 == 1)
    return crops


def _assert_matches(path, model, crops):
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = dict(zip(onnx_export.OUTPUT_NAMES, session.run(None, {'crops': crops})))
    expected = model.forward_crops(crops)
    for name in onnx_export.OUTPUT_NAMES:
        assert got[name].shape == expected[name].shape, name
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_export_command_dynamic_batch(tmp_path, data_dir, capsys):
    out = tmp_path / 'hamer.onnx'
    assert main(['export-onnx', '--data-dir', str(data_dir), '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'onnxruntime vs PyTorch on random crops, batch 1 and 3' in printed and 'OK: every output' in printed
    assert 'pred_vertices' in printed and not (tmp_path / 'hamer.onnx.data').exists()
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ['crops']
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == 'batch'
    assert [o.name for o in graph.output] == list(onnx_export.OUTPUT_NAMES)
    model = HamerModel.load(data_dir)
    for count in (1, 4):     # neither is the traced batch (2)
        _assert_matches(out, model, _real_crops(count))


def test_weights_in_an_external_data_file(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(onnx_export, '_SINGLE_FILE_LIMIT', 0)      # as for the 2.5 GB model
    model = HamerModel.load(data_dir)
    path = onnx_export.export(model, tmp_path / 'big' / 'hamer.onnx')
    data = tmp_path / 'big' / 'hamer.onnx.data'
    assert sorted(p.name for p in (tmp_path / 'big').iterdir()) == ['hamer.onnx', 'hamer.onnx.data']
    weight_bytes = sum(t.numel() * 4 for t in model.core.state_dict().values())
    assert data.stat().st_size > 0.8 * weight_bytes and path.stat().st_size < 0.2 * weight_bytes
    _assert_matches(path, model, _real_crops(3))
    differences = onnx_export.compare(path, model)
    assert set(differences) == set(onnx_export.OUTPUT_NAMES)
    assert max(relative for _, relative in differences.values()) < 1e-4


def test_bad_output_name(tmp_path, data_dir, capsys):
    assert main(['export-onnx', '--data-dir', str(data_dir), '--out', str(tmp_path / 'hamer.pt')]) == 2
    assert 'must end in .onnx' in capsys.readouterr().err
