"""CameraInfo -> intrinsics: K checked against the image (finite in float32, plausible field of view, principal
point near the image), readable reasons, NaN in D reported."""
from types import SimpleNamespace

import numpy as np
import pytest

from hamer_ros.ros.camera_info import (BAD_DISTORTION, INVALID_K, SIZE_MISMATCH, camera_info_intrinsics)
from hamer_ros.types import CameraIntrinsics


def _info(fx=600.0, fy=600.0, cx=320.0, cy=240.0, width=640, height=480, d=(0.0,) * 5, model='plumb_bob', k=None):
    k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0] if k is None else k
    return SimpleNamespace(k=k, width=width, height=height, d=list(d), distortion_model=model)


@pytest.mark.parametrize('info', [
    _info(),
    _info(width=0, height=0),                                    # size not given: matches any image
    _info(fx=180.0, fy=180.0, model='equidistant', d=(0.1, -0.02, 0.0, 0.0)),    # fisheye: 121 degrees wide
    _info(fx=25000.0, fy=25000.0),                               # a long telephoto: 1.1 degrees high
    _info(cx=-100.0, cy=700.0),                                  # principal point off the image, not far
])
def test_plausible_k_is_used_as_given(info):
    intrinsics, problem = camera_info_intrinsics(info, 640, 480)
    assert problem is None
    assert intrinsics == CameraIntrinsics(info.k[0], info.k[4], info.k[2], info.k[5], from_camera_info=True)


@pytest.mark.parametrize('info,words', [
    (_info(cx=1e30), 'principal point cx=1e+30 lies far outside the image (0 to 640 px; accepted: -320 to 960)'),
    (_info(cy=-1e4), 'principal point cy=-10000 lies far outside'),
    (_info(fx=1e-30, fy=1e-30), 'fx=1e-30 px gives a horizontal field of view of 180 degrees over 640 px '
                                '(plausible: 1 to 175)'),
    (_info(fx=1e-6, fy=1e6), 'fx=1e-06 px gives a horizontal field of view of 180 degrees'),
    (_info(fy=1e6), 'fy=1e+06 px gives a vertical field of view of 0.0275 degrees over 480 px'),
    (_info(cx=1e39), 'K [600, 0, 1e+39, 0, 600, 240, 0, 0, 1] has values that are not finite (NaN, inf, or '
                     'beyond float32)'),
    (_info(fx=float('nan')), 'K [nan, 0, 320, 0, 600, 240, 0, 0, 1] has values that are not finite'),
    (_info(fy=float('inf')), 'has values that are not finite'),
    (_info(fx=0.0, fy=0.0), 'focal lengths fx=0, fy=0 must be positive'),
    (_info(fx=-600.0), 'focal lengths fx=-600, fy=600 must be positive'),
    (_info(k=[600.0, 0.0, 320.0]), 'K has 3 values, needs 9'),
])
def test_absurd_k_is_refused_with_readable_numbers(info, words):
    intrinsics, problem = camera_info_intrinsics(info, 640, 480)
    assert intrinsics is None and problem.kind == INVALID_K
    assert words in problem.text, problem.text
    assert 'np.float' not in problem.text and 'default camera' in problem.text


def test_camera_info_for_another_size_is_refused_first():
    intrinsics, problem = camera_info_intrinsics(_info(width=1280, height=720, cx=1e30), 640, 480)
    assert intrinsics is None and problem.kind == SIZE_MISMATCH
    assert problem.text.startswith('ignoring CameraInfo for 1280x720 images: the image is 640x480')


@pytest.mark.parametrize('model', ['equidistant', 'plumb_bob'])
def test_nan_in_d_is_reported_and_k_still_used(model):
    intrinsics, problem = camera_info_intrinsics(_info(model=model, d=(0.1, float('nan'), 0.0, 0.0)), 640, 480)
    assert intrinsics == CameraIntrinsics(600.0, 600.0, 320.0, 240.0, from_camera_info=True)
    assert problem.kind == BAD_DISTORTION
    assert f"D [0.1, nan, 0, 0] (model '{model}') has NaN/inf values" in problem.text


def test_values_finite_in_float32_reach_the_published_float32_geometry_unchanged():
    intrinsics, problem = camera_info_intrinsics(_info(fx=612.25, fy=611.5, cx=318.75, cy=242.5), 640, 480)
    assert problem is None
    assert np.float32(intrinsics.cx) == 318.75 and np.isfinite(np.float32(intrinsics.fx))
