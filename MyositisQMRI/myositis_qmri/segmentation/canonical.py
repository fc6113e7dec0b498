"""The model's view of an image: canonical orientation, in-plane resampling, one leg per crop.

Every image (training label map or scan to segment) goes through the same steps: reorient to
LPS without interpolation (DICOMOrient), resample each slice in-plane to the model spacing
(slices keep their position), find the gap between the thighs, and cut a square crop around
each leg. The left leg is mirrored onto the right so one network serves both sides.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume

CANONICAL_ORIENTATION = "LPS"   # array x -> patient left, y -> posterior, z -> superior


def reorient(image: sitk.Image) -> sitk.Image:
    """Permute/flip axes to the canonical orientation (no interpolation)."""
    return sitk.DICOMOrient(image, CANONICAL_ORIENTATION)


def model_grid_image(volume: Volume, spacing_mm: float, interpolation: str = "linear",
                     default: float = 0.0) -> sitk.Image:
    """Reorient, then resample in-plane to `spacing_mm`, keeping the slices and the extent."""
    image = reorient(volume.to_sitk())
    size = np.array(image.GetSize())
    spacing = np.array(image.GetSpacing())
    new_size = size.copy()
    new_size[:2] = np.maximum(np.round(size[:2] * spacing[:2] / spacing_mm), 1).astype(int)
    new_spacing = spacing.copy()
    new_spacing[:2] = size[:2] * spacing[:2] / new_size[:2]
    # Keep the outer edges of the field of view: shift the first voxel centre by half a voxel change.
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    shift = np.zeros(3)
    shift[:2] = (new_spacing[:2] - spacing[:2]) / 2.0
    origin = np.asarray(image.GetOrigin()) + direction @ shift
    interpolator = sitk.sitkNearestNeighbor if interpolation == "nearest" else sitk.sitkLinear
    if interpolation != "nearest":
        image = sitk.Cast(image, sitk.sitkFloat32)
    return sitk.Resample(image, [int(v) for v in new_size], sitk.Transform(), interpolator,
                         tuple(origin), tuple(float(v) for v in new_spacing), image.GetDirection(),
                         default, image.GetPixelID())


# One thigh's x profile (foreground pixels per column) rises to one peak and falls: its inner
# half holds no dip. Two thighs give two lobes; thighs that touch (common in heavier patients)
# leave only a shallow dip between them, so any dip below this fraction of the smaller lobe's
# peak splits. Thighs pressed flat together may leave none, but then the footprint is far wider
# than one thigh, which is about as wide as it is deep.
TWO_LOBE_DIP = 0.85
TWO_LEG_WIDTH_TO_DEPTH = 1.5


def midline_column(foreground_zyx: np.ndarray) -> int | None:
    """x column separating the two thighs (the deepest dip in the foreground's x profile), or None.

    None for a single leg: no dip below TWO_LOBE_DIP of the smaller side's peak in the inner half
    of the profile, and a footprint (pixels square) no wider than TWO_LEG_WIDTH_TO_DEPTH x its depth.
    """
    profile = ndimage.uniform_filter1d(foreground_zyx.sum(axis=(0, 1)).astype(float), 3)
    columns = np.nonzero(profile > 0.02 * profile.max())[0] if profile.max() > 0 else []
    if len(columns) < 8:
        return None
    lo, hi = columns[0], columns[-1]
    inner_lo, inner_hi = lo + (hi - lo) // 4, hi - (hi - lo) // 4
    if inner_hi <= inner_lo:
        return None
    gap = inner_lo + int(np.argmin(profile[inner_lo:inner_hi + 1]))
    left_peak, right_peak = profile[lo:gap + 1].max(), profile[gap:hi + 1].max()
    rows = np.nonzero(foreground_zyx.any(axis=(0, 2)))[0]
    two_lobes = profile[gap] < TWO_LOBE_DIP * min(left_peak, right_peak)
    if not two_lobes and (hi - lo + 1) <= TWO_LEG_WIDTH_TO_DEPTH * (rows[-1] - rows[0] + 1):
        return None
    # Centre of the flat minimum (a wide empty gap between the thighs).
    flat = np.nonzero(profile[inner_lo:inner_hi + 1] <= profile[gap] + 1e-6)[0] + inner_lo
    runs = np.split(flat, np.nonzero(np.diff(flat) > 1)[0] + 1)
    best = max(runs, key=len)
    return int(round(best.mean()))


@dataclass(frozen=True)
class LegWindow:
    """Where one leg's crop sits in the model-grid array (z, y, x)."""

    side: str                 # "right" or "left" (patient side)
    x_range: tuple[int, int]  # columns of the model grid that belong to this leg
    centre_yx: tuple[float, float]


def leg_windows(foreground_zyx: np.ndarray, right_is_low_x: bool = True) -> list[LegWindow]:
    """Split the foreground into legs by the midline gap; sides from canonical x (LPS: +x = left)."""
    nx = foreground_zyx.shape[2]
    mid = midline_column(foreground_zyx)
    if mid is None:
        ys, xs = np.nonzero(foreground_zyx.any(axis=0))
        if len(xs) == 0:
            return []
        # One leg only: its side from which half of the field of view it sits in.
        side = "right" if (xs.mean() < nx / 2) == right_is_low_x else "left"
        return [LegWindow(side, (0, nx), (float(ys.mean()), float(xs.mean())))]
    windows = []
    for side, (a, b) in (("right", (0, mid)), ("left", (mid, nx))):
        if not right_is_low_x:
            side = "left" if side == "right" else "right"
        part = foreground_zyx[:, :, a:b].any(axis=0)
        ys, xs = np.nonzero(part)
        if len(xs) == 0:
            continue
        windows.append(LegWindow(side, (a, b), (float(ys.mean()), float(xs.mean() + a))))
    return windows


def crop_leg(array_zyx: np.ndarray, window: LegWindow, size: int, fill: float = 0.0,
             centre_yx: tuple[float, float] | None = None) -> np.ndarray:
    """A (z, size, size) crop centred on the leg, other leg's columns blanked, left leg mirrored."""
    cy, cx = centre_yx or window.centre_yx
    y0, x0 = int(round(cy)) - size // 2, int(round(cx)) - size // 2
    out = np.full((array_zyx.shape[0], size, size), fill, dtype=array_zyx.dtype)
    ys, ye = max(y0, 0), min(y0 + size, array_zyx.shape[1])
    xs, xe = max(x0, window.x_range[0]), min(x0 + size, window.x_range[1])
    if ye > ys and xe > xs:
        out[:, ys - y0:ye - y0, xs - x0:xe - x0] = array_zyx[:, ys:ye, xs:xe]
    return out[:, :, ::-1].copy() if window.side == "left" else out


def uncrop_leg(crop_czyx: np.ndarray, window: LegWindow, shape_zyx: tuple[int, int, int],
               centre_yx: tuple[float, float] | None = None) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Inverse of crop_leg for a (channel, z, size, size) array: the part inside the grid, and where."""
    size = crop_czyx.shape[-1]
    if window.side == "left":
        crop_czyx = crop_czyx[..., ::-1]
    cy, cx = centre_yx or window.centre_yx
    y0, x0 = int(round(cy)) - size // 2, int(round(cx)) - size // 2
    ys, ye = max(y0, 0), min(y0 + size, shape_zyx[1])
    xs, xe = max(x0, window.x_range[0]), min(x0 + size, window.x_range[1])
    return crop_czyx[..., ys - y0:ye - y0, xs - x0:xe - x0], (slice(ys, ye), slice(xs, xe))


def source_name(image) -> str:
    """The file an image came from, for messages ("image" when it was made in memory)."""
    return image.source_name("image") if hasattr(image, "source_name") else "image"


def slices_of(image: Volume, first: int, last: int) -> Volume:
    """Slices first..last (input z indices, inclusive) as a volume of their own, in place in space."""
    nz = image.array.shape[0]
    if not 0 <= first <= last < nz:
        raise InputError(source_name(image), f"slice range {first}-{last} is outside the image's "
                                             f"slices 0-{nz - 1}")
    origin = image.geometry.index_to_physical(np.array([0.0, 0.0, float(first)]))
    return Volume(image.array[first:last + 1], image.spacing_mm, tuple(origin), image.direction,
                  dict(image.metadata))


def air_threshold(smooth: np.ndarray) -> float:
    """The intensity above which a voxel is tissue: the lower of Otsu's two-class threshold and the
    lowest of a three-class one. Two classes alone split bright fat from the rest where fat fills
    much of the view (T1w, a thigh cropped to its own width), leaving the muscle out as "air"; the
    body's outline then stays open at the crop's edge, holes are not filled, and the one thigh was
    split in two at a dip that was its own muscle."""
    from skimage.filters import threshold_multiotsu
    two = sitk.OtsuThreshold(sitk.GetImageFromArray(smooth), 0, 1, 128)
    above = smooth[sitk.GetArrayFromImage(two).astype(bool)]
    sample = smooth[:, ::2, ::2].ravel()
    three = threshold_multiotsu(sample, 3)[0] if np.unique(sample[:1000]).size > 3 else np.inf
    return float(min(above.min() if above.size else np.inf, three))


def body_mask(array_zyx: np.ndarray) -> np.ndarray:
    """Tissue versus air (air_threshold of the smoothed image), small specks removed, holes filled."""
    smooth = ndimage.gaussian_filter(array_zyx.astype(np.float32), (0, 1.5, 1.5))
    smooth = np.clip(smooth, 0, np.percentile(smooth, 99.5))
    mask = smooth > air_threshold(smooth)
    mask = ndimage.binary_opening(mask, np.ones((1, 3, 3), bool))
    labels, n = ndimage.label(mask)
    if n:
        sizes = ndimage.sum(mask, labels, range(1, n + 1))
        mask = np.isin(labels, 1 + np.nonzero(sizes >= 0.02 * sizes.max())[0])
    for z in range(mask.shape[0]):
        mask[z] = ndimage.binary_fill_holes(mask[z])
    return mask


def leg_crops(image: Volume, spacing_mm: float, size: int):
    """(model-grid image, its array, its body mask, leg windows, one (z, size, size) crop per leg)."""
    grid_image = model_grid_image(image, spacing_mm, "linear")
    grid = sitk.GetArrayFromImage(grid_image).astype(np.float32)
    body = body_mask(grid)
    windows = leg_windows(body)
    if not windows:
        raise InputError(source_name(image), "no body found in the image")
    if len(windows) == 1:
        # One thigh in view: its side from the patient x coordinate of its centre (LPS: +x = left).
        w = windows[0]
        centre = grid_image.TransformContinuousIndexToPhysicalPoint((w.centre_yx[1], w.centre_yx[0], 0.0))
        windows = [LegWindow("left" if centre[0] > 0 else "right", w.x_range, w.centre_yx)]
    background = float(np.percentile(grid, 1))
    # The crop keeps the other thigh in view (as in training); the window limits what is kept.
    crops = [crop_leg(grid, LegWindow(w.side, (0, grid.shape[2]), w.centre_yx), size, fill=background)
             for w in windows]
    return grid_image, grid, body, windows, crops
