"""HaMeR's network input: square crops around hand boxes, exactly as the official ViTDetDataset makes them.

docs/model.md §6: box rescaled by 2.0 and widened to the 192x256 aspect (float32 arithmetic, NumPy-2 promotion), image
blurred when the crop shrinks by more than 2.2x (float64, kept unrounded), left hands mirrored, cv2 affine warp to
256x256 with a zero border, BGR -> RGB, ImageNet normalisation. Calling cv2 the same way as the official code, and
repeating scipy's blur arithmetic at the pixels the warp reads, keeps the crops bit-exact with it.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

IMAGE_SIZE = 256                    # MODEL.IMAGE_SIZE of the released config (docs/model.md §1)
BBOX_SHAPE_WH = (192, 256)          # MODEL.BBOX_SHAPE added by load_hamer (docs/model.md §1)
DEFAULT_RESCALE = 2.0               # demo.py --rescale_factor (docs/model.md §6.2)
BLUR_TRUNCATE = 4.0                 # skimage.filters.gaussian's truncate (docs/model.md §6.5)
IMAGE_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGE_STD_RGB = (0.229, 0.224, 0.225)
_MEAN_255 = 255.0 * np.array(IMAGE_MEAN_RGB)   # float64, as the dataset keeps them (docs/model.md §6.7)
_STD_255 = 255.0 * np.array(IMAGE_STD_RGB)
# The normalised value of every 8-bit level, per channel in BGR order, by the very float64 arithmetic of
# `_normalize`: looking a uint8 patch up in it is bit-exact and faster than computing it per pixel.
_LEVELS_BGR = ((np.arange(256, dtype=np.float32)[:, None] - _MEAN_255[::-1]) / _STD_255[::-1]).astype(np.float32)


def crop_boxes(boxes_xyxy, rescale: float = DEFAULT_RESCALE) -> Tuple[np.ndarray, np.ndarray]:
    """Crop centres (N,2) and square crop sides (N,) in pixels, float32 (docs/model.md §6.3-4)."""
    rescale = float(rescale)   # a Python float, so it does not widen the float32 arithmetic below
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f'hand boxes must be finite numbers, got {boxes.tolist()}')
    if np.any(boxes[:, 2:4] < boxes[:, 0:2]):
        raise ValueError(f'hand boxes must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1, got {boxes.tolist()}')
    # Every step below is float32 with the official operation order, so sizes like 640.00006 match exactly.
    boxes = boxes.astype(np.float32)
    centers = (boxes[:, 2:4] + boxes[:, 0:2]) / 2.0
    scaled_wh = (rescale * (boxes[:, 2:4] - boxes[:, 0:2]) / 200.0) * 200
    w, h = scaled_wh[:, 0], scaled_wh[:, 1]
    target_w, target_h = BBOX_SHAPE_WH
    with np.errstate(divide='ignore', invalid='ignore'):   # a zero-width box counts as tall, as in the official code
        flat = h / w < np.float32(target_h / target_w)
    widened_h = np.maximum(w * target_h / target_w, h)
    widened_w = np.maximum(h * target_w / target_h, w)
    sizes = np.where(flat, np.maximum(w, widened_h), np.maximum(widened_w, h)).astype(np.float32)
    if np.any(sizes <= 0):
        bad = boxes[sizes <= 0].tolist()
        raise ValueError(f'hand box of zero size {bad}: a box needs a positive width or height')
    return centers.astype(np.float32), sizes


def crop_box(box_xyxy, rescale: float = DEFAULT_RESCALE) -> Tuple[np.ndarray, np.float32]:
    """Crop centre (2,) and square crop side of one box, float32 (docs/model.md §6.3-4)."""
    centers, sizes = crop_boxes(np.asarray(box_xyxy).reshape(1, 4), rescale)
    return centers[0], sizes[0]


def blur_sigma(crop_size: float) -> Optional[np.float32]:
    """Anti-aliasing sigma for a crop of this side, or None when no blur is applied (docs/model.md §6.5)."""
    # Kept float32 as in the official code: scipy builds its kernel in the dtype of sigma, so a Python float
    # would change the blurred pixels in the last bits.
    downsampling = np.float32(crop_size) * 1.0 / IMAGE_SIZE / 2.0
    if downsampling > 1.1:
        return (downsampling - 1) / 2
    return None


def make_crops(image_bgr: np.ndarray, boxes_xyxy, is_right: Sequence[bool],
               rescale: float = DEFAULT_RESCALE) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network inputs for N hands of one image.

    image_bgr: (H, W, 3) uint8 BGR (cv2.imread order). boxes_xyxy: (N, 4) tight hand boxes in pixels.
    is_right: (N,) the subject's right hand; left hands are cropped from the mirrored image (docs/model.md §6.6).
    Returns crops (N, 3, 256, 256) float32 normalised RGB, centres (N, 2) float32 (unmirrored) and crop sides
    (N,) float32. Where the official code blurs the whole image, only the pixels the warp reads are blurred
    (`_blurred_canvas`), bit for bit the same values.
    """
    image = _check_image(image_bgr)
    centers, sizes = crop_boxes(boxes_xyxy, rescale)
    is_right = np.asarray(is_right, dtype=bool).reshape(-1)
    if len(is_right) != len(centers):
        raise ValueError(f'{len(centers)} boxes but {len(is_right)} is_right flags: give one side per box')
    width = image.shape[1]
    mirrored: Optional[np.ndarray] = None   # the image mirrored once for all left hands

    crops = np.empty((len(centers), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i, (center, size, right) in enumerate(zip(centers, sizes, is_right)):
        center_x, center_y = center
        source = image
        if not right:
            center_x = width - center_x - 1   # pixel-index mirror, float32 (docs/model.md §6.6)
            if mirrored is None:
                mirrored = cv2.flip(image, 1)   # = [:, ::-1], contiguous, and much faster than NumPy's copy
            source = mirrored
        transform = _crop_transform(center_x, center_y, size)
        sigma = blur_sigma(size)
        if sigma is not None:
            # The official code blurs, then mirrors (docs/model.md §6.5-6). Blurring the mirrored image gives the same
            # pixels bit for bit: the kernel is symmetric and each output adds the same pairs.
            source = _blurred_canvas(source, sigma, transform)
        _normalize(_warp(source, transform), out=crops[i])
    return crops, centers, sizes


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) BGR image, got shape {image.shape}; convert grey or BGRA images '
                         'with cv2.cvtColor first')
    if image.dtype != np.uint8:
        raise ValueError(f'expected a uint8 image, got {image.dtype}; HaMeR crops 8-bit images as cv2.imread reads them')
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f'empty image of shape {image.shape}')
    return image


def _crop_transform(center_x: np.float32, center_y: np.float32, size: np.float32) -> np.ndarray:
    """cv2 affine map (2x3 float64) of the square of side `size` around the centre onto the 256x256 crop
    (docs/model.md §6.6: float32 points, no half-pixel offset)."""
    half = np.float32(size * 0.5)
    center = np.array([center_x, center_y], dtype=np.float32)
    src = np.stack([center, center + np.array([0, half], np.float32), center + np.array([half, 0], np.float32)])
    mid = IMAGE_SIZE * 0.5
    dst = np.array([[mid, mid], [mid, IMAGE_SIZE], [IMAGE_SIZE, mid]], dtype=np.float32)
    return cv2.getAffineTransform(src, dst)


def _warp(image: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """The 256x256 crop, zero outside the image (docs/model.md §6.6); float64 from a float64 (blurred) image."""
    return cv2.warpAffine(image, transform, (IMAGE_SIZE, IMAGE_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _blurred_canvas(image: np.ndarray, sigma: np.float32, transform: np.ndarray) -> np.ndarray:
    """A float64 image of the blurred image's size holding the blurred pixels (docs/model.md §6.5) at every pixel the
    crop's bilinear warp reads and nothing meaningful elsewhere.

    The official code blurs the whole image, but a crop samples the image every size/256 px (> 2.2 px where the
    blur applies) and reads 2x2 pixels per sample: the rows it reads and a band of columns are enough, and
    blurring only those (`_blur_at`) costs a fraction of the whole image (docs/performance.md). The canvas keeps
    image coordinates so that the warp runs with the very same transform: warping a window instead would need a
    shifted translation, and with the transform's off-diagonal terms not exactly 0 (~1e-15) cv2 would round
    different numbers.
    """
    height, width = image.shape[:2]
    inverse = cv2.invertAffineTransform(transform)   # crop pixel -> image position, as cv2.warpAffine computes it
    rows = _read_pixels(inverse[1, 1], inverse[1, 2], height)
    columns = _read_pixels(inverse[0, 0], inverse[0, 2], width)
    canvas = _new_canvas((height, width, 3))
    if len(rows) and len(columns):
        start, stop = int(columns[0]), int(columns[-1]) + 1
        canvas[rows, start:stop] = _blur_at(image, sigma, rows, start, stop)
    return canvas


def _new_canvas(shape: Tuple[int, int, int]) -> np.ndarray:
    """Uninitialised: the warp reads only the pixels `_blurred_canvas` writes (the tests fill the rest with NaN to
    prove it); zeroing megabytes per hand would cost time for nothing."""
    return np.empty(shape, dtype=np.float64)


# How far cv2.warpAffine's source positions can land from the exact ones: it rounds them to the nearest 1/32 px in
# fixed point (docs/model.md §6.6), up to 1/64 px plus rounding: the tests find pixels read beyond a margin of 1/128 and none
# beyond 1/64 + 1/1024. The transform's off-diagonal terms, ignored here, are ~1e-15. A wider margin only adds a
# row or column now and then.
_SAMPLING_SLACK = 1.0 / 16


def _read_pixels(scale: float, offset: float, length: int) -> np.ndarray:
    """Sorted pixel indices in [0, length) along one image axis that the bilinear warp reads for the crop's 256
    samples at image positions scale * i + offset: the pixel at or left of each position and its right neighbour."""
    positions = scale * np.arange(IMAGE_SIZE) + offset
    left = np.floor(positions - _SAMPLING_SLACK).astype(np.int64)
    right = np.floor(positions + _SAMPLING_SLACK).astype(np.int64) + 1   # left + 1 or left + 2
    pixels = np.unique(np.concatenate([left, left + 1, right]))
    return pixels[(pixels >= 0) & (pixels < length)]


def _gaussian_weights(sigma: np.float32) -> np.ndarray:
    """scipy's Gaussian kernel for this sigma from the centre out, (w0, w1, ..., w_radius)."""
    radius = int(BLUR_TRUNCATE * float(sigma) + 0.5)   # as scipy.ndimage.gaussian_filter1d sizes it
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    # The impulse response is the kernel bit for bit (each output is one weight times 1 plus zeros), so these are
    # scipy's own weights, built in sigma's dtype as the official call builds them.
    return gaussian_filter1d(impulse, sigma, mode='constant', truncate=BLUR_TRUNCATE)[radius:]


def _blur_at(image: np.ndarray, sigma: np.float32, rows: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Pixels rows x [start, stop) of scipy.ndimage.gaussian_filter(image.astype(float64), (sigma, sigma, 0),
    mode='nearest', truncate=4.0), bit for bit: the official blur (docs/model.md §6.5) at some pixels only.

    Hand-written because scipy filters whole lines only. It repeats scipy's arithmetic in scipy's order
    (ndimage/src/ni_filters.c, NI_Correlate1D, symmetric kernel): axis 0 first, then axis 1 on that float64
    result; each output = centre * w0, then += (left + right) * w_j from the outermost pair inwards; 'nearest' =
    clamped indices. (A compiler contracting scipy's multiply-add into FMA, as on some ARM builds, would change the
    last bit; the x86-64 wheels do not.)
    """
    weights = _gaussian_weights(sigma)
    radius = len(weights) - 1
    height, width = image.shape[:2]
    band_start, band_stop = max(start - radius, 0), min(stop + radius, width)
    band = image[:, band_start:band_stop]
    # Axis 0 at the wanted rows, over the columns axis 1 needs, with `radius` columns on each side for the
    # 'nearest' edge of axis 1 (used only where the band ends at the image edge).
    vertical = np.empty((len(rows), band_stop - band_start + 2 * radius, 3))
    inner = vertical[:, radius:radius + band_stop - band_start]
    np.multiply(band[rows], weights[0], out=inner)
    for offset in range(radius, 0, -1):
        # Two 8-bit levels add exactly in uint16, as scipy adds them in float64.
        pair = np.add(band[np.maximum(rows - offset, 0)], band[np.minimum(rows + offset, height - 1)],
                      dtype=np.uint16)
        inner += pair * weights[offset]
    vertical[:, :radius] = inner[:, :1]
    vertical[:, radius + band_stop - band_start:] = inner[:, -1:]
    # Axis 1 at columns [start, stop).
    first, count = start - band_start + radius, stop - start
    blurred = vertical[:, first:first + count] * weights[0]
    for offset in range(radius, 0, -1):
        blurred += (vertical[:, first - offset:first - offset + count]
                    + vertical[:, first + offset:first + offset + count]) * weights[offset]
    return blurred


def _normalize(patch_bgr: np.ndarray, out: np.ndarray) -> None:
    """BGR patch (256,256,3) -> normalised RGB (3,256,256) float32, written into `out` (docs/model.md §6.7: float32 pixels,
    float64 maths, rounded to float32 on storing)."""
    if patch_bgr.dtype == np.uint8:   # no blur: the patch holds 8-bit levels
        planes = cv2.split(cv2.LUT(patch_bgr, _LEVELS_BGR.reshape(1, 256, 3)))
        for channel, plane in enumerate(planes[::-1]):
            out[channel] = plane
        return
    for channel, plane in enumerate(cv2.split(patch_bgr)[::-1]):
        out[channel] = (plane.astype(np.float32) - _MEAN_255[channel]) / _STD_255[channel]
