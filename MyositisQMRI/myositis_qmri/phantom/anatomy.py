"""Bilateral thigh anatomy of the synthetic exam: tissue and muscle label maps on an LPS grid.

Each leg lives in its own polar frame around the thigh centre: u points lateral, v anterior
(mm). Muscles are perturbed ellipses whose centres and radii move with the normalised slice
position s (0 = most proximal slice, 1 = most distal); each muscle-compartment voxel goes to
the muscle whose boundary is nearest (a power-diagram partition), and voxels near a tie or
far from every muscle become intermuscular fat. Shapes are smooth random perturbations of a
shared template, so the anatomy differs between legs and seeds but always stays plausible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..segmentation.labels import MUSCLES, label_value
from ..volume import Geometry

# Tissue codes of `tissue_labels` (documented in truth.json too).
BACKGROUND, SKIN, SUBCUTANEOUS_FAT, INTERMUSCULAR_FAT, CORTEX, MARROW, MUSCLE = range(7)
TISSUE_NAMES = {BACKGROUND: "background", SKIN: "skin", SUBCUTANEOUS_FAT: "subcutaneous fat",
                INTERMUSCULAR_FAT: "intermuscular fat", CORTEX: "femur cortex",
                MARROW: "femur marrow", MUSCLE: "muscle"}

SKIN_MM = 2.0
THIGH_CENTRE_X_MM = 84.0          # |x| of each thigh centre from the midline


@dataclass(frozen=True)
class MuscleTemplate:
    """Centre (u lateral, v anterior, mm) and radii (along, across, mm) at s=0 and s=1."""

    key: str
    centre0: tuple[float, float]
    centre1: tuple[float, float]
    radii0: tuple[float, float]
    radii1: tuple[float, float]
    rotation_deg: float | None = None   # None: major axis tangent to the thigh outline
    starts_at: float = 0.0              # the muscle appears from this s on (BFS is distal)


TEMPLATES = {
    "sartorius": MuscleTemplate("sartorius", (-22, 39), (-41, 11), (15, 9.5), (14, 9.5)),
    "rectus_femoris": MuscleTemplate("rectus_femoris", (2, 37), (4, 35), (19, 12), (14, 8.5)),
    "vastus_lateralis": MuscleTemplate("vastus_lateralis", (37, 4), (35, 9), (29, 14), (26, 12.5)),
    "vastus_intermedius": MuscleTemplate("vastus_intermedius", (10, 19), (7, 18), (21, 9.5), (19, 9), 10.0),
    "vastus_medialis": MuscleTemplate("vastus_medialis", (-18, 22), (-22, 18), (13, 10), (20, 15)),
    "adductors": MuscleTemplate("adductors", (-25, -13), (-20, -11), (22, 17), (13, 10), 35.0),
    "gracilis": MuscleTemplate("gracilis", (-45, -6), (-42, -16), (12, 7), (11, 6.5)),
    "biceps_femoris_long_head": MuscleTemplate("biceps_femoris_long_head", (18, -34), (22, -33),
                                               (16, 12), (15, 11)),
    "semitendinosus": MuscleTemplate("semitendinosus", (-10, -41), (-21, -38), (15, 11), (11, 8.5)),
    "semimembranosus": MuscleTemplate("semimembranosus", (-5, -27), (-11, -26), (7, 5), (15, 11)),
    "biceps_femoris_short_head": MuscleTemplate("biceps_femoris_short_head", (22, -19), (25, -18),
                                                (3, 2.5), (11, 8.5), 60.0, starts_at=0.4),
}


@dataclass(frozen=True)
class LegShape:
    """Random but smooth per-leg deviations from the template (drawn once per leg)."""

    side: str
    centre_xy_mm: tuple[float, float]
    outline_radii_mm: tuple[float, float]       # (lateral, anterior) at s=0
    taper: float                                # relative radius loss from s=0 to s=1
    outline_harmonics: np.ndarray               # (3, 2) amplitude, phase for k=2..4
    fat_mm: float                               # mean subcutaneous fat thickness
    fat_harmonics: np.ndarray
    femur_uv_mm: tuple[float, float]
    muscle_shift_mm: np.ndarray                 # (11, 2, 2): muscle, s-end, (du, dv)
    muscle_scale: np.ndarray                    # (11, 2): radius scale at s=0 and s=1
    muscle_harmonics: np.ndarray                # (11, 3, 2): k=2..4 amplitude, phase


def draw_leg_shape(rng: np.random.Generator, side: str) -> LegShape:
    sign = -1.0 if side == "right" else 1.0     # LPS: patient right is -x
    n = len(MUSCLES)
    return LegShape(
        side=side,
        centre_xy_mm=(sign * THIGH_CENTRE_X_MM + rng.uniform(-3, 3), rng.uniform(-4, 4)),
        outline_radii_mm=(rng.uniform(68, 73), rng.uniform(62, 67)),
        taper=rng.uniform(0.08, 0.14),
        outline_harmonics=np.column_stack([rng.uniform(0.0, 0.025, 3), rng.uniform(0, 2 * np.pi, 3)]),
        fat_mm=rng.uniform(7.0, 11.0),
        fat_harmonics=np.column_stack([rng.uniform(0.1, 0.3, 3), rng.uniform(0, 2 * np.pi, 3)]),
        femur_uv_mm=(rng.uniform(2, 6), rng.uniform(0, 4)),
        muscle_shift_mm=rng.normal(0.0, 1.6, (n, 2, 2)),
        muscle_scale=rng.uniform(0.9, 1.1, (n, 2)),
        muscle_harmonics=np.stack([rng.uniform(0.0, 0.08, (n, 3)), rng.uniform(0, 2 * np.pi, (n, 3))], axis=-1),
    )


def _harmonic_scale(angle: np.ndarray, harmonics: np.ndarray) -> np.ndarray:
    """1 + sum_k a_k cos(k*angle + phase_k) for k = 2, 3, 4."""
    out = np.ones_like(angle)
    for k, (amplitude, phase) in enumerate(harmonics, start=2):
        out += amplitude * np.cos(k * angle + phase)
    return out


def _leg_frame(x_mm: np.ndarray, y_mm: np.ndarray, shape: LegShape):
    """(u lateral, v anterior) mm of LPS points in the leg's frame."""
    lateral = -1.0 if shape.side == "right" else 1.0
    return lateral * (x_mm - shape.centre_xy_mm[0]), -(y_mm - shape.centre_xy_mm[1])


def _muscle_score(u, v, s: float, index: int, template: MuscleTemplate, shape: LegShape):
    """Normalised elliptical distance of each point from a muscle (1 on its nominal outline)
    and the muscle's radius along that ray (mm); None where the muscle is absent."""
    ramp = 1.0 if template.starts_at <= 0 else np.clip((s - template.starts_at) / (1 - template.starts_at), 0, 1)
    if ramp <= 0:
        return None
    weights = np.array([1 - s, s])
    centre = weights @ np.array([template.centre0, template.centre1]) + weights @ shape.muscle_shift_mm[index]
    centre = centre * (1.0 - shape.taper * s)        # the thigh narrows distally
    radii = (weights @ np.array([template.radii0, template.radii1])) * (weights @ shape.muscle_scale[index])
    if template.starts_at > 0:
        radii = np.maximum(radii * np.sqrt(ramp), 1.0)
    rotation = (np.deg2rad(template.rotation_deg) if template.rotation_deg is not None
                else np.arctan2(centre[1], centre[0]) + np.pi / 2)
    du, dv = u - centre[0], v - centre[1]
    along = du * np.cos(rotation) + dv * np.sin(rotation)
    across = -du * np.sin(rotation) + dv * np.cos(rotation)
    angle = np.arctan2(across, along)
    normalised = np.hypot(along / radii[0], across / radii[1]) / _harmonic_scale(angle, shape.muscle_harmonics[index])
    ray_radius_mm = np.hypot(along, across) / np.maximum(normalised, 1e-6)
    return normalised, ray_radius_mm


def leg_slice(x_mm: np.ndarray, y_mm: np.ndarray, s: float, shape: LegShape, septum_mm: float):
    """Tissue codes and muscle labels of one leg on one slice (0 outside the leg)."""
    u, v = _leg_frame(x_mm, y_mm, shape)
    angle = np.arctan2(v, u)
    shrink = 1.0 - shape.taper * s
    outline = np.hypot(u / shape.outline_radii_mm[0], v / shape.outline_radii_mm[1])
    outline = outline / (shrink * _harmonic_scale(angle, shape.outline_harmonics))
    rho = np.hypot(u, v)
    depth = rho * (1.0 / np.maximum(outline, 1e-6) - 1.0)          # mm inside the skin surface
    # Fat is thicker posteriorly and medially, as in most adult thighs.
    fat = shape.fat_mm * _harmonic_scale(angle, shape.fat_harmonics) * (1.0 + 0.25 * np.sin(-angle) * (v < 0))
    tissue = np.zeros(u.shape, np.int16)
    inside = depth >= 0
    tissue[inside] = SKIN
    tissue[inside & (depth >= SKIN_MM)] = SUBCUTANEOUS_FAT
    compartment = depth >= SKIN_MM + fat
    tissue[compartment] = INTERMUSCULAR_FAT

    fu, fv = shape.femur_uv_mm
    femur_radius = 12.5 + 2.0 * s
    femur_rho = np.hypot((u - fu) / 1.05, v - fv)
    bone = femur_rho <= femur_radius
    tissue[bone] = CORTEX
    tissue[femur_rho <= femur_radius * 0.58] = MARROW

    scores, radii, values = [], [], []
    for index, muscle in enumerate(MUSCLES):
        result = _muscle_score(u, v, s, index, TEMPLATES[muscle.key], shape)
        if result is not None:
            scores.append(result[0])
            radii.append(result[1])
            values.append(label_value(muscle.index, shape.side))
    scores = np.stack(scores)
    # Multiplicatively weighted Voronoi: a small muscle keeps its core however large its
    # neighbours are; the score gap times the winner's radius approximates the gap in mm.
    order = np.argsort(scores, axis=0)
    nearest = np.take_along_axis(scores, order[:1], 0)[0]
    second = np.take_along_axis(scores, order[1:2], 0)[0]
    winner_radius = np.take_along_axis(np.stack(radii), order[:1], 0)[0]
    is_muscle = compartment & ~bone & (nearest < 1.6) & ((second - nearest) * winner_radius >= septum_mm)
    labels = np.zeros(u.shape, np.int16)
    labels[is_muscle] = np.asarray(values, np.int16)[order[0][is_muscle]]
    tissue[is_muscle] = MUSCLE
    return tissue, labels


def build_anatomy(geometry: Geometry, rng: np.random.Generator):
    """Tissue and muscle label arrays (z, y, x) for both legs on `geometry` (identity direction)."""
    shapes = [draw_leg_shape(rng, "right"), draw_leg_shape(rng, "left")]
    nz, ny, nx = geometry.shape_zyx
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny))
    tissue = np.zeros((nz, ny, nx), np.int16)
    labels = np.zeros((nz, ny, nx), np.int16)
    septum_mm = max(1.6, 0.9 * min(geometry.spacing_mm[:2]))
    for k in range(nz):
        points = geometry.index_to_physical(np.stack([ii, jj, np.full_like(ii, k)], axis=-1))
        # z index grows superiorly (LPS +z = head), so the most distal slice is k = 0.
        s = 1.0 - k / max(nz - 1, 1)
        for shape in shapes:
            leg_tissue, leg_labels = leg_slice(points[..., 0], points[..., 1], s, shape, septum_mm)
            mask = leg_tissue > 0
            tissue[k][mask] = leg_tissue[mask]
            labels[k][mask] = leg_labels[mask]
    return tissue, labels, shapes
