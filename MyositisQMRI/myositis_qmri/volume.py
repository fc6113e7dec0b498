"""Voxel arrays that carry their geometry: `Volume` (3-D) and `EchoSeries` (4-D, echoes first).

Conventions, used everywhere in the core:
- `array` axes are (z, y, x) for a Volume and (echo, z, y, x) for an EchoSeries, the order
  SimpleITK's GetArrayFromImage gives.
- `spacing_mm` and `origin_mm` are (x, y, z); `direction` is the 3x3 matrix, row-major, whose
  columns are the patient-space (LPS, as DICOM and SimpleITK) directions of the x, y, z axes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Geometry:
    """Where a 3-D voxel grid sits in patient space (LPS, mm)."""

    shape_zyx: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: tuple[float, ...] = IDENTITY

    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_physical(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous (x, y, z) indices, shape (..., 3), to LPS millimetres."""
        ijk = np.asarray(ijk, dtype=float)
        scaled = ijk * np.asarray(self.spacing_mm)
        return scaled @ self.direction_matrix().T + np.asarray(self.origin_mm)

    def physical_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """LPS millimetres, shape (..., 3), to continuous (x, y, z) indices."""
        rel = np.asarray(xyz, dtype=float) - np.asarray(self.origin_mm)
        return (rel @ np.linalg.inv(self.direction_matrix()).T) / np.asarray(self.spacing_mm)

    def same_grid(self, other: "Geometry", tol_mm: float = 1e-3) -> bool:
        return (
            self.shape_zyx == other.shape_zyx
            and np.allclose(self.spacing_mm, other.spacing_mm, atol=tol_mm)
            and np.allclose(self.origin_mm, other.origin_mm, atol=tol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-4)
        )

    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0


def source_name(metadata: dict, default=None):
    """The first of metadata["source_files"], or `default` when there is none."""
    return (metadata.get("source_files") or [default])[0]


@dataclass
class Volume:
    """A 3-D image (z, y, x) with its geometry and free-form metadata.

    Metadata keys used across the core (all optional): series_description, series_uid,
    study_uid, patient_id, vendor, field_strength_t, image_kind (see io.ImageKind),
    classification, units, source (where a map came from), source_files.
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 3-D (z, y, x) array, got shape {self.array.shape}")
        self.spacing_mm = tuple(float(v) for v in self.spacing_mm)
        self.origin_mm = tuple(float(v) for v in self.origin_mm)
        self.direction = tuple(float(v) for v in np.ravel(self.direction))

    @property
    def geometry(self) -> Geometry:
        return Geometry(tuple(self.array.shape), self.spacing_mm, self.origin_mm, self.direction)

    def source_name(self, default=None):
        """The file this image came from, for messages; `default` when it was made in memory."""
        return source_name(self.metadata, default)

    def with_array(self, array: np.ndarray, **metadata) -> "Volume":
        """A new Volume on the same grid (geometry copied, metadata merged)."""
        return Volume(array, self.spacing_mm, self.origin_mm, self.direction,
                      {**self.metadata, **metadata})

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.spacing_mm)
        image.SetOrigin(self.origin_mm)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, metadata: dict | None = None) -> "Volume":
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3-D image, got {image.GetDimension()}-D")
        return cls(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(),
                   image.GetDirection(), dict(metadata or {}))

    @classmethod
    def on_geometry(cls, array: np.ndarray, geometry: Geometry, metadata: dict | None = None):
        return cls(array, geometry.spacing_mm, geometry.origin_mm, geometry.direction,
                   dict(metadata or {}))


@dataclass
class EchoSeries:
    """A multi-echo acquisition: array (echo, z, y, x) with echo times in ms.

    `image_kind` is one of magnitude, phase, real, imaginary, complex (see io.ImageKind).
    Phase is in radians once read. `precession_clockwise` has the ISMRM toolbox meaning
    (PrecessionIsClockwise); the core's signal model (maps.fat_spectrum) is the clockwise sense.
    """

    array: np.ndarray
    echo_times_ms: tuple[float, ...]
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY
    image_kind: str = "magnitude"
    field_strength_t: float | None = None
    refocusing_angle_deg: float | None = None
    vendor: str | None = None
    fat_suppressed: bool | None = None
    precession_clockwise: bool | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.array.ndim != 4:
            raise ValueError(f"EchoSeries needs a 4-D (echo, z, y, x) array, got {self.array.shape}")
        self.echo_times_ms = tuple(float(t) for t in self.echo_times_ms)
        if len(self.echo_times_ms) != self.array.shape[0]:
            raise ValueError(f"{len(self.echo_times_ms)} echo times for {self.array.shape[0]} echoes")
        self.spacing_mm = tuple(float(v) for v in self.spacing_mm)
        self.origin_mm = tuple(float(v) for v in self.origin_mm)
        self.direction = tuple(float(v) for v in np.ravel(self.direction))

    @property
    def n_echoes(self) -> int:
        return self.array.shape[0]

    @property
    def geometry(self) -> Geometry:
        return Geometry(tuple(self.array.shape[1:]), self.spacing_mm, self.origin_mm, self.direction)

    def echo(self, index: int) -> Volume:
        return Volume.on_geometry(self.array[index], self.geometry,
                                  {**self.metadata, "echo_time_ms": self.echo_times_ms[index]})

    def source_name(self, default=None):
        """The file this series came from, for messages; `default` when it was made in memory."""
        return source_name(self.metadata, default)

    def replace(self, **changes) -> "EchoSeries":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_volumes(cls, volumes: list[Volume], echo_times_ms, **acquisition) -> "EchoSeries":
        geometry = volumes[0].geometry
        for volume in volumes[1:]:
            if not volume.geometry.same_grid(geometry):
                raise ValueError("echo volumes are on different grids")
        return cls(np.stack([v.array for v in volumes]), tuple(echo_times_ms), geometry.spacing_mm,
                   geometry.origin_mm, geometry.direction,
                   metadata=dict(volumes[0].metadata), **acquisition)
