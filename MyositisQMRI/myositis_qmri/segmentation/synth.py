"""Training images drawn from label maps (SynthSeg-style domain randomisation), one leg per slice.

`prepare_leg_slices` turns thigh label maps (values 1..11 on both legs) into canonical,
right-side (left mirrored) 2-D crops. `synthesize` draws a random image from a crop: it adds
the tissues the maps lack (subcutaneous fat, skin, femur cortex and marrow, unlabelled muscle,
intermuscular fat), gives every tissue a random intensity (Gaussian mixture), then applies
affine and elastic deformation, bias field, blur/resolution loss and noise.
`prepare_calf_slices` gives negative crops: calf muscles drawn as muscle, whose target is
background; `prepare_negative_image_slices` gives negative crops of real slices without
outlines (hip and pelvis), their intensity classes redrawn at random.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..io import read_volume
from ..volume import Volume
from ..progress import track
from .canonical import LegWindow, crop_leg, leg_crops, leg_windows, model_grid_image, slices_of
from .labels import MUSCLE_BY_KEY, N_MUSCLES

import SimpleITK as sitk

OTHER_LEG = N_MUSCLES + 1        # the opposite thigh's muscles: muscle-like, target background
# Extra tissue classes drawn procedurally (values above the muscle labels).
FAT, SKIN, CORTEX, MARROW, OTHER_MUSCLE, VESSEL, FASCIA = range(OTHER_LEG + 1, OTHER_LEG + 8)
N_TISSUES = FASCIA + 1
# Target value of unlabelled muscle beside adductor magnus: background or the adductor group.
# The label maps name adductor magnus alone, so adductor longus and brevis are gaps that add_tissues
# fills with muscle or fat; the schema's adductor row (and the real tracings) hold the whole group,
# so calling that muscle background would teach the network against the real tracings.
MAYBE_ADDUCTOR = N_MUSCLES + 1
ADDUCTOR = MUSCLE_BY_KEY["adductors"].index
ADDUCTOR_NEIGHBOUR_MM = 4.0   # unlabelled muscle this close to adductor magnus may be longus or brevis
PREP_MARGIN = 24                 # extra pixels around the crop for deformation
# The shapes fat takes: "patches" (islands, any direction), "streaks" (along the fibres, one
# direction per muscle), "rim" (creeping in from the fascia, the muscle's outline blurred into fat),
# "whole" (end-stage: one to four muscles almost wholly fat, only their fascia outlining them, as in
# inclusion body myositis and chronic disease).
INFILTRATION_PATTERNS = ("patches", "streaks", "rim", "whole")
DEFAULT_INFILTRATION_PATTERNS = ("patches",)   # what models before --infiltration-patterns learnt


@dataclass
class LegSlices:
    """Label crops (n, size, size) uint8 with the map each came from."""

    labels: np.ndarray
    source: np.ndarray  # index into `names`
    names: list[str]
    fatty_infiltration: float = 0.0   # share of draws with fat replacing muscle inside (synthesize)
    infiltration_patterns: tuple[str, ...] = DEFAULT_INFILTRATION_PATTERNS   # shapes that fat takes
    unlabelled_adductors: bool = False   # unlabelled muscle beside adductor magnus -> MAYBE_ADDUCTOR

    def __len__(self) -> int:
        return len(self.labels)

    def draw(self, rng, index: int, out_size: int, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
        return synthesize(rng, self.labels[index], out_size, spacing_mm, self.fatty_infiltration,
                          self.infiltration_patterns, self.unlabelled_adductors)

    def subset(self, names: set[str]) -> "LegSlices":
        keep = np.array([self.names[i] in names for i in self.source], dtype=bool)
        return dataclasses.replace(self, labels=self.labels[keep], source=self.source[keep])


# A muscle missing from one slice of a pair counts as this many pixels outside it there, so the
# slice halfway holds the other slice's outline shrunk by this much (it ends between the two).
ABSENT_MUSCLE_DISTANCE_PX = 6.0


def _signed_distance_px(mask: np.ndarray) -> np.ndarray:
    """Distance to the mask's edge in pixels: negative inside, positive outside."""
    if not mask.any():
        return np.full(mask.shape, ABSENT_MUSCLE_DISTANCE_PX, np.float32)
    outside = ndimage.distance_transform_edt(~mask)
    inside = ndimage.distance_transform_edt(mask)
    return (outside - inside).astype(np.float32)


def slice_between(labels_a: np.ndarray, labels_b: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """Label slice `fraction` of the way from a to b, by shape-based (signed-distance) interpolation.

    Label maps are stacks of 2-D slices 18-24 mm apart; the muscles' cross-sections change
    smoothly in between, so interpolated outlines are anatomy the network has not seen.
    """
    best = np.full(labels_a.shape, np.inf, np.float32)
    out = np.zeros(labels_a.shape, labels_a.dtype)
    for value in np.union1d(np.unique(labels_a), np.unique(labels_b)):
        if value == 0:
            continue
        distance = ((1 - fraction) * _signed_distance_px(labels_a == value)
                    + fraction * _signed_distance_px(labels_b == value))
        closer = (distance < 0) & (distance < best)
        best[closer] = distance[closer]
        out[closer] = value
    return out


def with_slices_between(labels_zyx: np.ndarray) -> np.ndarray:
    """The label stack with one interpolated slice inserted between each pair of labelled slices."""
    slices = [labels_zyx[0]]
    for below, above in zip(labels_zyx[:-1], labels_zyx[1:]):
        if below.any() and above.any():
            slices.append(slice_between(below, above))
        slices.append(above)
    return np.stack(slices)


def prepare_leg_slices(paths: list, spacing_mm: float, size: int,
                       min_muscle_px: int = 150, between_slices: bool = False) -> LegSlices:
    """Canonical right-leg label crops from label maps (files or Volumes, values 1..11 on both legs).

    between_slices adds a shape-interpolated slice between each pair of neighbouring slices.
    """
    crops, sources, names = [], [], []
    for index, path in enumerate(track(list(paths), desc="preparing label maps")):
        volume = path if isinstance(path, Volume) else read_volume(path)
        names.append(Path(path).name if not isinstance(path, Volume) else f"volume{index}")
        volume = volume.with_array(np.rint(volume.array).astype(np.uint8))
        grid = sitk.GetArrayFromImage(model_grid_image(volume, spacing_mm, "nearest"))
        grid = np.where(grid <= N_MUSCLES, grid, 0).astype(np.uint8)
        if between_slices:
            grid = with_slices_between(grid)
        for window in leg_windows(grid > 0):
            own = np.zeros_like(grid)
            a, b = window.x_range
            own[:, :, a:b] = grid[:, :, a:b]
            other = np.where((grid > 0) & (own == 0), OTHER_LEG, 0).astype(np.uint8)
            merged = own + other
            for z in range(grid.shape[0]):
                if (own[z] > 0).sum() < min_muscle_px:
                    continue
                ys, xs = np.nonzero(own[z])
                full = window.__class__(window.side, (0, grid.shape[2]), window.centre_yx)
                crop = crop_leg(merged[z:z + 1], full, size + 2 * PREP_MARGIN,
                                centre_yx=(ys.mean(), xs.mean()))[0]
                crops.append(crop)
                sources.append(index)
    return LegSlices(np.stack(crops).astype(np.uint8), np.asarray(sources), names)


# Negative anatomy: calf muscles from manual outlines, drawn like the other leg (muscle that is no
# thigh muscle, target background), so that a calf, or a slice past the knee, is not given thigh
# labels. The outlines miss the bones; the tibia sits beside tibialis anterior, the fibula beside
# the peronei.
CALF_TIBIALIS_ANTERIOR, CALF_PERONEUS, CALF_OTHER_MUSCLE = 1, 2, 3
CALF_BONES = ((CALF_TIBIALIS_ANTERIOR, 25.0, (9.0, 14.0)), (CALF_PERONEUS, 15.0, (5.0, 7.0)))


def calf_roi_files(folder) -> list[Path]:
    """The calf outline files (`*manual_rois*.npz`, dafne-evaluation layout) in a folder, sorted;
    InputError when there are none."""
    files = sorted(Path(folder).glob("*manual_rois*.npz"))
    if not files:
        raise InputError(folder, "no *manual_rois*.npz calf outline files in this folder")
    return files


def read_calf_rois(path) -> Volume:
    """One-slice volume (1 tibialis anterior, 2 peronei, 3 other muscle) of a dafne calf ROI file.

    Layout of dafne-imaging/dafne-evaluation: `X_manual_rois*.npz` holds one (y, x, 1) mask per
    muscle (`Soleus_R`, ...; rows anterior to posterior, columns patient right to left) and
    `X_example*.npz` beside it holds the image and its `resolution` (mm).
    """
    path = Path(path)
    example = path.with_name(path.name.replace("manual_rois", "example"))
    if not example.exists():
        raise InputError(path, f"no {example.name} beside it to give the pixel size")
    masks = np.load(path, allow_pickle=False)
    pixel_mm = [float(v) for v in np.load(example, allow_pickle=False)["resolution"][:2]]
    labels = None
    for name in masks.files:
        mask = np.asarray(masks[name]).reshape(masks[name].shape[:2]) > 0
        labels = np.zeros(mask.shape, np.uint8) if labels is None else labels
        value = (CALF_TIBIALIS_ANTERIOR if name.startswith("Tibialis Anterior") else
                 CALF_PERONEUS if name.startswith("Peroneus") else CALF_OTHER_MUSCLE)
        labels[mask & (labels == 0)] = value
    if labels is None or not labels.any():
        raise InputError(path, "holds no muscle outline")
    return Volume(labels[None], spacing_mm=(pixel_mm[1], pixel_mm[0], 10.0), origin_mm=(0.0, 0.0, 0.0),
                  direction=tuple(np.eye(3).ravel()))


def prepare_calf_slices(paths: list, spacing_mm: float, size: int) -> LegSlices:
    """Negative crops from calf ROI files: the calf's muscles as OTHER_LEG, tibia and fibula drawn."""
    slices = prepare_leg_slices([read_calf_rois(p) for p in paths], spacing_mm, size)
    slices.names = [Path(p).name for p in paths]
    rng = np.random.default_rng(0)
    for crop in slices.labels:
        own = (crop >= 1) & (crop <= CALF_OTHER_MUSCLE)
        gap = _muscle_envelope(own, spacing_mm) & (crop == 0)
        for neighbour, within_mm, radius_range_mm in CALF_BONES:
            centre, depth_mm = _deepest_point_near(gap & (crop == 0), crop == neighbour, spacing_mm, within_mm)
            if depth_mm > 2:
                radius_mm = float(np.clip(depth_mm, *radius_range_mm))
                _draw_bone(crop, centre, radius_mm, rng.uniform(2.0, 4.0), spacing_mm, keep=own)
        crop[own] = OTHER_LEG
    return slices


# Negative anatomy from real images without outlines: slices of the hip and pelvis above the
# thigh, where a reference segmentation has no thigh muscle, so every pixel's target is
# background. The slice's intensities are sorted into a few classes (1-D k-means) and each class
# is redrawn with a random intensity, as the label maps' tissues are, so that the network learns
# the anatomy, not the one scan's contrast.
N_INTENSITY_CLASSES = 6
REAL_CONTRAST_SHARE = 0.3   # share of draws that keep the scan's own intensities


@dataclass
class NegativeImageSlices:
    """One-leg crops (n, size, size) of real slices that hold no thigh muscle."""

    classes: np.ndarray   # uint8: 0 outside the field of view, 1..N_INTENSITY_CLASSES dark to bright
    images: np.ndarray    # float32: the crop itself, normalised as at inference
    names: list[str]      # "file:first-last" of each source

    def __len__(self) -> int:
        return len(self.classes)

    def draw(self, rng, index: int, out_size: int, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
        return synthesize_negative_image(rng, self.classes[index], self.images[index], out_size)


def parse_negative_image(spec: str) -> tuple[Path, int | None, int | None]:
    """`PATH` or `PATH:FIRST-LAST` (0-based input slice indices, inclusive) of a negative image."""
    path, _, span = str(spec).rpartition(":") if ":" in str(spec) else (str(spec), "", "")
    if not span:
        return Path(spec), None, None
    first, sep, last = span.partition("-")
    if not (sep and first.isdigit() and last.isdigit()) or int(first) > int(last):
        raise InputError(spec, "a negative image is PATH or PATH:FIRST-LAST (slice indices, 0-based)")
    return Path(path), int(first), int(last)


def intensity_classes(image: np.ndarray, inside: np.ndarray, n_classes: int = N_INTENSITY_CLASSES) -> np.ndarray:
    """Class per pixel: 0 outside `inside`, else 1..n (dark to bright) by 1-D k-means of its intensities."""
    values = image[inside]
    if values.size < n_classes:
        return inside.astype(np.uint8)
    centres = np.quantile(values, (np.arange(n_classes) + 0.5) / n_classes)
    for _ in range(20):
        nearest = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
        centres = np.array([values[nearest == k].mean() if (nearest == k).any() else centres[k]
                            for k in range(n_classes)])
    order = np.argsort(np.argsort(centres))
    classes = np.zeros(image.shape, np.uint8)
    classes[inside] = 1 + order[np.argmin(np.abs(values[:, None] - centres[None]), axis=1)]
    return classes


def prepare_negative_image_slices(specs: list, spacing_mm: float, size: int) -> NegativeImageSlices:
    """One-leg crops, cut as at inference, of the given real slices that hold no thigh muscle."""
    classes, images, names = [], [], []
    for spec in specs:
        path, first, last = parse_negative_image(spec)
        volume = read_volume(path)
        if volume.array.ndim != 3:
            raise InputError(path, "a negative image must be one 3-D image")
        first, last = (0, volume.array.shape[0] - 1) if first is None else (first, last)
        part = slices_of(volume, first, last)
        _, grid, body, windows, crops = leg_crops(part, spacing_mm, size + 2 * PREP_MARGIN)
        for window, crop in zip(windows, crops):
            whole = LegWindow(window.side, (0, grid.shape[2]), window.centre_yx)
            # Classes cover the whole field of view: at the hip the body is wider than the field
            # of view, its outline is open, and the body mask holds only the bright fat.
            in_view = crop_leg(np.ones(grid.shape, bool), whole, size + 2 * PREP_MARGIN, fill=False)
            has_body = crop_leg(body, whole, size + 2 * PREP_MARGIN, fill=False).any(axis=(1, 2))
            for z in np.flatnonzero(has_body):
                image = normalize_slice(crop[z])
                classes.append(intensity_classes(image, in_view[z]))
                images.append(image)
        names.append(f"{path.name}:{first}-{last}")
    if not classes:
        raise InputError(specs[0] if specs else "negative images", "no body in the negative image slices")
    return NegativeImageSlices(np.stack(classes), np.stack(images).astype(np.float32), names)


def synthesize_negative_image(rng, classes: np.ndarray, image: np.ndarray, out_size: int):
    """One random image from a real negative crop (its classes redrawn, or its own contrast); target 0."""
    coords = _warp_coordinates(rng, classes.shape[0], out_size)
    if rng.random() < REAL_CONTRAST_SHARE:
        out = ndimage.map_coordinates(image, coords, order=1, mode="nearest")
    else:
        out = redraw_classes(rng, classes, image, coords)
    out = _scanner_effects(rng, np.clip(out, 0, None).astype(np.float64))
    return normalize_slice(out.astype(np.float32)), np.zeros((out_size, out_size), np.int64)


def redraw_classes(rng, classes: np.ndarray, image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """A real crop sampled at `coords` with each intensity class given a random intensity (in
    random or in the scan's order), keeping the scan's own texture within each class at a random
    strength: real anatomy in a contrast the scan did not have."""
    detail = ndimage.map_coordinates(image, coords, order=1, mode="nearest")
    warped = ndimage.map_coordinates(classes, coords, order=0, mode="constant", cval=0)
    means = np.sort(rng.uniform(0, 1, N_INTENSITY_CLASSES + 1)) if rng.random() < 0.5 else \
        rng.uniform(0, 1, N_INTENSITY_CLASSES + 1)
    means[0] = rng.uniform(0, 0.15) if rng.random() < 0.9 else rng.uniform(0, 1)
    counts = np.bincount(warped.ravel(), minlength=N_INTENSITY_CLASSES + 1)
    class_mean = np.bincount(warped.ravel(), detail.ravel(), N_INTENSITY_CLASSES + 1) / np.maximum(counts, 1)
    residual = detail - class_mean[warped]
    return means[warped] + rng.uniform(0, 1.0) * residual + rng.normal(0, rng.uniform(0.005, 0.06), warped.shape)


def _muscle_envelope(mask: np.ndarray, spacing_mm: float) -> np.ndarray:
    """The muscle mass around `mask`: closed and hole-filled, so the gaps inside it are included."""
    radius = int(round(6 / spacing_mm * 1.5))
    disk = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius
    closed = ndimage.binary_closing(mask, disk, iterations=2)
    return ndimage.binary_fill_holes(closed | mask)


def _smooth_field(rng, shape, scale_px: float, amplitude: float) -> np.ndarray:
    coarse = rng.normal(0, 1, (max(int(shape[0] / scale_px), 2) + 1, max(int(shape[1] / scale_px), 2) + 1))
    field = ndimage.zoom(coarse, (shape[0] / coarse.shape[0], shape[1] / coarse.shape[1]), order=3)
    return amplitude * field[: shape[0], : shape[1]]


def _warp_coordinates(rng, n: int, out_size: int, strength: float = 1.0) -> np.ndarray:
    """Sampling coordinates (2, out_size, out_size) into an n x n crop: random affine + elastic
    warp around a jittered centre."""
    angle = np.deg2rad(rng.normal(0, 10) * strength)
    scale = np.exp(rng.normal(0, 0.12, 2) * strength)
    shear = rng.normal(0, 0.05) * strength
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rot @ np.array([[1 / scale[0], shear], [0, 1 / scale[1]]])
    yy, xx = np.mgrid[0:out_size, 0:out_size].astype(float) - (out_size - 1) / 2
    coords = np.einsum("ij,jyx->iyx", matrix, np.stack([yy, xx]))
    centre = (n - 1) / 2 + rng.normal(0, 6, 2) * strength
    coords += centre[:, None, None]
    for axis in range(2):
        coords[axis] += _smooth_field(rng, (out_size, out_size), out_size / 5, 2.5 * strength)
    return coords


def _deform(rng, labels: np.ndarray, out_size: int, strength: float = 1.0) -> np.ndarray:
    """Random affine + elastic warp of a label crop, nearest neighbour, out_size square."""
    coords = _warp_coordinates(rng, labels.shape[0], out_size, strength)
    return ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0)


def add_tissues(rng, labels: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Tissue map: muscles 1..11, other leg, plus fat, skin, femur, unlabelled muscle, vessels."""
    tissue = labels.astype(np.uint8).copy()
    own = (labels >= 1) & (labels <= N_MUSCLES)
    muscle_any = labels > 0
    # Muscle mass envelope per leg; the gaps inside it are fat or unlabelled muscle.
    envelope = np.zeros_like(own)
    for mask in (own, labels == OTHER_LEG):
        if mask.any():
            envelope |= _muscle_envelope(mask, spacing_mm)
    inside_gap = envelope & ~muscle_any
    # Femur: the largest inscribed circle of the gap near the vastus intermedius.
    vi = labels == 4
    if vi.any():
        centre, depth_mm = _deepest_point_near(inside_gap, vi, spacing_mm, within_mm=25)
        if depth_mm > 4:
            radius_mm = float(np.clip(depth_mm * rng.uniform(0.85, 1.1), 8, 17))
            _draw_bone(tissue, centre, radius_mm, rng.uniform(2.5, 6.0), spacing_mm, keep=own)
    gap = envelope & (tissue == 0)
    # Split the gaps into blobs; each blob is fat or unlabelled muscle (adductor longus, brevis...).
    blobs, n_blobs = ndimage.label(gap)
    if n_blobs:
        choice = rng.random(n_blobs + 1) < rng.uniform(0.2, 0.7)
        tissue[gap & choice[blobs]] = OTHER_MUSCLE
        tissue[gap & ~choice[blobs]] = FAT
    # Fascia between touching muscles: at 2-3 mm pixels a sub-pixel fat plane shows as a line of
    # partial volume (FASCIA, between muscle and fat), sometimes as frank fat, sometimes not at all.
    if rng.random() < 0.9:
        grown = ndimage.grey_dilation(labels, size=3)
        septa = own & (grown != labels) & (rng.random(labels.shape) < rng.uniform(0.3, 1.0))
        tissue[septa] = FAT if rng.random() < 0.3 else FASCIA
    # Subcutaneous fat of random (smoothly varying) thickness, then skin.
    body_any = envelope | muscle_any
    outside = ndimage.distance_transform_edt(~body_any) * spacing_mm
    thickness = rng.uniform(3, 30) + _smooth_field(rng, labels.shape, labels.shape[0] / 3, rng.uniform(1, 6))
    skin_mm = rng.uniform(1.0, 3.0)
    body = outside < np.maximum(thickness, 1.0)
    tissue[body & (tissue == 0)] = FAT
    tissue[body & (outside >= thickness - skin_mm) & (tissue == FAT)] = SKIN
    # A few small vessels in the fat (the femoral vessels and perforators look like dots).
    fat_idx = np.flatnonzero(tissue == FAT)
    if len(fat_idx):
        for index in rng.choice(fat_idx, size=min(len(fat_idx), rng.integers(0, 6)), replace=False):
            cy, cx = divmod(int(index), labels.shape[1])
            r = rng.uniform(1.0, 4.0) / spacing_mm
            yy, xx = np.ogrid[0:labels.shape[0], 0:labels.shape[1]]
            tissue[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (tissue == FAT)] = VESSEL
    return tissue


def _deepest_point_near(gap: np.ndarray, near: np.ndarray, spacing_mm: float, within_mm: float):
    """(y, x) of the gap pixel farthest from the gap's edge, within within_mm of `near`; its depth in mm."""
    depth = ndimage.distance_transform_edt(gap) * spacing_mm
    depth = np.where(gap & (ndimage.distance_transform_edt(~near) * spacing_mm < within_mm), depth, 0)
    centre = np.unravel_index(np.argmax(depth), depth.shape)
    return centre, float(depth.max())


def _draw_bone(tissue: np.ndarray, centre, radius_mm: float, cortex_mm: float, spacing_mm: float,
               keep: np.ndarray) -> None:
    """A round long bone (cortex ring around marrow) drawn into `tissue`, sparing the `keep` pixels."""
    dist_mm = np.hypot(*(np.mgrid[0:tissue.shape[0], 0:tissue.shape[1]]
                         - np.array(centre)[:, None, None])) * spacing_mm
    bone = (dist_mm <= radius_mm) & ~keep
    tissue[bone] = CORTEX
    tissue[bone & (dist_mm <= radius_mm - cortex_mm)] = MARROW


def _tissue_intensities(rng) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per tissue: random contrast, muscles alike but not equal."""
    means = rng.uniform(0, 1, N_TISSUES)
    means[0] = rng.uniform(0, 0.15) if rng.random() < 0.9 else rng.uniform(0, 1)  # background (air)
    muscle_base = rng.uniform(0.05, 0.9)
    spread = rng.choice([0.02, 0.06, 0.15], p=[0.5, 0.35, 0.15])
    means[1:OTHER_LEG + 1] = muscle_base + rng.normal(0, spread, OTHER_LEG)
    means[OTHER_MUSCLE] = muscle_base + rng.normal(0, spread)
    # Diseased muscles (edema or fatty replacement) are brighter or darker than the rest.
    for value in rng.choice(np.arange(1, N_MUSCLES + 1), size=rng.integers(0, 4), replace=False):
        means[value] += rng.normal(0, 0.2)
    if rng.random() < 0.85:
        # Fat differs clearly from muscle: bright (T1w, Dixon fat, in-phase) or dark (STIR, water).
        sign = 1 if rng.random() < 0.6 else -1
        means[FAT] = np.clip(muscle_base + sign * rng.uniform(0.25, 0.8), 0, 1.2)
    means[MARROW] = means[FAT] + rng.normal(0, 0.08)
    means[FASCIA] = muscle_base + rng.uniform(0.25, 0.8) * (means[FAT] - muscle_base)
    means[CORTEX] = rng.uniform(0, 0.12)
    means[SKIN] = rng.uniform(0, 1)
    stds = rng.uniform(0.005, 0.06, N_TISSUES)
    return means, stds


def synthesize(rng, labels: np.ndarray, out_size: int, spacing_mm: float,
               fatty_infiltration: float = 0.0,
               infiltration_patterns: tuple[str, ...] = DEFAULT_INFILTRATION_PATTERNS,
               unlabelled_adductors: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One random image (out_size^2, float32, roughly 0..1) and its target (0..11) from a label crop.

    fatty_infiltration: the share of draws whose muscles are partly replaced by fat (infiltrate_fat);
    0 draws exactly what earlier versions drew from the same generator; infiltration_patterns: the
    shapes fat takes, one drawn per image (INFILTRATION_PATTERNS). unlabelled_adductors marks
    unlabelled muscle beside adductor magnus MAYBE_ADDUCTOR (train with a loss that accepts either);
    it draws nothing more from the generator.
    """
    warped = _deform(rng, labels, out_size)
    tissue = add_tissues(rng, warped, spacing_mm)
    means, stds = _tissue_intensities(rng)
    image = means[tissue] + stds[tissue] * rng.normal(0, 1, tissue.shape)
    if fatty_infiltration > 0 and rng.random() < fatty_infiltration:
        image = infiltrate_fat(rng, image, tissue, means[FAT], spacing_mm, infiltration_patterns)
    image = _scanner_effects(rng, image)
    target = np.where(warped <= N_MUSCLES, warped, 0).astype(np.int64)
    if unlabelled_adductors:
        target[unlabelled_muscle_beside_adductor(tissue, warped, spacing_mm)] = MAYBE_ADDUCTOR
    return normalize_slice(image.astype(np.float32)), target


def unlabelled_muscle_beside_adductor(tissue: np.ndarray, labels: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Pixels of unlabelled-muscle blobs that come within ADDUCTOR_NEIGHBOUR_MM of adductor magnus."""
    magnus = labels == ADDUCTOR
    other = tissue == OTHER_MUSCLE
    if not magnus.any() or not other.any():
        return np.zeros(labels.shape, bool)
    near = ndimage.distance_transform_edt(~magnus) * spacing_mm <= ADDUCTOR_NEIGHBOUR_MM
    blobs, _ = ndimage.label(other)
    return np.isin(blobs, np.unique(blobs[near & other]))


# Fatty replacement, the chronic damage this tool grades, is patchy: fat streaks and islands
# ("moth-eaten" muscle, Mercuri grades 2-3) a few millimetres across, worse in some muscles.
INFILTRATION_SCALE_MM = (1.5, 6.0)


def check_infiltration_patterns(patterns) -> tuple[str, ...]:
    """The names given, if each is one of INFILTRATION_PATTERNS (and there is at least one)."""
    unknown = set(patterns) - set(INFILTRATION_PATTERNS)
    if unknown or not patterns:
        raise ValueError(f"fat infiltration patterns {sorted(unknown) or '(none)'}: choose from {INFILTRATION_PATTERNS}")
    return tuple(patterns)


def infiltrate_fat(rng, image: np.ndarray, tissue: np.ndarray, fat_intensity: float,
                   spacing_mm: float, patterns: tuple[str, ...] = DEFAULT_INFILTRATION_PATTERNS,
                   whole_candidates: np.ndarray | None = None) -> np.ndarray:
    """Muscle pixels partly replaced by fat: a patchy fat-fraction map per muscle (its own severity),
    mixed as in-phase images mix (signal between muscle and fat) or, in half the draws, as
    opposed-phase images do (|water - fat|: dark where fat and water cancel, at about half fat),
    where the fascia and the muscle's edge against fat, part fat themselves, also turn dark
    (the "India ink" outline of opposed-phase images). patterns: the shapes one is drawn from
    (INFILTRATION_PATTERNS); a single one draws nothing to choose it. whole_candidates: the tissues
    "whole" may pick (default every muscle tissue; a real crop passes the groups it holds)."""
    check_infiltration_patterns(patterns)
    kind = patterns[0] if len(patterns) == 1 else patterns[rng.integers(len(patterns))]
    muscle_tissues = np.r_[np.arange(1, OTHER_LEG + 1), OTHER_MUSCLE]
    severity = np.zeros(N_TISSUES)
    severity[muscle_tissues] = rng.uniform(0.15, 0.9) * rng.uniform(0, 1, len(muscle_tissues)) ** 2
    if kind == "whole":
        candidates = muscle_tissues if whole_candidates is None else np.asarray(whole_candidates)
        chosen = rng.choice(candidates, size=min(int(rng.integers(1, 5)), len(candidates)), replace=False)
        severity[chosen] = rng.uniform(0.8, 1.0, len(chosen))
    scale_px = rng.uniform(*INFILTRATION_SCALE_MM) / spacing_mm
    pattern = (_streak_field(rng, tissue, scale_px) if kind == "streaks"
               else _smooth_field(rng, image.shape, scale_px, 1.0))
    threshold = rng.uniform(-0.5, 1.0)
    patches = np.clip((pattern - threshold) / rng.uniform(0.2, 0.8), 0, 1)
    fraction = severity[tissue] * (patches + rng.uniform(0, 0.5) * (1 - patches))
    if kind == "whole":
        fraction = np.where(np.isin(tissue, chosen), severity[tissue] * rng.uniform(0.9, 1.0), fraction)
    if kind == "rim":
        fraction = np.maximum(fraction, np.sqrt(severity[tissue]) * _rim_weight(rng, tissue, spacing_mm))
    fat = fat_intensity + rng.normal(0, 0.02, image.shape)
    if rng.random() < 0.5:
        muscle = np.isin(tissue, muscle_tissues)
        edge = muscle & ndimage.binary_dilation(tissue == FAT)
        fraction = np.where(edge, np.maximum(fraction, rng.uniform(0.3, 0.6)), fraction)
        fraction = np.where(tissue == FASCIA, rng.uniform(0.35, 0.65), fraction)
        return np.abs((1 - fraction) * image - fraction * fat)
    return (1 - fraction) * image + fraction * fat


def _streak_field(rng, tissue: np.ndarray, scale_px: float, n_directions: int = 3) -> np.ndarray:
    """Zero-mean field of unit spread, stretched 3-8x along one of a few directions, each muscle
    taking one: fat laid down between fibre bundles, cut at the fibres' angle to the slice."""
    field, sigma_px = np.zeros(tissue.shape), scale_px / 2
    direction_of = rng.integers(0, n_directions, N_TISSUES)
    for direction in range(n_directions):
        noise = ndimage.gaussian_filter(rng.normal(0, 1, tissue.shape), (sigma_px * rng.uniform(3, 8), sigma_px))
        noise = ndimage.rotate(noise, rng.uniform(0, 180), reshape=False, mode="reflect")
        field = np.where(direction_of[tissue] == direction, noise / (noise.std() + 1e-9), field)
    return field


def _rim_weight(rng, tissue: np.ndarray, spacing_mm: float) -> np.ndarray:
    """1 at every tissue boundary, fading inward over 2-8 mm: fat replacing a muscle from its edge."""
    boundary = ndimage.grey_dilation(tissue, size=3) != ndimage.grey_erosion(tissue, size=3)
    depth_mm = ndimage.distance_transform_edt(~boundary) * spacing_mm
    return np.exp(-depth_mm / rng.uniform(2, 8))


def _scanner_effects(rng, image: np.ndarray) -> np.ndarray:
    """Texture, blur and resolution loss, coil bias field, Rician-like noise and a random gamma."""
    out_size = image.shape[0]
    # Within-tissue texture (fat marbling, fibres).
    image += _smooth_field(rng, image.shape, rng.uniform(2, 8), rng.uniform(0, 0.04))
    # Partial volume and lower resolution: blur, optionally down- and up-sample.
    if rng.random() < 0.7:
        image = ndimage.gaussian_filter(image, rng.uniform(0.3, 1.2))
    if rng.random() < 0.3:
        factor = rng.uniform(1.2, 2.5)
        small = ndimage.zoom(image, 1 / factor, order=1)
        image = ndimage.zoom(small, np.array(image.shape) / np.array(small.shape), order=1)[: out_size, : out_size]
    # Coil bias field (multiplicative, smooth).
    image = image * np.exp(_smooth_field(rng, image.shape, image.shape[0] / rng.uniform(1.5, 4), rng.uniform(0, 0.35)))
    # Rician-like noise: magnitude of complex Gaussian noise.
    sigma = rng.uniform(0, 0.06)
    image = np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))
    if rng.random() < 0.3:
        image = image ** rng.uniform(0.6, 1.6)
    return image


def normalize_slice(image: np.ndarray) -> np.ndarray:
    """Robust per-slice scaling to about 0..1 (0.5th and 99.5th percentiles), as at inference."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / max(hi - lo, 1e-6), -0.5, 1.5).astype(np.float32)
