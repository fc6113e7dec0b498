"""Resampling and alignment between voxel grids by physical (LPS) coordinates.

The project's one resampler: `resample_to` maps a Volume onto another grid (linear or
nearest neighbour), `align_labels_to` brings a mask drawn on one series onto another (with
optional rigid registration when the patient moved between series), and `overlap_fraction`
says how much of one grid's box lies inside another's.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .volume import Geometry, Volume

_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor,
                  "bspline": sitk.sitkBSpline}


def _as_geometry(reference) -> Geometry:
    return reference.geometry if hasattr(reference, "geometry") else reference


def _reference_image(geometry: Geometry) -> sitk.Image:
    image = sitk.Image([int(v) for v in geometry.shape_zyx[::-1]], sitk.sitkUInt8)
    image.SetSpacing(geometry.spacing_mm)
    image.SetOrigin(geometry.origin_mm)
    image.SetDirection(geometry.direction)
    return image


def resample_to(volume: Volume, reference, interpolation: str = "linear", default: float = 0,
                transform: sitk.Transform | None = None) -> Volume:
    """`volume` sampled on the reference grid (a Geometry or a Volume), by physical position.

    `transform` maps reference points to `volume` points (as SimpleITK registration returns).
    Integer label maps should use interpolation="nearest"; the dtype is kept for "nearest".
    """
    if interpolation not in _INTERPOLATORS:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATORS)}")
    geometry = _as_geometry(reference)
    if transform is None and volume.geometry.same_grid(geometry):
        return Volume.on_geometry(volume.array.copy(), geometry, dict(volume.metadata))
    source = volume.to_sitk()
    if interpolation != "nearest":
        source = sitk.Cast(source, sitk.sitkFloat64 if volume.array.dtype == np.float64 else sitk.sitkFloat32)
    out = sitk.Resample(source, _reference_image(geometry), transform or sitk.Transform(),
                        _INTERPOLATORS[interpolation], float(default), source.GetPixelID())
    return Volume.on_geometry(sitk.GetArrayFromImage(out), geometry, dict(volume.metadata))


def _corners(geometry: Geometry) -> np.ndarray:
    nx, ny, nz = geometry.shape_zyx[::-1]
    ijk = np.array([[i, j, k] for i in (-0.5, nx - 0.5) for j in (-0.5, ny - 0.5) for k in (-0.5, nz - 0.5)])
    return geometry.index_to_physical(ijk)


def overlap_fraction(a: Geometry, b: Geometry, samples: int = 12) -> float:
    """Fraction of grid a's box (by volume, sampled) that lies inside grid b's box."""
    a, b = _as_geometry(a), _as_geometry(b)
    nx, ny, nz = a.shape_zyx[::-1]
    axes = [np.linspace(-0.5, n - 0.5, samples + 1)[:-1] + (n / samples) / 2 for n in (nx, ny, nz)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    inside_b = b.physical_to_index(a.index_to_physical(grid))
    limits = np.array(b.shape_zyx[::-1], dtype=float)
    ok = np.all((inside_b >= -0.5) & (inside_b <= limits - 0.5), axis=1)
    return float(ok.mean())


def rigid_register(moving: Volume, fixed: Volume, iterations: int = 100) -> sitk.Transform:
    """Rigid (Euler 3-D) transform mapping fixed points to moving points, by Mattes mutual information."""
    fixed_image = sitk.Cast(fixed.to_sitk(), sitk.sitkFloat32)
    moving_image = sitk.Cast(moving.to_sitk(), sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(fixed_image, moving_image, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed=1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(2.0, 0.01, iterations, relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed_image, moving_image)


def align_labels_to(labels: Volume, reference, register_with: Volume | None = None,
                    min_overlap: float = 0.05) -> Volume:
    """A label map moved onto the reference grid (nearest neighbour by physical position).

    With `register_with` (the image the labels were drawn on), that image is first registered
    rigidly to the reference Volume, to follow a patient who moved between series.
    """
    geometry = _as_geometry(reference)
    if overlap_fraction(geometry, labels.geometry) < min_overlap:
        target = f" of {reference.source_name('image')}" if isinstance(reference, Volume) else ""
        raise InputError(labels.source_name("labels"),
                         f"the label map and the grid{target} do not overlap in patient space")
    transform = None
    if register_with is not None:
        if not isinstance(reference, Volume):
            raise ValueError("registration needs the reference image, not only its geometry")
        transform = rigid_register(register_with, reference)
    return resample_to(labels, geometry, "nearest", 0, transform=transform)
