"""Quality checks that catch silent failures before a wrong number reaches a report.

Each check looks at the maps and masks of one report and returns a warning (a dict with the
check's name, a message for a reader, the measured value and the limit) or None. A warning never
stops the report: it is printed, listed in run_summary.json and shown in the report's header, so
that a reader does not take a number the check doubts at face value. The limits below are chosen
wide: a working acquisition and fit stays well inside them (the demo and the real scans in
../shared/data raise none), and the failures they aim at (water/fat swaps, maps in the wrong
units, failed B1 fits, non-thigh series, maps and masks from different slabs) land far outside.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..volume import Volume

# Subcutaneous fat reads 85-95 % fat as PDFF and 75-80 % from magnitude water/fat images
# (real IDEAL thighs in ../shared/data: median 75-76 %, a single-peak fat model and T1 weighting
# put part of the fat signal into water); swapped water and fat read 10-25 %, an FF map stored
# 0-1 reads below 1. Two limits therefore: the ring's median FF, and the share of it that reads
# as water (a partial swap: the 16-bit phase case swapped 28 % of the body).
SUBCUTANEOUS_FAT_MIN_FF_PERCENT = 65.0
SUBCUTANEOUS_WATER_LIKE_FF_PERCENT = 50.0   # a ring voxel below this reads as water
MAX_SUBCUTANEOUS_WATER_LIKE_SHARE = 0.25    # real thighs: 1-9 % of the ring (skin, vessels, septa)
# The ring measured: between these depths under the skin (mm), past the skin and its partial
# volume with air (median FF climbs from 27-50 % at the surface to its plateau by 3 mm), and
# within the subcutaneous fat of an adult thigh; segmented muscle is left out.
SUBCUTANEOUS_DEPTH_MM = (3.0, 8.0)
# Fewer ring voxels than this give no verdict (a cropped or masked FF map).
MIN_RING_VOXELS = 100
# A body outline from the FF map's own support only when the map is masked (zero outside the
# body) and the body fills between these shares of a slice; otherwise from the anatomy image.
BODY_SHARE_RANGE = (0.03, 0.90)

# Muscle water T2 lies within these limits (ms) in healthy (about 30) and inflamed (up to about
# 60-70) muscle alike; most muscle voxels outside them say the map is in other units (s, 1/s),
# the echo times were read wrongly, or the fit failed.
MUSCLE_T2_RANGE_MS = (20.0, 80.0)
MIN_T2_IN_RANGE_FRACTION = 0.5          # "most voxels": at least half must be inside

# B1 at the end of the searched range in this share of the fitted muscle voxels or more means the
# fit ran into its limits (wrong refocusing angle, slice profile or echo spacing), and water T2
# there took up the mismatch.
MAX_B1_PINNED_FRACTION = 0.10
B1_PINNED_TOLERANCE = 0.015             # within this of a limit counts as pinned (grid step 0.01)

# The segmentation's thigh-muscle share of the body: the segment command's own measure and limit
# (segmentation.infer.MIN_THIGH_MUSCLE_FRACTION: real thighs 0.16-0.60, calves, hands and feet
# 0.09 or less).
# Maps must cover at least this share of the segmented muscle volume; less says the maps and the
# masks come from different slabs or positions, so that part of each muscle is not measured.
MIN_MAP_MASK_OVERLAP = 0.90


def _warning(check: str, message: str, value: float, limit) -> dict:
    return {"check": check, "message": message, "value": round(float(value), 4), "limit": limit}


def _labels_int(labels: Volume) -> Volume:
    return labels.with_array(np.rint(labels.array).astype(np.int16))


def _labels_on(labels: Volume, reference: Volume) -> np.ndarray:
    from .stats import align_labels
    return align_labels(_labels_int(labels), reference).array


# ---------------------------------------------------------------- subcutaneous fat

def _body_per_slice(support: np.ndarray) -> np.ndarray:
    """Filled body outline per slice: the largest parts of `support` (two thighs), holes filled."""
    body = np.zeros(support.shape, bool)
    for z, plane in enumerate(support):
        plane = ndimage.binary_opening(plane, iterations=1)
        parts, n = ndimage.label(plane)
        if not n:
            continue
        sizes = ndimage.sum(plane, parts, range(1, n + 1))
        keep = np.isin(parts, 1 + np.flatnonzero(sizes >= 0.05 * sizes.max()))
        body[z] = ndimage.binary_fill_holes(ndimage.binary_closing(keep, iterations=2))
    return body


def body_outline(ff: Volume, anatomy: Volume | None = None) -> np.ndarray | None:
    """The body on the FF grid: the FF map's support where the map is masked, else the anatomy
    image above its Otsu threshold; None when neither gives a plausible outline."""
    values = np.nan_to_num(ff.array.astype(np.float64), nan=0.0)
    support = values > 0
    share = support.mean(axis=(1, 2))
    if np.median(share) > BODY_SHARE_RANGE[0] and np.median(share) < BODY_SHARE_RANGE[1]:
        return _body_per_slice(support)
    if anatomy is None:
        return None
    from skimage.filters import threshold_otsu
    from ..geometry import resample_to
    image = np.nan_to_num(resample_to(anatomy, ff, "linear").array.astype(np.float64))
    if not np.any(image > 0):
        return None
    body = _body_per_slice(image > threshold_otsu(image[image > 0]))
    share = body.mean(axis=(1, 2))
    return body if BODY_SHARE_RANGE[0] < np.median(share) < BODY_SHARE_RANGE[1] else None


def subcutaneous_ring(ff: Volume, labels: Volume | None, anatomy: Volume | None = None) -> np.ndarray | None:
    """Voxels SUBCUTANEOUS_DEPTH_MM under the skin, away from any segmented muscle."""
    body = body_outline(ff, anatomy)
    if body is None:
        return None
    dy, dx = ff.spacing_mm[1], ff.spacing_mm[0]
    ring = np.zeros(body.shape, bool)
    for z, plane in enumerate(body):
        if plane.any():
            # distance of the voxel centre to the nearest outside voxel centre, less half a voxel:
            # the depth under the body's surface (the outermost voxel lies half a voxel under it)
            depth = ndimage.distance_transform_edt(plane, sampling=(dy, dx)) - 0.5 * min(dy, dx)
            ring[z] = (depth >= SUBCUTANEOUS_DEPTH_MM[0]) & (depth <= SUBCUTANEOUS_DEPTH_MM[1])
    if labels is not None:
        muscle = _labels_on(labels, ff) > 0
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndimage.generate_binary_structure(2, 1)
        ring &= ~ndimage.binary_dilation(muscle, structure, iterations=2)
    return ring


def check_subcutaneous_fat(ff: Volume | None, labels: Volume | None = None, anatomy: Volume | None = None) -> dict | None:
    """Subcutaneous fat must read as fat: the ring under the skin has a median FF of at least
    SUBCUTANEOUS_FAT_MIN_FF_PERCENT, and at most MAX_SUBCUTANEOUS_WATER_LIKE_SHARE of it reads as water."""
    if ff is None:
        return None
    ring = subcutaneous_ring(ff, labels, anatomy)
    if ring is None or ring.sum() < MIN_RING_VOXELS:
        return None
    values = ff.array[ring].astype(np.float64)
    values = values[np.isfinite(values)]
    if values.size < MIN_RING_VOXELS:
        return None
    median = float(np.median(values))
    water_like = float(np.mean(values < SUBCUTANEOUS_WATER_LIKE_FF_PERCENT))
    if median < SUBCUTANEOUS_FAT_MIN_FF_PERCENT:
        return _warning("subcutaneous_fat_ff",
                        f"subcutaneous fat reads {median:.0f} % fat (median; expected above "
                        f"{SUBCUTANEOUS_FAT_MIN_FF_PERCENT:.0f} %): water and fat may be swapped or the FF map "
                        "wrongly scaled; check the FF map before reading fat grades", median,
                        SUBCUTANEOUS_FAT_MIN_FF_PERCENT)
    if water_like > MAX_SUBCUTANEOUS_WATER_LIKE_SHARE:
        return _warning("subcutaneous_fat_ff",
                        f"{100 * water_like:.0f} % of the subcutaneous fat reads as water (FF below "
                        f"{SUBCUTANEOUS_WATER_LIKE_FF_PERCENT:.0f} %): water and fat are probably swapped in part "
                        "of the image; check the FF map before reading fat grades", water_like,
                        MAX_SUBCUTANEOUS_WATER_LIKE_SHARE)
    return None


# ---------------------------------------------------------------- water T2, B1

def check_muscle_t2(t2: Volume | None, labels: Volume) -> dict | None:
    """Most fitted muscle voxels must lie within MUSCLE_T2_RANGE_MS."""
    if t2 is None:
        return None
    values = t2.array[_labels_on(labels, t2) > 0].astype(np.float64)
    values = values[np.isfinite(values) & (values != 0)]
    if values.size == 0:
        return None
    low, high = MUSCLE_T2_RANGE_MS
    inside = float(np.mean((values >= low) & (values <= high)))
    if inside < MIN_T2_IN_RANGE_FRACTION:
        return _warning("muscle_t2_range",
                        f"only {100 * inside:.0f} % of muscle voxels have a water T2 within {low:g}-{high:g} ms "
                        f"(median {np.median(values):.3g}): the map may be in other units, the echo times wrong, or "
                        "the fit failed; edema grades are doubtful", inside, MIN_T2_IN_RANGE_FRACTION)
    return None


def b1_search_range(profile: str | None) -> tuple[float, float] | None:
    """The B1 range the EPG fit searched, for its profile ("2d" or "3d"); None when unknown."""
    if profile not in ("2d", "3d"):
        return None
    from ..maps.t2.dictionary import default_grids
    grid = default_grids(profile)[1]
    return float(grid[0]), float(grid[-1])


def check_b1_pinned(b1: Volume | None, labels: Volume, search_range, profile: str | None = None) -> dict | None:
    """B1 must not sit at the ends of its search range in many muscle voxels. The 3d model folds
    B1 above 1 onto 1 (alpha and 360 - alpha refocus alike), so there only the lower end counts."""
    if b1 is None or search_range is None:
        return None
    values = b1.array[_labels_on(labels, b1) > 0].astype(np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return None
    low, high = search_range
    pinned = np.abs(values - low) <= B1_PINNED_TOLERANCE
    if profile != "3d":
        pinned |= np.abs(values - high) <= B1_PINNED_TOLERANCE
    fraction = float(pinned.mean())
    if fraction >= MAX_B1_PINNED_FRACTION:
        return _warning("b1_pinned",
                        f"B1 sits at the limits of its search range ({low:g}-{high:g}) in {100 * fraction:.0f} % of "
                        "muscle voxels: the sequence model (refocusing angle, slice profile) may not match the "
                        "acquisition, and water T2 there is doubtful", fraction, MAX_B1_PINNED_FRACTION)
    return None


# ---------------------------------------------------------------- segmentation and coverage

def check_thigh_share(labels: Volume) -> dict | None:
    """The segment command's thigh-muscle share of the body (recorded with the masks) against its limit."""
    from ..segmentation.infer import MIN_THIGH_MUSCLE_FRACTION
    share = (labels.metadata or {}).get("thigh_muscle_fraction")
    if share is None:
        return None
    if float(share) < MIN_THIGH_MUSCLE_FRACTION:
        return _warning("thigh_muscle_share",
                        f"thigh muscles cover only {100 * float(share):.0f} % of the body (a thigh shows about "
                        "half): is this a thigh series? Check the masks", float(share), MIN_THIGH_MUSCLE_FRACTION)
    return None


def outline_confidence(labels: Volume) -> dict:
    """{label key: confidence} as the segment command recorded it with the masks; empty when there is
    no record or the masks were edited since (the reviewer has seen and corrected them)."""
    from ..segmentation.export import labels_digest
    meta = labels.metadata or {}
    confidence = meta.get("outline_confidence")
    if not confidence or meta.get("labels_sha256") != labels_digest(labels.array):
        return {}
    return {key: float(value) for key, value in confidence.items()}


def check_outlines(labels: Volume) -> dict | None:
    from ..segmentation.infer import MIN_OUTLINE_CONFIDENCE, unsure_outlines
    from ..segmentation.labels import LABEL_BY_KEY
    uncertain = unsure_outlines(outline_confidence(labels))
    if not uncertain:
        return None
    names = ", ".join(f"{LABEL_BY_KEY[key].name} ({value:.2f})" for key, value in sorted(uncertain.items(), key=lambda kv: kv[1]))
    return _warning("uncertain_outlines",
                    f"the network was unsure of the outlines of {len(uncertain)} muscle(s): {names} (mean "
                    f"probability of their label, below {MIN_OUTLINE_CONFIDENCE}); check and correct these "
                    "masks before trusting their numbers", min(uncertain.values()), MIN_OUTLINE_CONFIDENCE)


def map_mask_overlap(map_volume: Volume, labels: Volume, kind: str) -> float | None:
    """Share of the segmented muscle voxels (label grid) where the map has a value: the map's
    valid voxels sampled onto the label grid by position (nearest), so thick or shifted map slices
    count by the volume they cover."""
    from ..geometry import resample_to
    muscle = np.rint(labels.array) > 0
    if not muscle.any():
        return None
    values = map_volume.array
    valid = np.isfinite(values) & (values > 0 if kind == "t2" else True)
    on_labels = resample_to(map_volume.with_array(valid.astype(np.uint8)), labels, "nearest", default=0).array
    return float(np.mean(on_labels[muscle] > 0))


def check_overlap(map_volume: Volume | None, labels: Volume, kind: str) -> dict | None:
    if map_volume is None:
        return None
    overlap = map_mask_overlap(map_volume, labels, kind)
    if overlap is not None and overlap < MIN_MAP_MASK_OVERLAP:
        name = "water-T2" if kind == "t2" else "fat-fraction"
        return _warning(f"{kind}_map_overlap",
                        f"the {name} map covers only {100 * overlap:.0f} % of the segmented muscle volume: maps "
                        "and masks may come from different slabs or positions, or the fit left muscle out",
                        overlap, MIN_MAP_MASK_OVERLAP)
    return None


def quality_warnings(inputs) -> list[dict]:
    """Every check on one report's inputs (report.build.ReportInputs); the warnings raised."""
    labels = inputs.labels
    found = [
        check_subcutaneous_fat(inputs.ff, labels, inputs.anatomy),
        check_muscle_t2(inputs.t2, labels),
        check_b1_pinned(inputs.b1, labels, b1_search_range(inputs.t2_profile), inputs.t2_profile),
        check_thigh_share(labels),
        check_outlines(labels),
        check_overlap(inputs.t2, labels, "t2"),
        check_overlap(inputs.ff, labels, "ff"),
    ]
    return [w for w in found if w is not None]
