"""Real scans traced in muscle groups, as training and validation data.

Images rendered from label maps taught the network anatomy in any contrast, but real scans hold
what the rendering lacks (real fascia, vessels, partial volume, coil shading, real fat). The OAI
thighs in ../shared/data are real T1 spin-echo scans whose right thigh was traced by hand in
groups (vasti together, adductors together, biceps heads together). `RealSlices` cuts them into the
same one-leg crops as inference and draws them with the same deformation and scanner effects as
the synthetic images; in most draws their intensity classes are redrawn at random (as for the
negative hip slices), so that they add real anatomy without tying the network to T1 contrast. The
targets are group values, learnt through `losses.marginal_dice_ce`.

With `fatty_infiltration` set, a share of the draws replaces the traced muscles partly or wholly with
the scan's own fat (synth.infiltrate_fat): real anatomy in end-stage myositis, where only fascia and
position tell the muscles apart, which the few labelled fatty scans cannot teach alone.

The validation split is fixed before any training: every VALIDATION_EVERY-th subject by sorted id.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..geometry import align_labels_to
from ..io import read_volume
from ..progress import track
from ..volume import Volume
from . import synth
from .canonical import LegWindow, crop_leg, leg_crops, model_grid_image
from .labels import GROUP_SCHEMES, LEFT_OFFSET, N_MUSCLES, OAI_SARTORIUS_GRACILIS, GroupScheme

SHARED_DATA = Path(os.environ.get("MYOSITIS_QMRI_SHARED_DATA",
                                  Path(__file__).resolve().parents[3].parent / "shared" / "data"))
OAI_FOLDER = SHARED_DATA / "oai_thigh_t1"
IDEAL_FOLDER = SHARED_DATA / "thigh_ideal_predicted"
VALIDATION_EVERY = 5        # subjects 0, 5, 10, ... by sorted id are held out (22 of 108)
IGNORE = -1                 # target value of pixels without supervision
OWN_CONTRAST_SHARE = 0.35   # share of draws that keep the scan's own (T1) intensities


def oai_subjects(folder: Path = OAI_FOLDER) -> list[Path]:
    """Subject folders holding image.nii.gz and labels.nii.gz, sorted by id."""
    return sorted(p for p in Path(folder).iterdir() if (p / "labels.nii.gz").exists() and (p / "image.nii.gz").exists())


def oai_split(folder: Path = OAI_FOLDER) -> tuple[list[Path], list[Path]]:
    """(training, validation) subject folders; validation is fixed: every VALIDATION_EVERY-th by id."""
    subjects = oai_subjects(folder)
    validation = subjects[::VALIDATION_EVERY]
    return [s for s in subjects if s not in validation], validation


def check_scheme_values(labels: Volume, scheme: GroupScheme | None) -> None:
    """Refuse a label file whose values are neither the schema's (scheme None) nor the group scheme's."""
    found = set(np.unique(np.rint(labels.array)).astype(int).tolist()) - {0}
    allowed = set(range(1, 2 * N_MUSCLES + 1)) if scheme is None else set(scheme.groups)
    unknown = sorted(found - allowed)
    if unknown:
        what = "the muscle schema (1-22)" if scheme is None else f"the {scheme.name} scheme ({sorted(allowed)})"
        raise InputError(labels.source_name("labels"),
                         f"label values {unknown} are not in {what}; found values {sorted(found)}")


def group_targets(values: np.ndarray, scheme: GroupScheme | None) -> np.ndarray:
    """Targets in the scheme's values, traced-but-not-muscle values (femur) made background.
    Scheme None: the project's fine values, both sides folded to 1..11."""
    if scheme is None:
        return np.where(values > LEFT_OFFSET, values - LEFT_OFFSET, values).astype(np.int64)
    lookup = np.zeros(max(max(scheme.groups), int(values.max(initial=0))) + 1, np.int64)
    for value, muscles in scheme.groups.items():
        lookup[value] = value if muscles else 0
    return lookup[values]


@dataclass
class RealSlices:
    """One-leg crops (n, size + 2 margin, square) of real scans with group targets."""

    images: np.ndarray     # float32, normalised as at inference
    classes: np.ndarray    # uint8 intensity classes (synth.intensity_classes), 0 outside the view
    targets: np.ndarray    # int16 scheme values; IGNORE outside the field of view
    source: np.ndarray     # index into names
    names: list[str]
    scheme: str            # a GROUP_SCHEMES key
    fatty_infiltration: float = 0.0   # share of draws whose traced muscles are partly replaced by fat
    infiltration_patterns: tuple[str, ...] = synth.DEFAULT_INFILTRATION_PATTERNS   # shapes that fat takes

    def __len__(self) -> int:
        return len(self.images)

    def draw(self, rng, index: int, out_size: int, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """A deformed, contrast-randomised image and its target (IGNORE where unsupervised)."""
        coords = synth._warp_coordinates(rng, self.images.shape[1], out_size)
        target = ndimage.map_coordinates(self.targets[index], coords, order=0, mode="constant", cval=IGNORE)
        if rng.random() < OWN_CONTRAST_SHARE:
            image = ndimage.map_coordinates(self.images[index], coords, order=1, mode="nearest")
        else:
            image = synth.redraw_classes(rng, self.classes[index], self.images[index], coords)
        if self.fatty_infiltration > 0 and rng.random() < self.fatty_infiltration:
            image = self._replace_muscle_with_fat(rng, index, image, target, coords, spacing_mm)
        image = synth._scanner_effects(rng, np.clip(image, 0, None).astype(np.float64))
        return synth.normalize_slice(image.astype(np.float32)), target.astype(np.int64)

    def _replace_muscle_with_fat(self, rng, index: int, image: np.ndarray, target: np.ndarray,
                                 coords: np.ndarray, spacing_mm: float) -> np.ndarray:
        """The drawn image with its traced muscles partly replaced by the intensity of the scan's own
        fat (whichever it is in this draw: bright in T1 or a fat image, dark in a water image)."""
        fat = fat_class(self.classes[index], self.targets[index])
        classes = ndimage.map_coordinates(self.classes[index], coords, order=0, mode="constant", cval=0)
        tissue = np.where(target > 0, np.clip(target, 0, N_MUSCLES), 0).astype(np.uint8)
        tissue[(target <= 0) & (classes == fat)] = synth.FAT
        if fat == 0 or not (tissue == synth.FAT).any() or not (target > 0).any():
            return image
        fat_intensity = float(np.median(image[tissue == synth.FAT]))
        return synth.infiltrate_fat(rng, image, tissue, fat_intensity, spacing_mm, self.infiltration_patterns,
                                    whole_candidates=np.unique(tissue[(tissue > 0) & (tissue <= N_MUSCLES)]))


FAT_BAND_PX = 4   # width of the ring around the traced muscles in which the scan's fat class is found


def fat_class(classes: np.ndarray, targets: np.ndarray) -> int:
    """The intensity class of fat in one crop: the most common class in the ring just outside the traced
    muscles (subcutaneous and intermuscular fat), whatever the contrast; 0 if the crop has no muscle."""
    muscle = targets > 0
    ring = ndimage.binary_dilation(muscle, iterations=FAT_BAND_PX) & ~muscle & (targets == 0) & (classes > 0)
    if not ring.any():
        return 0
    return int(np.argmax(np.bincount(classes[ring])))


def labelled_leg_crops(image: Volume, labels: Volume, spacing_mm: float, size: int, scheme: GroupScheme | None):
    """(model-grid image, [(image crop, target crop, in-view mask, model-grid slice)]) of every leg
    slice that holds labels.

    Crops are cut as at inference (canonical.leg_crops). For group labels (no side), a leg's
    target is whatever labels lie in its window; for fine labels, its own side's values.
    """
    labels = align_labels_to(labels, image)
    grid_image, grid, _, windows, crops = leg_crops(image, spacing_mm, size)
    values = sitk.GetArrayFromImage(model_grid_image(labels, spacing_mm, "nearest")).astype(np.int64)
    out = []
    for window, crop in zip(windows, crops):
        a, b = window.x_range
        own = np.zeros_like(values)
        if scheme is None:
            offset = LEFT_OFFSET if window.side == "left" else 0
            keep = (values > offset) & (values <= offset + N_MUSCLES)
            own[keep] = values[keep]
        else:
            own[:, :, a:b] = values[:, :, a:b]
        whole = LegWindow(window.side, (0, grid.shape[2]), window.centre_yx)
        target = crop_leg(group_targets(own, scheme), whole, size, fill=0)
        traced = crop_leg(own > 0, whole, size, fill=False)
        in_view = crop_leg(np.ones(grid.shape, bool), whole, size, fill=False)
        for z in np.flatnonzero(traced.any(axis=(1, 2))):
            out.append((crop[z], target[z], in_view[z], z))
    return grid_image, out


def prepare_real_slices(subjects: list[Path], scheme_name: str, spacing_mm: float, size: int,
                        image_name: str = "image.nii.gz", labels_name: str = "labels.nii.gz") -> RealSlices:
    """RealSlices from subject folders (image and group labels on one grid)."""
    cases = [(Path(folder) / image_name, Path(folder) / labels_name) for folder in subjects]
    return prepare_real_cases(cases, scheme_name, spacing_mm, size, names=[Path(f).name for f in subjects])


def prepare_real_cases(cases: list[tuple[Path, Path]], scheme_name: str, spacing_mm: float, size: int,
                       names: list[str] | None = None) -> RealSlices:
    """RealSlices from (image file, labels file) pairs whose labels use one scheme."""
    scheme = GROUP_SCHEMES[scheme_name]
    n = size + 2 * synth.PREP_MARGIN
    images, classes, targets, sources = [], [], [], []
    for index, (image_path, labels_path) in enumerate(track(list(cases), desc="preparing real scans")):
        image, labels = read_volume(image_path), read_volume(labels_path)
        labels = labels.with_array(np.rint(labels.array).astype(np.int16))
        check_scheme_values(labels, scheme)
        for crop, target, in_view, _ in labelled_leg_crops(image, labels, spacing_mm, n, scheme)[1]:
            normalised = synth.normalize_slice(crop)
            images.append(normalised)
            classes.append(synth.intensity_classes(normalised, in_view))
            targets.append(np.where(in_view, target, IGNORE).astype(np.int16))
            sources.append(index)
    if not images:
        raise InputError(cases[0][1] if cases else "real scans", "no traced slice found")
    names = names or [f"{Path(i).parent.name}/{Path(i).name}" for i, _ in cases]
    return RealSlices(np.stack(images).astype(np.float32), np.stack(classes), np.stack(targets),
                      np.asarray(sources), list(names), scheme_name)


def sartorius_behind_gracilis(labels: Volume) -> bool:
    """True when an OAI-group tracing's sartorius lies posterior to its gracilis on most slices: the
    two values swapped. At mid-thigh sartorius runs anteromedially and gracilis posteromedially; 107
    of the 108 shared OAI tracings agree on every slice, one (a validation subject) disagrees on every
    slice. Benchmarks flag such a reference rather than trust it."""
    sartorius, gracilis = OAI_SARTORIUS_GRACILIS
    votes = []
    for z in range(labels.array.shape[0]):
        plane = np.rint(labels.array[z])
        if not ((plane == gracilis).any() and (plane == sartorius).any()):
            continue
        centres = [np.argwhere(plane == v).mean(axis=0)[::-1] for v in (gracilis, sartorius)]   # (x, y)
        at_gracilis, at_sartorius = (labels.geometry.index_to_physical([*c, z]) for c in centres)
        votes.append(at_sartorius[1] > at_gracilis[1])          # LPS: +y is posterior
    return bool(votes) and bool(np.mean(votes) > 0.5)


def group_dice(predicted: Volume, truth: Volume, scheme: GroupScheme, side: str = "right") -> dict:
    """Dice per muscle group of a segmentation (schema values) against a group tracing of one side.

    The prediction's muscles on `side` are summed into the scheme's groups; the other side's
    predictions are left out (the tracing covers one thigh). NaN where a group is absent from both.
    """
    from .labels import label_value
    from .model import dice_per_label
    truth = align_labels_to(truth, predicted)
    grouped = np.zeros(predicted.array.shape, np.int16)
    for value, muscles in scheme.muscle_groups().items():
        grouped[np.isin(predicted.array, [label_value(m, side) for m in muscles])] = value
    return dice_per_label(grouped, np.rint(truth.array).astype(np.int16), sorted(scheme.muscle_groups()))


def sideless_dice(predicted: Volume, truth: Volume) -> dict:
    """Dice per muscle (both legs together) against labels carrying 1..11 on both legs."""
    from .labels import muscle_index
    from .model import dice_per_label
    truth = align_labels_to(truth, predicted)
    folded = np.vectorize(muscle_index, otypes=[np.int16])(predicted.array)
    return dice_per_label(folded, np.rint(truth.array).astype(np.int16), range(1, N_MUSCLES + 1))


def pooled_confidence(predicted: Volume, muscles, sides=("right",)) -> float:
    """The outline confidence (infer.outline_confidence, in the prediction's metadata) of several
    muscles on the given sides together, each label weighted by its size: a traced group's or one
    muscle's on both legs, to set beside its Dice. NaN when none of them was found."""
    from .labels import LABEL_BY_VALUE, label_value
    confidence = predicted.metadata["outline_confidence"]
    values = [label_value(m, side) for m in muscles for side in sides]
    sizes = np.array([np.count_nonzero(predicted.array == v) for v in values], float)
    if not sizes.sum():
        return float("nan")
    return float(sum(confidence.get(LABEL_BY_VALUE[v].key, 0.0) * n for v, n in zip(values, sizes)) / sizes.sum())
