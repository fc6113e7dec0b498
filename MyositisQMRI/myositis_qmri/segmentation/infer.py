"""Segment every thigh muscle, left and right, on any structural series.

Steps: canonical orientation and in-plane resampling to the model spacing (canonical.py),
body mask and leg split at the gap, or the dip where the thighs touch, one crop per leg (the
left mirrored onto the right), the 2-D network slice by slice (averaged over shifted copies,
then blended with the neighbouring slices, none on slices without a body), probabilities
resampled back to the input grid, side assigned from patient position, then the largest
component per label and small holes filled. The result is an int16 label map on the input
grid (values from labels.py).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..geometry import resample_to
from ..progress import Progress, step
from ..volume import Volume
from .canonical import leg_crops, slices_of, source_name as _source_name, uncrop_leg
from .labels import LABEL_BY_KEY, LABEL_BY_VALUE, LEFT_OFFSET, N_MUSCLES
from .model import default_model_path, load_model, model_identity, read_model_bytes
from .synth import normalize_slice

MIN_FIELD_OF_VIEW_MM = 80.0


def _check_input(image) -> None:
    source = _source_name(image)
    if not isinstance(image, Volume) or image.array.ndim != 3:
        raise InputError(source, "segmentation needs one 3-D structural image; for a multi-echo "
                                 "series pass a single echo")
    nz, ny, nx = image.array.shape
    fov = np.array([nx, ny]) * np.array(image.spacing_mm[:2])
    if min(nx, ny) < 16 or fov.min() < MIN_FIELD_OF_VIEW_MM:
        raise InputError(source, f"image too small for a thigh ({nx}x{ny} voxels, "
                                 f"{fov[0]:.0f}x{fov[1]:.0f} mm in-plane)")
    if not np.isfinite(image.array).all() or float(np.ptp(image.array)) == 0:
        raise InputError(source, "image is constant or holds non-finite values")
    if nz == 1:
        warnings.warn(f"{source}: a single slice; segmenting it in 2-D", stacklevel=3)


# Test-time augmentation: the crop shifted by 3 model pixels (about 7 mm) in each direction and
# the probabilities averaged. On held-out label maps rendered as volumes (benchmarks/
# segmentation_volumes.py) this raised mean Dice from 0.835 to 0.862 at 5x the network time;
# centring each slice's crop instead gave nothing (0.837), so the gain is the averaging.
TTA_SHIFTS_PX = ((0, 0), (3, 0), (-3, 0), (0, 3), (0, -3))


# Slices per network pass: bounds the memory of long volumes (a pass holds every slice's feature
# maps) and paces the progress bar.
SLICES_PER_PASS = 16


def _leg_probabilities(network, crop_zyx: np.ndarray, device, shifts=((0, 0),), progress=None) -> np.ndarray:
    """Softmax (class, z, y, x) of one leg's crop, averaged over the in-plane shifts (dy, dx)."""
    import torch
    slices = np.stack([normalize_slice(s) for s in crop_zyx])[:, None]
    parts = []
    with torch.no_grad():
        for start in range(0, len(slices), SLICES_PER_PASS):
            chunk = slices[start:start + SLICES_PER_PASS]
            total = None
            for dy, dx in shifts:
                tensor = torch.from_numpy(np.ascontiguousarray(np.roll(chunk, (dy, dx), axis=(2, 3))))
                if device:
                    tensor = tensor.to(device)
                probs = np.roll(torch.softmax(network(tensor), 1).cpu().numpy(), (-dy, -dx), axis=(2, 3))
                total = probs if total is None else total + probs
            parts.append(total / len(shifts))
            if progress is not None:
                progress.update(len(chunk))
    return np.concatenate(parts).transpose(1, 0, 2, 3)


# Each slice's probabilities borrow this weight from each neighbouring slice ([w, 1-2w, w] along z).
# A 2-D network sees one slice; muscles change slowly along the thigh, so the neighbours vote. On
# the held-out label-map volumes (slices 4-24 mm apart) w = 0.2 raised mean Dice 0.864 -> 0.872.
NEIGHBOUR_SLICE_WEIGHT = 0.2


def smooth_across_slices(probs_czyx: np.ndarray, weight: float = NEIGHBOUR_SLICE_WEIGHT) -> np.ndarray:
    """Blend each slice's class probabilities with its neighbours' (edge slices repeat themselves)."""
    if probs_czyx.shape[1] < 2 or weight <= 0:
        return probs_czyx
    return ndimage.convolve1d(probs_czyx, [weight, 1 - 2 * weight, weight], axis=1, mode="nearest")


MAX_FILLED_HOLE_MM2 = 40.0   # holes up to this area are prediction speckle; larger ones are anatomy


def _postprocess(labels: np.ndarray, pixel_area_mm2: float) -> np.ndarray:
    """Keep each label's largest 3-D component, then fill its small in-slice holes.

    Only holes up to MAX_FILLED_HOLE_MM2 are filled: the femur inside the vastus intermedius
    and fat septa inside a muscle are real holes, and filling them would add marrow and fat to
    the muscle's statistics.
    """
    max_hole_px = MAX_FILLED_HOLE_MM2 / pixel_area_mm2
    out = np.zeros_like(labels)
    for value, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels[box] == value
        components, n = ndimage.label(mask)
        if n > 1:
            sizes = ndimage.sum(mask, components, range(1, n + 1))
            mask = components == 1 + int(np.argmax(sizes))
        for z in range(mask.shape[0]):
            mask[z] |= _small_holes(mask[z], max_hole_px)
        out[box][mask & (out[box] == 0)] = value
    return out


def _small_holes(mask_2d: np.ndarray, max_hole_px: float) -> np.ndarray:
    holes, n = ndimage.label(ndimage.binary_fill_holes(mask_2d) & ~mask_2d)
    if n == 0:
        return holes > 0
    sizes = ndimage.sum(np.ones_like(mask_2d), holes, range(1, n + 1))
    return np.isin(holes, 1 + np.flatnonzero(sizes <= max_hole_px))


# Slices whose body mask is below this fraction of the largest slice's hold no thigh (past the
# end of the legs, or an empty slice); the network would otherwise find muscles in their noise.
# Per slice rather than per voxel: in T1w the Otsu body mask can miss muscle where the
# subcutaneous fat ring is open, and masking voxels with it cost 0.04-0.08 Dice on such volumes.
MIN_BODY_FRACTION = 0.05


def _slices_without_body(body_zyx: np.ndarray) -> np.ndarray:
    area = body_zyx.sum(axis=(1, 2))
    return area < MIN_BODY_FRACTION * max(int(area.max()), 1)


# A thigh series shows thigh muscle over about half of the body's cross-section (0.40-0.60 per
# slice on the real thigh Dixon and the OAI T1 thighs), a thigh with thick subcutaneous fat and
# fatty muscles about 0.28, and a series reaching from the thigh up through the pelvis (half its
# slices without thigh muscle) 0.16. With the three-class body mask (canonical.air_threshold),
# which keeps more of the body than the old one, the shipped model labels at most 0.08 of five
# real calves, 0.06 of a hand and 0.09 of a foot (benchmarks/segmentation_not_thigh.py).
# Below this share, about halfway between, the user is warned.
MIN_THIGH_MUSCLE_FRACTION = 0.12


def thigh_muscle_fraction(probs_czyx: np.ndarray, body_zyx: np.ndarray) -> float:
    """Share of the body's voxels (model grid) whose most probable class is a thigh muscle."""
    return float(((probs_czyx.argmax(0) > 0) & body_zyx).sum() / max(int(body_zyx.sum()), 1))


def _warn_if_little_thigh(fraction: float, source: str) -> None:
    if fraction < MIN_THIGH_MUSCLE_FRACTION:
        warnings.warn(f"{source}: thigh muscles cover only {100 * fraction:.0f} % of the body (a thigh shows "
                      f"about half); is this a thigh series? If it is (for example with severe fatty "
                      f"replacement), check the masks", stacklevel=3)


# A muscle whose voxels the network gave, on average, less than this probability of the label they
# got has an outline worth checking. On the 22 OAI validation thighs (benchmarks/
# segmentation_confidence.py), the 8 of 176 traced groups below it had a mean Dice of 0.68 against
# 0.92 for the rest (rectus femoris and adductors on the scans where those miss); on the two
# severely fatty IDEAL thighs, 20 of 44 muscles, Dice 0.66 against 0.81. The demo's muscles and the
# other OAI groups sit at 0.85-0.98.
MIN_OUTLINE_CONFIDENCE = 0.80


def outline_confidence(labels: np.ndarray, winning_probability: np.ndarray) -> dict:
    """Per label key: the mean probability the network gave the label each of its voxels got.

    Low where the network hesitated between muscles or between muscle and background, which is
    where outlines are most often wrong; benchmarks/segmentation_confidence.py measures how well
    it picks out the muscles that disagree with real tracings."""
    values = labels.ravel()
    sums = np.bincount(values, winning_probability.ravel(), minlength=max(LABEL_BY_VALUE) + 1)
    counts = np.bincount(values, minlength=max(LABEL_BY_VALUE) + 1)
    return {LABEL_BY_VALUE[v].key: round(float(sums[v] / counts[v]), 3)
            for v in sorted(LABEL_BY_VALUE) if counts[v] > 0}


def unsure_outlines(confidence: dict) -> dict:
    """The entries of an outline_confidence record below MIN_OUTLINE_CONFIDENCE: the masks to check."""
    return {key: value for key, value in confidence.items() if value < MIN_OUTLINE_CONFIDENCE}


def _warn_if_unsure(confidence: dict, source: str) -> None:
    unsure = sorted((value, key) for key, value in unsure_outlines(confidence).items())
    if unsure:
        warnings.warn(f"{source}: the network was unsure of the outlines of "
                      f"{', '.join(f'{LABEL_BY_KEY[key].name} {value:.2f}' for value, key in unsure)}: "
                      "check and correct them", stacklevel=3)


def segment_muscles(image: Volume, model_path=None, device: str | None = None,
                    test_time_augmentation: bool = True, slice_range: tuple[int, int] | None = None) -> Volume:
    """Label map (int16, right 1-11, left 12-22) of the thigh muscles on the input grid.

    test_time_augmentation averages the network over TTA_SHIFTS_PX (5x slower, more accurate).
    slice_range (first, last), input z indices inclusive, segments only those slices (the thigh,
    leaving out hip or knee slices); the others get no label.
    """
    if slice_range is not None:
        first, last = (int(v) for v in slice_range)
        part = segment_muscles(slices_of(image, first, last), model_path, device, test_time_augmentation)
        labels = np.zeros(image.array.shape, np.int16)
        labels[first:last + 1] = part.array
        return image.with_array(labels, **{**part.metadata, "slice_range": [first, last]})
    import torch
    _check_input(image)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    model_path = Path(model_path) if model_path is not None else default_model_path()
    model_bytes = read_model_bytes(model_path)
    network, header = load_model(model_path, device=device, file_bytes=model_bytes)
    spacing = float(header["spacing_mm"][0])
    size = int(header["crop_px"])
    grid_image, grid, body, windows, crops = leg_crops(image, spacing, size)
    probs = np.zeros((N_MUSCLES + 1,) + grid.shape, np.float32)
    probs[0] = 1.0
    side_map = np.zeros(grid.shape, np.int16)
    step(f"segmenting {len(windows)} leg(s), {grid.shape[0]} slice(s)")
    with Progress(len(windows) * grid.shape[0], "segmenting", unit="slice") as progress:
        for window, crop in zip(windows, crops):
            leg_probs = smooth_across_slices(_leg_probabilities(
                network, crop, device, TTA_SHIFTS_PX if test_time_augmentation else ((0, 0),), progress))
            part, (ys, xs) = uncrop_leg(leg_probs, window, grid.shape)
            probs[:, :, ys, xs] = part
            side_map[:, ys, xs] = LEFT_OFFSET if window.side == "left" else 0
    empty = _slices_without_body(body)
    probs[1:, empty] = 0.0
    probs[0, empty] = 1.0
    muscle_fraction = thigh_muscle_fraction(probs, body)
    _warn_if_little_thigh(muscle_fraction, _source_name(image))
    reference = Volume.from_sitk(grid_image)
    best = np.full(image.array.shape, -1.0, np.float32)
    muscle = np.zeros(image.array.shape, np.int16)
    for channel in range(N_MUSCLES + 1):
        upsampled = resample_to(reference.with_array(probs[channel]), image.geometry, "linear",
                                default=1.0 if channel == 0 else 0.0).array
        better = upsampled > best
        best[better] = upsampled[better]
        muscle[better] = channel
    offset = resample_to(reference.with_array(side_map), image.geometry, "nearest").array
    labels = np.where(muscle > 0, muscle + offset, 0).astype(np.int16)
    labels = _postprocess(labels, image.spacing_mm[0] * image.spacing_mm[1])
    confidence = outline_confidence(labels, best)
    _warn_if_unsure(confidence, _source_name(image))
    return image.with_array(labels, image_kind="labels", source="myositis-qmri segment", resolution_mm=spacing,
                            model=header.get("provenance", {}).get("command", ""),
                            model_version=header.get("model_version"),
                            **{f"model_{key}": value for key, value in model_identity(model_path, model_bytes).items()},
                            test_time_augmentation=bool(test_time_augmentation),
                            thigh_muscle_fraction=round(muscle_fraction, 3), outline_confidence=confidence)
