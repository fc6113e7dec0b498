"""Study discovery: every usable series under a path, DICOM and NIfTI/NRRD alike.

`discover` returns a `Study`: DICOM series (from the one DICOM reader) and image-file
series, each with a classification, plus (path, reason) problems. Image files are grouped
when their names differ only in numbers and each carries a distinct echo time (a multi-echo
acquisition exported one file per echo); magnitude and phase files of the same echo are
paired (`pair_magnitude_phase`). Classification of files comes from the BIDS sidecar when
there is one, else from the file name. Only headers are read, except to tell phase from
magnitude when neither sidecar nor name says.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..volume import EchoSeries, Volume
from .acquisition import acquisition_type, field_strength_tesla
from .dicom import DicomSeries, list_files, read_dicom
from .dicom_classify import classify_series
from .dicom_frames import image_kind_from_tokens
from .dicom_values import phase_to_radians
from .echo_times import echo_times_to_ms
from .kinds import STRUCTURAL_CLASSES, ImageKind, SeriesClass
from .nifti import is_image_file, read_echo_files, read_echo_series, read_sidecar, read_volume, sidecar_path
from .summary import series_summary

_NAME_KINDS = [
    (r"(^|_)(ff|fatfraction|fat_fraction|pdff|fatfrac)(_|$)", ImageKind.FAT_FRACTION),
    (r"(^|_)(t2map|t2_map|t2w?_?map)(_|$)", ImageKind.T2_MAP),
    (r"(^|_)(labels?|seg|segmentation|mask|muscles)(_|$)", ImageKind.LABELS),
    (r"(^|_)(ph|pha|phase|p)(_|$)", ImageKind.PHASE),
    (r"(^|_)(water|w)(_|$)", ImageKind.WATER),
    (r"(^|_)(fat|f)(_|$)", ImageKind.FAT),
    (r"(^|_)(in_?phase|ip)(_|$)", ImageKind.IN_PHASE),
    (r"(^|_)(opp_?phase|out_?phase|op)(_|$)", ImageKind.OPPOSED_PHASE),
    (r"(^|_)(real|re)(_|$)", ImageKind.REAL),
    (r"(^|_)(imag|imaginary|im)(_|$)", ImageKind.IMAGINARY),
    (r"(^|_)(mag|magnitude|m)(_|$)", ImageKind.MAGNITUDE),
]
_TE_IN_NAME = re.compile(r"(?:^|[^a-z])te[_-]?(\d+(?:[.p]\d+)?)(ms)?(?=[^0-9]|$)", re.I)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def kind_from_name(path: Path, sidecar: dict | None = None) -> ImageKind | None:
    """Image kind from the sidecar's ImageType, else from words in the file name."""
    sidecar = sidecar or {}
    if sidecar.get("ImageType"):
        return image_kind_from_tokens(sidecar["ImageType"], description=str(sidecar.get("SeriesDescription", "")))
    words = _words(_stem(path))
    for pattern, kind in _NAME_KINDS:
        if re.search(pattern, words):
            return kind
    return None


def te_from_name(path: Path, hundredths: bool = False) -> float | None:
    """Echo time (ms) written in a file name: 'TE_3.45', 'TE3p45', 'TE_20ms', or 'TE_345'.

    A bare integer of three or more digits is read as hundredths of a millisecond when
    `hundredths` is set (gradient-echo exports such as musclemap's 'Dixon_TE_345' = 3.45 ms);
    otherwise as milliseconds. This is a documented fallback: sidecars or --te-ms win.
    """
    match = _TE_IN_NAME.search(_stem(path))
    if not match:
        return None
    digits, unit = match.group(1), match.group(2)
    if "." in digits or "p" in digits.lower():
        return float(digits.lower().replace("p", "."))
    value = float(digits)
    if hundredths and unit is None and len(digits) >= 3:
        return value / 100.0
    return value


def _phase_like(path: Path) -> bool:
    """Phase images fill their value range evenly; magnitude images are mostly dark."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    lo, hi = float(array.min()), float(array.max())
    if hi <= lo:
        return False
    top_quarter = float(np.mean(array > lo + 0.75 * (hi - lo)))
    return top_quarter > 0.12


def pair_magnitude_phase(paths) -> list[tuple[float | None, Path, Path]]:
    """Magnitude and phase files of each echo: [(te_ms or None, magnitude, phase)], by echo.

    Files are matched by the echo time in their sidecar or name; within an echo the phase
    file is the one the sidecar/name calls phase, else the one whose values fill their range.
    Without echo times, files are taken in name order as (magnitude, phase) pairs, the
    order scanners number them (e.g. series 6 magnitude, series 7 phase).
    """
    paths = sorted(Path(p) for p in paths)
    if len(paths) < 2 or len(paths) % 2:
        raise InputError(paths[0] if paths else None, f"{len(paths)} files cannot be paired as magnitude/phase")
    tes = [_file_te(p, hundredths=True) for p in paths]
    if all(t is not None for t in tes):
        groups = defaultdict(list)
        for t, p in zip(tes, paths):
            groups[round(t, 3)].append(p)
    else:
        groups = {i: paths[2 * i: 2 * i + 2] for i in range(len(paths) // 2)}
    pairs = []
    for key, group in groups.items():
        if len(group) != 2:
            raise InputError(group[0], f"echo {key}: {len(group)} files; need one magnitude and one phase")
        kinds = [kind_from_name(p, read_sidecar(p)) for p in group]
        if ImageKind.PHASE in kinds and kinds.count(ImageKind.PHASE) == 1:
            phase = group[kinds.index(ImageKind.PHASE)]
        else:
            scores = [_phase_like(p) for p in group]
            phase = group[scores.index(True)] if scores.count(True) == 1 else group[1]
        magnitude = group[0] if phase == group[1] else group[1]
        pairs.append((key if isinstance(key, float) else None, magnitude, phase))
    pairs.sort(key=lambda item: (item[0] is None, item[0] or 0.0, str(item[1])))
    return pairs


def _file_te(path: Path, hundredths: bool = False) -> float | None:
    sidecar = read_sidecar(path)
    if "EchoTime" in sidecar and np.ndim(sidecar["EchoTime"]) == 0:
        return echo_times_to_ms([sidecar["EchoTime"]], sidecar_path(path))[0]
    return te_from_name(path, hundredths)


@dataclass
class ImageFileSeries:
    """NIfTI/NRRD file(s) presented like a DicomSeries: one 3-D/4-D file, or one file per echo.

    `echo_files` maps each image kind to its files in echo order (one 4-D file counts once).
    """

    description: str
    series_class: SeriesClass
    echo_files: dict[ImageKind, list[Path]]
    echo_times_ms: tuple[float, ...]
    n_slices: int
    matrix: tuple[int, int]
    spacing: tuple[float, float, float]
    n_echoes: int
    vendor: str | None = None
    field_strength_t: float | None = None
    sidecar: dict = field(default_factory=dict)
    series_uid: str = ""
    study_uid: str = ""
    mr_acquisition_type: str | None = None
    refocusing_angle_deg: float | None = None
    fat_suppressed: bool | None = None
    precession_clockwise: bool | None = None

    @property
    def image_kinds(self) -> set[ImageKind]:
        return set(self.echo_files)

    @property
    def files(self) -> list[str]:
        return sorted(str(p) for ps in self.echo_files.values() for p in ps)

    @property
    def primary_kind(self) -> ImageKind:
        return next(iter(self.echo_files))

    def summary(self) -> dict:
        """Plain values for `inspect --json` and the pipeline's log."""
        return series_summary(self, "file")

    def _files(self, image_kind) -> list[Path]:
        kind = ImageKind(image_kind) if image_kind is not None else self.primary_kind
        if kind not in self.echo_files:
            raise InputError(self.files[0], f"no {kind.value} image among {[k.value for k in self.echo_files]}")
        return self.echo_files[kind]

    def to_volume(self, image_kind=None, echo_index: int = 0) -> Volume:
        kind = ImageKind(image_kind) if image_kind is not None else self.primary_kind
        files = self._files(kind)
        if len(files) == 1 and self.n_echoes > 1:
            volume = self.to_echo_series(kind).echo(echo_index)
        else:
            volume = read_volume(files[echo_index])
            if kind == ImageKind.PHASE:
                volume = volume.with_array(phase_to_radians(volume.array, files[echo_index]))
        volume.metadata.update(image_kind=kind.value, classification=self.series_class.value)
        return volume

    def to_echo_series(self, image_kind=ImageKind.MAGNITUDE, te_ms=None) -> EchoSeries:
        kind = ImageKind(image_kind)
        files = self._files(kind)
        if te_ms is None and self.echo_times_ms and len(self.echo_times_ms) == self.n_echoes:
            te_ms = self.echo_times_ms
        series = read_echo_files(files, te_ms, image_kind=kind.value)
        if kind == ImageKind.PHASE:
            series = series.replace(array=phase_to_radians(series.array, files[0]))
        return series.replace(vendor=self.vendor or series.vendor,
                              field_strength_t=self.field_strength_t or series.field_strength_t,
                              metadata={**series.metadata, "classification": self.series_class.value})


@dataclass
class Study:
    """Every series found, and every file left out with the reason."""

    series: list = field(default_factory=list)  # DicomSeries | ImageFileSeries
    problems: list[tuple[str, str]] = field(default_factory=list)

    def of_class(self, *classes: SeriesClass) -> list:
        return [s for s in self.series if s.series_class in classes]

    def with_kind(self, kind: ImageKind) -> list:
        return [s for s in self.series if kind in s.image_kinds]

    def mese(self):
        """The MESE series with most echoes, or None."""
        found = self.of_class(SeriesClass.MESE)
        return max(found, key=lambda s: (s.n_echoes, s.n_slices)) if found else None

    def multiecho_gre(self):
        """The GRE/Dixon series, preferring one holding magnitude and phase, or None."""
        found = self.of_class(SeriesClass.MULTIECHO_GRE)
        return max(found, key=lambda s: (ImageKind.PHASE in s.image_kinds, s.n_echoes)) if found else None

    def vendor_map(self, kind: ImageKind):
        """The vendor water / fat / FF / T2 map series, or None."""
        found = self.with_kind(kind)
        return found[0] if found else None

    def best_structural(self):
        """A structural series for segmentation: T1w first, then the finest in-plane grid."""
        rank = {c: i for i, c in enumerate(STRUCTURAL_CLASSES)}
        found = [s for s in self.series if s.series_class in rank]
        if not found:
            return None
        return min(found, key=lambda s: (rank[s.series_class], s.spacing[0] * s.spacing[1], -s.n_slices))

    def require_series(self, source) -> list:
        if self.series:
            return self.series
        if not self.problems:
            raise InputError(source, "no image series found")
        reasons = sorted({reason for _, reason in self.problems})
        raise InputError(source, f"no usable image series ({len(self.problems)} files left out: "
                                 f"{'; '.join(r[:80] for r in reasons[:3])}{'; ...' if len(reasons) > 3 else ''})")


def discover(path_or_paths) -> Study:
    """All DICOM series and NIfTI/NRRD images under a path (or list of paths)."""
    files = list_files(path_or_paths)
    image_files = [f for f in files if is_image_file(f)]
    skip_names = {f for f in files if is_image_file(f) or f.suffix.lower() in (".json", ".txt", ".md", ".csv")}
    scan = read_dicom(path_or_paths, skip=lambda p: p in skip_names)
    study = Study(list(scan.series), list(scan.problems))
    study.series.extend(_file_series(image_files, study.problems))
    return study


def _info(path: Path):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _file_series(paths: list[Path], problems: list) -> list[ImageFileSeries]:
    infos = {}
    for p in paths:
        try:
            infos[p] = _info(p)
        except RuntimeError as exc:
            problems.append((str(p), f"not a readable NIfTI/NRRD image ({str(exc).strip().splitlines()[-1][:120]})"))
    groups = defaultdict(list)
    for p in infos:
        groups[(p.parent, re.sub(r"\d+", "#", _stem(p)))].append(p)
    out = []
    for (_, _), group in groups.items():
        group.sort()
        made = _echo_group(group, infos, problems) if len(group) > 1 else None
        if made is not None:
            out.append(made)
        else:
            out.extend(_single(p, infos[p]) for p in group)
    return out


def _echo_group(group: list[Path], infos, problems) -> ImageFileSeries | None:
    """One-file-per-echo exports (magnitude/phase pairs or one kind); None if not one series."""
    sizes = {tuple(infos[p].GetSize()) for p in group}
    if len(sizes) != 1 or len(next(iter(sizes))) != 3:
        return None
    tes = [_file_te(p, hundredths=False) for p in group]
    if any(t is None for t in tes):
        return None
    distinct = sorted({round(t, 3) for t in tes})
    if len(distinct) == len(group):
        kind = kind_from_name(group[0], read_sidecar(group[0])) or ImageKind.MAGNITUDE
        order = np.argsort(tes)
        return _make(group[0], {kind: [group[i] for i in order]}, tuple(tes[i] for i in order), infos[group[0]])
    if len(distinct) * 2 == len(group):
        try:
            pairs = pair_magnitude_phase(group)
        except InputError as exc:
            problems.append((exc.source, exc.reason))
            return None
        te = tuple(t for t, _, _ in pairs)
        return _make(group[0], {ImageKind.MAGNITUDE: [m for _, m, _ in pairs], ImageKind.PHASE: [p for _, _, p in pairs]},
                     te, infos[group[0]])
    return None


def _single(path: Path, info) -> ImageFileSeries:
    sidecar = read_sidecar(path)
    kind = kind_from_name(path, sidecar) or ImageKind.MAGNITUDE
    te = ()
    if "EchoTime" in sidecar:
        try:
            te = echo_times_to_ms(np.atleast_1d(sidecar["EchoTime"]).tolist(), sidecar_path(path))
        except InputError:
            te = ()
    return _make(path, {kind: [path]}, te, info)


def _make(path: Path, echo_files, te, info) -> ImageFileSeries:
    sidecar = read_sidecar(path)
    size, spacing = info.GetSize(), info.GetSpacing()
    n_echoes = size[3] if len(size) == 4 else len(next(iter(echo_files.values())))
    description = str(sidecar.get("SeriesDescription") or _stem(path))
    tr = sidecar.get("RepetitionTime")
    ti = sidecar.get("InversionTime")
    series_class = classify_series(
        set(echo_files), te, n_echoes=n_echoes, scanning_sequence="\\".join(np.atleast_1d(sidecar.get("ScanningSequence", ""))),
        sequence_variant="\\".join(np.atleast_1d(sidecar.get("SequenceVariant", ""))),
        sequence_name=str(sidecar.get("SequenceName", "") or sidecar.get("PulseSequenceDetails", "")),
        repetition_time_ms=None if tr is None else float(tr) * (1000.0 if float(tr) < 30 else 1.0),
        inversion=ti is not None, inversion_time_ms=None if ti is None else float(ti) * (1000.0 if float(ti) < 10 else 1.0),
        description=description + " " + _stem(path))
    if ImageKind.LABELS in echo_files:
        series_class = SeriesClass.UNKNOWN
    return ImageFileSeries(
        description=description, series_class=series_class, echo_files=echo_files, echo_times_ms=tuple(te),
        n_slices=int(size[2]) if len(size) >= 3 else 1, matrix=(int(size[0]), int(size[1])),
        spacing=tuple(float(v) for v in spacing[:3]), n_echoes=int(n_echoes), vendor=sidecar.get("Manufacturer") or None,
        field_strength_t=field_strength_tesla(sidecar.get("MagneticFieldStrength")), sidecar=sidecar,
        series_uid=str(sidecar.get("SeriesInstanceUID", "")),
        mr_acquisition_type=acquisition_type(sidecar.get("MRAcquisitionType")))
