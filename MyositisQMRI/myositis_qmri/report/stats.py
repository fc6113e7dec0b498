"""Per-muscle, per-side statistics of water-T2 and fat-fraction maps.

Statistics are computed on each map's own grid: the label map is brought onto it by geometry
(nearest neighbour in physical space), never compared by index. Volume and slice count come
from the label map on its own grid. Non-finite map voxels are excluded and counted; an empty
mask gives an explicit `empty` entry instead of NaNs.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..segmentation.labels import LABELS, LEFT_OFFSET, MUSCLES, label_value
from ..volume import Volume

MAP_KINDS = ("t2", "ff")


def align_labels(labels: Volume, reference: Volume, source=None) -> Volume:
    """The label map on `reference`'s grid; an error when they do not overlap in space."""
    if labels.geometry.same_grid(reference.geometry):
        return labels
    from ..geometry import align_labels_to
    aligned = align_labels_to(labels, reference)
    if np.count_nonzero(labels.array) and not np.count_nonzero(aligned.array):
        raise InputError(source, "the segmentation does not overlap the map in space "
                                 f"({reference.metadata.get('series_description', 'map')}); "
                                 "check that both come from the same exam and position")
    return aligned


def summarize(values: np.ndarray) -> dict:
    """mean, median, SD, IQR and percentiles of finite values (None when there are none)."""
    n = int(values.size)
    if n == 0:
        return {"n_voxels": 0, "mean": None, "median": None, "sd": None, "iqr": None,
                "p25": None, "p75": None}
    p25, median, p75 = np.percentile(values, [25, 50, 75])
    return {"n_voxels": n, "mean": float(values.mean()), "median": float(median),
            "sd": float(values.std(ddof=1)) if n > 1 else 0.0, "iqr": float(p75 - p25),
            "p25": float(p25), "p75": float(p75)}


def _erode_in_plane(mask: np.ndarray, voxels: int) -> np.ndarray:
    # In-plane only: slices are often thick, and a 3-D erosion would remove whole thin muscles.
    structure = ndimage.generate_binary_structure(3, 1)
    structure[0] = structure[2] = False
    return ndimage.binary_erosion(mask, structure, iterations=voxels)


def _map_values(map_array: np.ndarray, mask: np.ndarray, kind: str) -> tuple[np.ndarray, int, int]:
    """Finite, physically valid values under `mask`, plus counts of excluded voxels."""
    values = map_array[mask].astype(np.float64)
    finite = np.isfinite(values)
    n_nonfinite = int(values.size - finite.sum())
    values = values[finite]
    # T2 <= 0 marks a failed fit; FF is clipped to 0-100 by the fits but kept as given here.
    valid = values > 0 if kind == "t2" else np.ones(values.shape, bool)
    return values[valid], n_nonfinite, int(values.size - valid.sum())


def _slice_positions_mm(volume: Volume) -> np.ndarray:
    """Position of each slice along the slice normal (mm), for profiles."""
    geometry = volume.geometry
    normal = geometry.direction_matrix()[:, 2]
    nz = geometry.shape_zyx[0]
    centres = geometry.index_to_physical(np.stack([np.zeros(nz), np.zeros(nz), np.arange(nz)], axis=1))
    return centres @ normal


def _in_plane_mm(volume: Volume) -> float:
    return float(np.mean(volume.spacing_mm[:2]))


def mask_resolution_mm(labels: Volume) -> float:
    """In-plane resolution (mm) at which the mask was drawn: its own grid, or coarser when the
    segmentation says so (a network that worked on a coarser grid and was resampled back)."""
    drawn = float((labels.metadata or {}).get("resolution_mm") or 0.0)
    return max(_in_plane_mm(labels), drawn)


def erosion_on_map(erosion_voxels: int, mask_mm: float, map_volume: Volume) -> int:
    """Erosion on the map grid: `erosion_voxels` voxels of the coarser of the map grid and the
    grid the mask was drawn on, because a border is only as certain as the coarser of the two.

    The coarse voxel becomes the nearest whole number of map voxels: a mask from a 2.3 mm
    network on a 1.5 mm map is eroded by 2 map voxels, on a 2.0 mm map by 1, and a mask drawn on
    the map's own grid by 1.
    """
    ratio = mask_mm / _in_plane_mm(map_volume)
    return int(erosion_voxels) * max(1, int(math.floor(ratio + 0.5)))


MIN_ERODED_FRACTION = 0.25   # erosion never leaves less than this fraction of a muscle (it erodes less)


def _measurement_mask(mask: np.ndarray, erosion_voxels: int) -> tuple[np.ndarray, int]:
    """The voxels measured and how many voxels they were eroded by (in-plane).

    Erosion removes partial volume with fat at the borders; a thin muscle (sartorius, gracilis
    at coarse resolution) would all but vanish, so it is eroded less, down to not at all, until
    at least MIN_ERODED_FRACTION of it is left.
    """
    for voxels in range(int(erosion_voxels), 0, -1):
        core = _erode_in_plane(mask, voxels)  # the box is tight: its border is background
        if core.sum() >= max(1, MIN_ERODED_FRACTION * mask.sum()):
            return core, voxels
    return mask, 0


def _stats_on_map(aligned: np.ndarray, map_volume: Volume, kind: str, erosion_voxels: int,
                  edema_threshold_ms: float) -> tuple[dict, dict]:
    """Per-label statistics and slice profiles of one map."""
    map_array = map_volume.array
    pixel_area_cm2 = map_volume.spacing_mm[0] * map_volume.spacing_mm[1] / 100.0
    positions = _slice_positions_mm(map_volume)
    boxes = ndimage.find_objects(aligned.astype(np.int32), max_label=max(l.value for l in LABELS))
    per_label, profile_muscles, used_slices = {}, {}, set()
    for label in LABELS:
        box = boxes[label.value - 1]
        if box is None:
            per_label[label.value] = {"empty": True, "reason": "no voxels of this label on the map grid"}
            continue
        mask, eroded_by = _measurement_mask(aligned[box] == label.value, erosion_voxels)
        values, n_nonfinite, n_invalid = _map_values(map_array[box], mask, kind)
        entry = summarize(values)
        entry.update(n_mask_voxels=int(mask.sum()), n_excluded_nonfinite=n_nonfinite, n_excluded_invalid=n_invalid,
                     eroded=eroded_by > 0, eroded_voxels=eroded_by)
        if kind == "t2":
            entry["percent_above_edema_threshold"] = (
                None if values.size == 0 else float(100.0 * np.count_nonzero(values >= edema_threshold_ms) / values.size))
        per_label[label.value] = entry
        profile_muscles[label.key] = _profile(map_array[box], mask, box[0].start, pixel_area_cm2, used_slices)
    slices = sorted(used_slices)
    profile = {"position_mm": [float(positions[z]) for z in slices],
               "muscles": {key: {"area_cm2": [p.get(z, (0.0, None))[0] for z in slices],
                                 "mean": [p.get(z, (0.0, None))[1] for z in slices]}
                           for key, p in profile_muscles.items()}}
    return per_label, profile


def _profile(map_box: np.ndarray, mask: np.ndarray, z0: int, pixel_area_cm2: float, used: set) -> dict:
    out = {}
    for dz in range(mask.shape[0]):
        in_slice = mask[dz]
        count = int(in_slice.sum())
        if not count:
            continue
        values = map_box[dz][in_slice].astype(np.float64)
        values = values[np.isfinite(values)]
        out[z0 + dz] = (count * pixel_area_cm2, float(values.mean()) if values.size else None)
        used.add(z0 + dz)
    return out


def _geometry_stats(labels: Volume) -> dict:
    """Volume (ml) and slice count per label, on the label map's own grid."""
    voxel_ml = labels.geometry.voxel_volume_ml()
    counts = np.bincount(labels.array.ravel().astype(np.int64), minlength=2 * LEFT_OFFSET + 1)
    boxes = ndimage.find_objects(labels.array.astype(np.int32), max_label=2 * LEFT_OFFSET)
    out = {}
    for label in LABELS:
        box = boxes[label.value - 1]
        n_slices = 0 if box is None else int(np.count_nonzero(
            (labels.array[box] == label.value).any(axis=(1, 2))))
        out[label.value] = {"volume_ml": float(counts[label.value] * voxel_ml), "n_slices": n_slices,
                            "n_voxels": int(counts[label.value])}
    return out


def cross_sections(labels: Volume) -> dict:
    """Cross-sectional area (cm²) of every muscle on every slice of the label map's own grid
    that holds any muscle: {"slice_index", "position_mm", "muscles": {key: [area per slice]}}.
    Areas are in the slice plane (the grid's in-plane voxel area), as atrophy studies measure."""
    array = labels.array
    pixel_cm2 = labels.spacing_mm[0] * labels.spacing_mm[1] / 100.0
    n_values = 2 * LEFT_OFFSET + 1
    counts = np.stack([np.bincount(plane.ravel().astype(np.int64), minlength=n_values)[:n_values]
                       for plane in array]) if array.shape[0] else np.zeros((0, n_values), np.int64)
    slices = [int(z) for z in np.flatnonzero(counts[:, 1:].sum(axis=1))]
    positions = _slice_positions_mm(labels)
    return {"slice_index": slices, "position_mm": [round(float(positions[z]), 3) for z in slices],
            "muscles": {label.key: [float(counts[z, label.value] * pixel_cm2) for z in slices] for label in LABELS}}


def _csa_summary(sections: dict, key: str) -> dict:
    """Largest and mean cross-sectional area (cm²) of one muscle over the slices that hold it."""
    areas = [a for a in sections["muscles"][key] if a > 0]
    return {"csa_max_cm2": max(areas) if areas else None,
            "csa_mean_cm2": float(np.mean(areas)) if areas else None}


def asymmetry_index(right: float | None, left: float | None) -> float | None:
    """100 * (R - L) / mean(R, L); None when undefined."""
    if right is None or left is None:
        return None
    mean = (right + left) / 2.0
    if not math.isfinite(mean) or mean == 0:
        return None
    return 100.0 * (right - left) / mean


def compute_statistics(labels: Volume, maps: dict[str, Volume | None], *, erode: bool = False,
                       erosion_voxels: int = 1, edema_threshold_ms: float = 36.4,
                       sources: dict | None = None) -> dict:
    """Statistics per muscle and side, asymmetry, whole-thigh summaries, slice profiles and
    cross-sectional areas.

    `maps` holds "t2" (water T2, ms) and/or "ff" (fat fraction, %); either or both may be None
    (a structural study: volumes and cross-sectional areas only).
    """
    sources = sources or {}
    labels_int = labels.with_array(np.rint(labels.array).astype(np.int16))
    unknown = set(np.unique(labels_int.array).tolist()) - {0} - {l.value for l in LABELS}
    if unknown:
        raise InputError(sources.get("seg"), f"label values {sorted(unknown)[:5]} are not in the muscle schema (1-22)")
    geometry = _geometry_stats(labels_int)
    sections = cross_sections(labels_int)
    per_map, profiles, quality, erosion_per_map = {}, {}, {}, {}
    mask_mm = mask_resolution_mm(labels)
    for kind in MAP_KINDS:
        map_volume = maps.get(kind)
        if map_volume is None:
            continue
        aligned = align_labels(labels_int, map_volume, sources.get("seg")).array
        erosion = erosion_on_map(erosion_voxels, mask_mm, map_volume) if erode else 0
        erosion_per_map[kind] = {"voxels": erosion, "mm": round(erosion * _in_plane_mm(map_volume), 2)}
        per_map[kind], profiles[kind] = _stats_on_map(aligned, map_volume, kind, erosion, edema_threshold_ms)
        in_muscle = aligned > 0
        quality[kind] = {
            "grid_shape_zyx": list(map_volume.array.shape), "spacing_mm": list(map_volume.spacing_mm),
            "same_grid_as_segmentation": labels_int.geometry.same_grid(map_volume.geometry),
            "muscle_voxels_on_grid": int(in_muscle.sum()),
            "nonfinite_voxels_in_muscles": int(np.count_nonzero(~np.isfinite(map_volume.array[in_muscle]))),
            "nonfinite_voxels_in_map": int(np.count_nonzero(~np.isfinite(map_volume.array))),
        }
    muscles = []
    for label in LABELS:
        row = {"key": label.key, "label_value": label.value, "muscle": label.muscle.name,
               "muscle_key": label.muscle.key, "abbreviation": label.abbreviation, "side": label.side,
               "group": label.muscle.group, **geometry[label.value], **_csa_summary(sections, label.key)}
        row["empty"] = geometry[label.value]["n_voxels"] == 0
        for kind in MAP_KINDS:
            if kind in per_map:
                entry = per_map[kind][label.value]
                row[kind] = None if entry.get("empty") else entry
                if entry.get("empty") and not row["empty"]:
                    row.setdefault("notes", []).append(f"{kind}: {entry['reason']}")
            else:
                row[kind] = None
        muscles.append(row)
    return {"muscles": muscles, "asymmetry": _asymmetry(muscles), "whole_thigh": _whole_thigh(labels_int, maps, muscles),
            "slice_profiles": profiles, "cross_sections": sections, "quality": quality,
            "erosion": {"applied": bool(erode), "voxels": erosion_voxels if erode else 0,
                        "plane": "in-plane (x, y)", "mask_resolution_mm": round(mask_mm, 2),
                        "per_map": erosion_per_map}}


def _asymmetry(muscles: list[dict]) -> list[dict]:
    by_value = {row["label_value"]: row for row in muscles}
    out = []
    for muscle in MUSCLES:
        right, left = by_value[label_value(muscle.index, "right")], by_value[label_value(muscle.index, "left")]

        def get(row, kind, stat):
            return (row.get(kind) or {}).get(stat)

        out.append({"muscle_key": muscle.key, "muscle": muscle.name,
                    "volume_ml": asymmetry_index(right["volume_ml"] or None, left["volume_ml"] or None),
                    "csa_max_cm2": asymmetry_index(right["csa_max_cm2"], left["csa_max_cm2"]),
                    "t2_mean_ms": asymmetry_index(get(right, "t2", "mean"), get(left, "t2", "mean")),
                    "t2_median_ms": asymmetry_index(get(right, "t2", "median"), get(left, "t2", "median")),
                    "ff_mean_percent": asymmetry_index(get(right, "ff", "mean"), get(left, "ff", "mean"))})
    return out


def _whole_thigh(labels: Volume, maps: dict, muscles: list[dict]) -> dict:
    """Per side and both: pooled water-T2 mean, volume-weighted FF, total muscle volume."""
    out = {}
    for side in ("right", "left", "both"):
        rows = [r for r in muscles if side in ("both", r["side"]) and not r["empty"]]
        summary = {"muscle_volume_ml": float(sum(r["volume_ml"] for r in rows)), "n_muscles": len(rows)}
        t2_rows = [r for r in rows if r.get("t2")]
        n_t2 = sum(r["t2"]["n_voxels"] for r in t2_rows)
        # Voxel-pooled: each muscle counts by its size, as a whole-thigh ROI would.
        summary["t2_mean_ms"] = (sum(r["t2"]["mean"] * r["t2"]["n_voxels"] for r in t2_rows) / n_t2) if n_t2 else None
        ff_rows = [r for r in rows if r.get("ff")]
        weight = sum(r["volume_ml"] for r in ff_rows)
        # Volume-weighted: total fat volume over total muscle volume.
        summary["ff_weighted_mean_percent"] = (sum(r["ff"]["mean"] * r["volume_ml"] for r in ff_rows) / weight) if weight else None
        out[side] = summary
    return out
