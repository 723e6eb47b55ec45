"""Crops: bit-exact with the official crop, left hands mirrored, batches, boxes leaving the image, bad boxes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from hamer_ros.hamer import preprocess
from hamer_ros.hamer.preprocess import IMAGE_MEAN_RGB, IMAGE_STD_RGB, blur_sigma, crop_box, crop_boxes, make_crops

# Value of a pixel sampled outside the image (black, normalised), per RGB channel.
OUTSIDE = (0.0 - 255 * np.array(IMAGE_MEAN_RGB)) / (255 * np.array(IMAGE_STD_RGB))
GREY_LEVEL = 1.0 / (255 * min(IMAGE_STD_RGB))   # one grey level in normalised units


@pytest.fixture(scope='module')
def scene_bgr(public_case):
    return np.ascontiguousarray(public_case['source_image_rgb'][:, :, ::-1])


def test_crop_is_bit_exact_with_the_official_crop(public_case, tmp_path):
    # As the official demo: the scene written as PNG and read back with cv2.imread (BGR).
    png = tmp_path / 'scene.png'
    assert cv2.imwrite(str(png), public_case['source_image_rgb'][:, :, ::-1])
    image = cv2.imread(str(png))
    crops, centers, sizes = make_crops(image, public_case['box_xyxy'], [True], rescale=2.0)
    assert crops.dtype == np.float32 and crops.shape == (1, 3, 256, 256)
    np.testing.assert_allclose(crops, public_case['img'], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(crops, public_case['img'])   # in fact bit-identical
    np.testing.assert_array_equal(centers, public_case['box_center'])
    np.testing.assert_array_equal(sizes, public_case['box_size'])   # 640.00006, float32 arithmetic
    assert blur_sigma(sizes[0]) is not None   # this box exercises the anti-aliasing blur


def test_crop_geometry_follows_the_aspect_rule():
    center, size = crop_box([10, 20, 110, 70])        # wide box: the 3:4 crop aspect widens its height
    np.testing.assert_array_equal(center, np.float32([60, 45]))
    np.testing.assert_allclose(size, 2.0 * 100 * 256 / 192, rtol=1e-6)
    _, size = crop_box([0, 0, 30, 90], rescale=2.5)   # tall box: its height decides
    np.testing.assert_allclose(size, 2.5 * 90, rtol=1e-6)
    _, size = crop_box([5, 5, 5, 45])                 # a line is still a usable box
    np.testing.assert_allclose(size, 80, rtol=1e-6)
    assert center.dtype == np.float32 and np.asarray(size).dtype == np.float32


def test_blur_threshold():
    assert blur_sigma(563.0) is None              # d = 1.0996 <= 1.1
    assert blur_sigma(564.0) is not None
    np.testing.assert_allclose(blur_sigma(640.0), 0.125, rtol=1e-6)
    assert isinstance(blur_sigma(640.0), np.float32)


def test_left_hand_is_the_mirrored_right_hand(scene_bgr):
    width = scene_bgr.shape[1]
    mirrored_image = np.ascontiguousarray(scene_bgr[:, ::-1])
    for x1, y1, x2, y2 in ([200, 60, 440, 330], [300, 100, 360, 180]):   # with and without blur
        left, left_centers, _ = make_crops(scene_bgr, [[x1, y1, x2, y2]], [False])
        as_right, _, _ = make_crops(mirrored_image, [[width - 1 - x2, y1, width - 1 - x1, y2]], [True])
        np.testing.assert_array_equal(left, as_right)
        np.testing.assert_array_equal(left_centers, [[(x1 + x2) / 2, (y1 + y2) / 2]])   # centres stay unmirrored
        right, _, _ = make_crops(scene_bgr, [[x1, y1, x2, y2]], [True])
        assert np.abs(left - right).max() > 1.0


def test_batch_equals_single_crops(scene_bgr):
    boxes = np.array([[200, 60, 440, 330],     # blurred, sigma A
                      [100, 100, 340, 370],    # same size: same sigma A
                      [150, 80, 390, 350],     # same size, left hand
                      [300, 100, 360, 180],    # small: no blur
                      [50, 40, 350, 400],      # larger: sigma B
                      [60, 50, 120, 140]],     # small left hand: no blur
                     dtype=np.float32)
    is_right = [True, True, False, True, True, False]
    singles = [make_crops(scene_bgr, box[None], [right])[0][0] for box, right in zip(boxes, is_right)]
    crops, centers, sizes = make_crops(scene_bgr, boxes, is_right)
    np.testing.assert_array_equal(crops, np.stack(singles))
    np.testing.assert_array_equal(crops, _official_crops(scene_bgr, boxes, is_right))
    np.testing.assert_array_equal(sizes[:3], np.repeat(sizes[0], 3))


def _source_positions(center, size):
    """Image position each crop pixel samples (docs/model.md §6.6: x_crop = (x - cx) * 256 / size + 128)."""
    grid = np.arange(256, dtype=np.float64)
    xs = (grid - 128) * float(size) / 256 + float(center[0])
    ys = (grid - 128) * float(size) / 256 + float(center[1])
    return xs, ys


@pytest.mark.parametrize('box', [[-40, -30, 60, 50],         # corner, no blur
                                 [400, 200, 700, 560]])      # past the bottom-right, blurred
def test_box_leaving_the_image_gets_a_black_border(scene_bgr, box):
    height, width = scene_bgr.shape[:2]
    crops, centers, sizes = make_crops(scene_bgr, [box], [True])
    xs, ys = _source_positions(centers[0], sizes[0])
    outside_cols = (xs < -1) | (xs > width)
    outside_rows = (ys < -1) | (ys > height)
    assert outside_cols.any() or outside_rows.any()
    crop = crops[0]
    for channel in range(3):
        np.testing.assert_array_equal(crop[channel][:, outside_cols], np.float32(OUTSIDE[channel]))
        np.testing.assert_array_equal(crop[channel][outside_rows, :], np.float32(OUTSIDE[channel]))
    # Inside, the crop is the image: the same crop taken from a zero-padded copy of the image agrees to the
    # grey level (not bit-exactly: cv2 quantises the shifted source positions to 1/32 px differently).
    pad = 400
    padded = cv2.copyMakeBorder(scene_bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    if blur_sigma(sizes[0]) is None:   # (a blur would see the padding; the warp alone must not)
        shifted, _, _ = make_crops(padded, [np.add(box, pad)], [True])
        np.testing.assert_allclose(crop, shifted[0], rtol=0, atol=GREY_LEVEL * 1.01)
        assert np.mean(crop == shifted[0]) > 0.99
    assert np.abs(crop - OUTSIDE[:, None, None]).max() > 0.5   # part of the image is in the crop


def test_box_entirely_outside_the_image_gives_a_black_crop(scene_bgr):
    crops, _, _ = make_crops(scene_bgr, [[-500, -400, -300, -200], [2000, 10, 2100, 90]], [True, False])
    for crop in crops:
        np.testing.assert_array_equal(crop, np.broadcast_to(OUTSIDE[:, None, None].astype(np.float32), crop.shape))


@pytest.mark.parametrize('box,message', [([100, 100, 100, 100], 'zero size'),
                                         ([120, 100, 100, 140], 'x2 >= x1'),
                                         ([100, float('nan'), 120, 140], 'finite')])
def test_bad_boxes_are_refused(scene_bgr, box, message):
    with pytest.raises(ValueError, match=message):
        make_crops(scene_bgr, [box], [True])
    with pytest.raises(ValueError, match=message):
        crop_boxes([box])


def test_bad_images_and_sides_are_refused(scene_bgr):
    box = [[200, 60, 440, 330]]
    with pytest.raises(ValueError, match='one side per box'):
        make_crops(scene_bgr, box, [True, False])
    with pytest.raises(ValueError, match='uint8'):
        make_crops(scene_bgr.astype(np.float32), box, [True])
    with pytest.raises(ValueError, match='cv2.cvtColor'):
        make_crops(scene_bgr[:, :, 0], box, [True])
    with pytest.raises(ValueError, match='cv2.cvtColor'):
        make_crops(np.dstack([scene_bgr, scene_bgr[:, :, :1]]), box, [True])


def _spec_normalize(patch_bgr):
    """docs/model.md §6.7 as the official dataset computes it: BGR -> RGB, CHW, float32 pixels, float64 maths, float32."""
    rgb = np.transpose(patch_bgr[:, :, ::-1], (2, 0, 1)).astype(np.float32)
    mean, std = 255 * np.array(IMAGE_MEAN_RGB), 255 * np.array(IMAGE_STD_RGB)
    return ((rgb - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def _official_crops(image_bgr, boxes, is_right):
    """Crops as the official code makes them (docs/model.md §6.5-7): the WHOLE image blurred with scipy, then mirrored for
    left hands, warped and normalised. The oracle for make_crops, which blurs only the pixels the warp reads."""
    centers, sizes = crop_boxes(boxes)
    crops = []
    for (center_x, center_y), size, right in zip(centers, sizes, is_right):
        image, sigma = image_bgr, blur_sigma(size)
        if sigma is not None:
            image = gaussian_filter(image.astype(np.float64), (sigma, sigma, 0), mode='nearest', truncate=4.0)
        if not right:
            image, center_x = np.ascontiguousarray(image[:, ::-1]), image.shape[1] - center_x - 1
        patch = preprocess._warp(image, preprocess._crop_transform(center_x, center_y, size))
        crops.append(_spec_normalize(patch))
    return np.stack(crops)


def _random_boxes(rng, count, height, width):
    """Boxes of 15-1400 px (crop sides ~60-3700 px: sigmas up to ~3, kernel radii up to 13) centred anywhere from
    well outside the image to well inside; fractional coordinates."""
    sides = np.exp(rng.uniform(np.log(15), np.log(1400), (count, 2)))
    centers = rng.uniform(-0.6, 1.6, (count, 2)) * [width, height]
    return np.concatenate([centers - sides / 2, centers + sides / 2], axis=1)


@pytest.mark.parametrize('height,width,seed', [(480, 640, 0), (480, 640, 1), (480, 640, 2), (37, 53, 3),
                                               (1, 9, 4), (720, 1280, 5)])
def test_crops_equal_the_whole_image_blur_bit_for_bit(monkeypatch, height, width, seed):
    # make_crops blurs only the pixels the warp reads. Every other canvas pixel is NaN here: a single one read,
    # even with a zero bilinear weight, would make a crop pixel NaN.
    monkeypatch.setattr(preprocess, '_new_canvas', lambda shape: np.full(shape, np.nan))
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[:, :, 1] = cv2.GaussianBlur(image[:, :, 1], (0, 0), 3)   # a smooth channel next to the noisy ones
    boxes = _random_boxes(rng, 24, height, width)
    boxes[0] = [0.3 * width, 0.2 * height, 0.3 * width + 400, 0.2 * height + 380]   # blurred, mostly inside
    boxes[1] = [-3000, -2000, -2500, -1500]                                           # blurred, all outside
    is_right = rng.random(len(boxes)) < 0.5
    is_right[:2] = [True, False]
    crops, centers, sizes = make_crops(image, boxes, is_right)
    expected = _official_crops(image, boxes, is_right)
    np.testing.assert_array_equal(crops.view(np.uint32), expected.view(np.uint32))
    # The grid covers what it claims: blurred crops of several kernel radii, inside, across and outside the edge.
    blurred = np.array([blur_sigma(size) is not None for size in sizes])
    assert blurred.sum() >= 12
    radii = {int(4 * float(blur_sigma(size)) + 0.5) for size in sizes[blurred]}
    assert len(radii) >= 4, radii
    half = sizes[:, None] / 2
    reach_outside = np.any((centers - half < 0) | (centers + half > [width, height]), axis=1)
    entirely_outside = np.any((centers + half < 0) | (centers - half > [width, height]), axis=1)
    assert reach_outside[blurred].sum() >= 5 and entirely_outside[blurred].any()
    assert not is_right[blurred].all() and is_right[blurred].any()


@pytest.mark.parametrize('crop_side', [563.5, 600.0, 639.9, 640.1, 700.0, 1150.0, 1300.0, 2600.0])
@pytest.mark.parametrize('mirrored', [False, True])
def test_blur_at_some_pixels_equals_scipy_bit_for_bit(crop_side, mirrored):
    # Crop sides up to 640 px give a kernel of the single weight 1.0 (an exact copy); larger ones real blurs.
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    if mirrored:   # left hands: a mirrored copy, as make_crops blurs it
        image = cv2.flip(image, 1)
    sigma = blur_sigma(crop_side)
    reference = gaussian_filter(image.astype(np.float64), (sigma, sigma, 0), mode='nearest', truncate=4.0)
    assert np.array_equal(reference, image) == (crop_side < 640)
    rows = np.array([0, 1, 2, 7, 8, 30, 46, 47])
    for start, stop in [(0, 64), (0, 5), (3, 9), (20, 21), (58, 64), (63, 64)]:
        blurred = preprocess._blur_at(image, sigma, rows, start, stop)
        np.testing.assert_array_equal(blurred.view(np.uint64), reference[rows, start:stop].view(np.uint64))


def test_normalisation_follows_the_spec_bit_for_bit():
    # Unblurred patches are normalised by table lookup, blurred ones per channel: both equal docs/model.md §6.7's arithmetic.
    rng = np.random.default_rng(7)
    levels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    levels[0, :256] = np.arange(256, dtype=np.uint8)[:, None]   # every level in every channel
    blurred = rng.uniform(0, 255, (256, 256, 3))
    for patch in (levels, levels.astype(np.float64), blurred):
        out = np.empty((3, 256, 256), dtype=np.float32)
        preprocess._normalize(patch, out)
        np.testing.assert_array_equal(out.view(np.uint32), _spec_normalize(patch).view(np.uint32))
