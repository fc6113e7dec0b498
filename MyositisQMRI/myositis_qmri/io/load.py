"""One entry point for inputs: a DICOM folder/file or NIfTI/NRRD file(s) -> Volume/EchoSeries.

Commands call these instead of choosing a reader: image files go to `io.nifti`, anything
else to the DICOM reader (through `discover`, so a folder holding several series is
narrowed down by image kind and series class, or refused with the list of what is there).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..volume import EchoSeries, Volume
from .dicom_values import phase_to_radians
from .discover import discover, pair_magnitude_phase
from .echo_times import echo_times_to_ms
from .kinds import ImageKind, SeriesClass
from .nifti import is_image_file, read_echo_files, read_volume


def _as_list(path_or_paths) -> list[Path]:
    if isinstance(path_or_paths, (str, Path)):
        return [Path(path_or_paths)]
    return [Path(p) for p in path_or_paths]


def select_series(path_or_paths, image_kind=None, series_class=None):
    """The one series under the path(s) that has `image_kind` and `series_class`."""
    study = discover(path_or_paths)
    source = _as_list(path_or_paths)[0]
    candidates = study.require_series(source)
    if series_class is not None:
        classes = {SeriesClass(c) for c in ([series_class] if isinstance(series_class, (str, SeriesClass))
                                            else series_class)}
        candidates = [s for s in candidates if s.series_class in classes]
    if image_kind is not None:
        candidates = [s for s in candidates if ImageKind(image_kind) in s.image_kinds]
    if len(candidates) == 1:
        return candidates[0]
    wanted = " ".join(str(getattr(v, "value", v)) for v in (series_class, image_kind) if v is not None) or "image"
    listing = "; ".join(f"'{s.description}' ({s.series_class.value})" for s in study.series[:6])
    if not candidates:
        raise InputError(source, f"no {wanted} series found (found: {listing})")
    raise InputError(source, f"{len(candidates)} {wanted} series found ({listing}); give the folder or file of one")


def load_volume(path, image_kind=None, echo_index: int = 0, series_class=None) -> Volume:
    """A 3-D volume from a NIfTI/NRRD file or from the one matching DICOM series."""
    paths = _as_list(path)
    if len(paths) == 1 and is_image_file(paths[0]):
        volume = read_volume(paths[0])
        if image_kind is not None and ImageKind(image_kind) == ImageKind.PHASE:
            volume = volume.with_array(phase_to_radians(volume.array, paths[0]))
        return volume
    return select_series(paths, image_kind, series_class).to_volume(image_kind, echo_index)


def load_echo_series(path_or_paths, te_ms=None, image_kind=ImageKind.MAGNITUDE, series_class=None) -> EchoSeries:
    """A 4-D EchoSeries from a 4-D image, one image file per echo, or a DICOM series.

    Echo times: `te_ms` (ms or s), else the JSON sidecar(s), else the DICOM headers. Phase is
    returned in radians whatever the stored scaling (see `phase_to_radians`).
    """
    kind = ImageKind(image_kind)
    paths = _as_list(path_or_paths)
    if te_ms is not None:
        te_ms = echo_times_to_ms(te_ms, "--te-ms")
    if all(is_image_file(p) for p in paths):
        series = read_echo_files(paths, te_ms, image_kind=kind.value)
        if kind == ImageKind.PHASE:
            series = series.replace(array=phase_to_radians(series.array, paths[0]))
        return series
    return select_series(paths, kind, series_class).to_echo_series(kind, te_ms)


def load_magnitude_phase(paths, te_ms=None) -> tuple[EchoSeries, EchoSeries]:
    """Magnitude and phase EchoSeries (radians) from paired image files, one pair per echo.

    Echo times: `te_ms`, else sidecars, else the file names (see `discover.te_from_name`).
    A DICOM folder or file is read as the multi-echo GRE series holding both kinds.
    """
    paths = _as_list(paths)
    if not all(is_image_file(p) for p in paths):
        series = select_series(paths, ImageKind.PHASE)
        return series.to_echo_series(ImageKind.MAGNITUDE, te_ms), series.to_echo_series(ImageKind.PHASE, te_ms)
    pairs = pair_magnitude_phase(paths)
    if te_ms is None:
        if any(te is None for te, _, _ in pairs):
            raise InputError(paths[0], "no echo times in sidecars or file names; pass --te-ms")
        te_ms = [te for te, _, _ in pairs]
    magnitude = load_echo_series([m for _, m, _ in pairs], te_ms, ImageKind.MAGNITUDE)
    phase = load_echo_series([p for _, _, p in pairs], te_ms, ImageKind.PHASE)
    if not phase.geometry.same_grid(magnitude.geometry):
        raise InputError(pairs[0][2], "phase and magnitude files are on different grids")
    return magnitude, phase
