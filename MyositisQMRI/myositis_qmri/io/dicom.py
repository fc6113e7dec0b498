"""The DICOM reader: files or folders -> `DicomSeries` (grouped, split, sorted, classified).

Headers are scanned without pixels (`dicom_frames`); frames are grouped by
SeriesInstanceUID, split by image kind and by echo (echo time first; echo numbers or GE's
private run numbers when the echo time does not vary), and slices are sorted by
ImagePositionPatient projected on the slice normal. Spacing comes from those positions, not
SliceThickness. Pixels are read only in `to_volume`/`to_echo_series`. Files or series that
cannot be used become `problems` entries (path, reason); nothing is ever written to inputs.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import track
from ..volume import EchoSeries, Volume
from .acquisition import refocusing_angle_deg
from .dicom_classify import classify_series
from .dicom_frames import Frame, NotUsable, frames_from_file, read_pixels
from .dicom_values import phase_to_radians
from .echo_times import echo_times_to_ms
from .kinds import ImageKind, SeriesClass
from .summary import series_summary

SPACING_TOLERANCE_MM = 0.1
SPACING_TOLERANCE_REL = 0.01
_KIND_ORDER = [ImageKind.MAGNITUDE, ImageKind.WATER, ImageKind.FAT, ImageKind.FAT_FRACTION, ImageKind.T2_MAP,
               ImageKind.IN_PHASE, ImageKind.OPPOSED_PHASE, ImageKind.PHASE, ImageKind.REAL, ImageKind.IMAGINARY,
               ImageKind.R2STAR_MAP]


class SeriesProblem(Exception):
    """A series that cannot be assembled; `path` names a file of it."""

    def __init__(self, path, reason):
        self.path, self.reason = str(path), reason
        super().__init__(reason)


@dataclass
class Stack:
    """One image kind at one echo: frames sorted along the slice normal."""

    frames: list[Frame]
    te_ms: float | None
    echo_label: str


@dataclass
class DicomSeries:
    """One series: its stacks by kind and echo, the grid they share, and what it is for.

    `matrix` is (columns, rows) and `spacing` is (x, y, z) mm, matching Volume.spacing_mm;
    z spacing is measured between the slice positions.
    """

    series_uid: str
    study_uid: str
    description: str
    vendor: str | None
    field_strength_t: float | None
    stacks: dict[ImageKind, list[Stack]]
    header: dict
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    series_class: SeriesClass = SeriesClass.UNKNOWN

    @property
    def image_kinds(self) -> set[ImageKind]:
        return set(self.stacks)

    @property
    def primary_kind(self) -> ImageKind:
        return next(k for k in _KIND_ORDER if k in self.stacks)

    def echo_stacks(self, image_kind=None) -> list[Stack]:
        kind = ImageKind(image_kind) if image_kind is not None else self.primary_kind
        if kind not in self.stacks:
            have = ", ".join(k.value for k in self.stacks)
            raise InputError(self.files[0], f"series '{self.description}' has no {kind.value} images (has {have})")
        return self.stacks[kind]

    @property
    def echo_times_ms(self) -> tuple[float, ...]:
        return tuple(s.te_ms for s in self.echo_stacks() if s.te_ms is not None)

    @property
    def n_echoes(self) -> int:
        return len(self.echo_stacks())

    @property
    def n_slices(self) -> int:
        return len(self.echo_stacks()[0].frames)

    @property
    def matrix(self) -> tuple[int, int]:
        first = self.echo_stacks()[0].frames[0]
        return first.cols, first.rows

    @property
    def mr_acquisition_type(self) -> str | None:
        return self.header.get("mr_acquisition_type")

    @property
    def refocusing_angle_deg(self) -> float | None:
        return refocusing_angle_deg(self.header.get("flip_angle_deg")) if self.series_class == SeriesClass.MESE else None

    @property
    def fat_suppressed(self) -> bool | None:
        return self.header.get("fat_suppressed")

    @property
    def precession_clockwise(self) -> bool | None:
        return None  # no header states it; the fat-water stage resolves it from the data

    @property
    def files(self) -> list[str]:
        return sorted({f.path for stacks in self.stacks.values() for s in stacks for f in s.frames})

    def summary(self) -> dict:
        """Plain values for `inspect --json` and the pipeline's log."""
        return series_summary(self, "dicom")

    def _metadata(self, stacks: list[Stack], kind: ImageKind) -> dict:
        # Optional acquisition attributes the headers do not give are left out, not set to None:
        # "MRAcquisitionType" in metadata means the headers said 2D or 3D.
        stated = {key: value for key, value in (("vendor", self.vendor), ("field_strength_t", self.field_strength_t),
                                                ("MRAcquisitionType", self.mr_acquisition_type)) if value is not None}
        return {
            "patient_id": self.header.get("patient_id"), "study_uid": self.study_uid,
            "series_uid": self.series_uid, "series_description": self.description, **stated,
            "image_kind": kind.value, "classification": self.series_class.value,
            "frame_of_reference_uid": self.header.get("frame_of_reference_uid"),
            "source_sop_instance_uids": [[f.sop_uid for f in s.frames] for s in stacks],
            "source_frame_numbers": [[None if f.frame_index is None else f.frame_index + 1 for f in s.frames]
                                     for s in stacks],
            "source_files": self.files,
        }

    def _read_stack(self, stack: Stack, cache: dict) -> np.ndarray:
        out = np.empty((len(stack.frames), stack.frames[0].rows, stack.frames[0].cols), np.float32)
        for z, frame in enumerate(stack.frames):
            if frame.path not in cache:
                try:
                    cache[frame.path] = read_pixels(frame.path)
                except NotUsable as exc:
                    raise InputError(frame.path, str(exc)) from None
            pixels = cache[frame.path]
            plane = pixels if frame.frame_index is None else pixels[frame.frame_index] if pixels.ndim == 3 else pixels
            if plane.shape != (frame.rows, frame.cols):
                raise InputError(frame.path, f"pixel data shape {plane.shape} does not match Rows x Columns "
                                             f"{frame.rows} x {frame.cols}")
            out[z] = frame.values.apply(plane)
        return out

    def _to_values(self, stack_arrays, stacks, kind):
        if kind != ImageKind.PHASE:
            return stack_arrays
        ranges = {s.frames[0].value_range for s in stacks}
        value_range = ranges.pop() if len(ranges) == 1 else None
        return [phase_to_radians(a, stacks[0].frames[0].path, value_range) for a in stack_arrays]

    def to_volume(self, image_kind=None, echo_index: int = 0) -> Volume:
        """One echo of one image kind as a Volume (phase in radians)."""
        kind = ImageKind(image_kind) if image_kind is not None else self.primary_kind
        stacks = self.echo_stacks(kind)
        if not -len(stacks) <= echo_index < len(stacks):
            raise InputError(self.files[0], f"echo {echo_index} requested; series '{self.description}' has "
                                            f"{len(stacks)} echoes")
        stack = stacks[echo_index]
        array = self._to_values([self._read_stack(stack, {})], [stack], kind)[0]
        meta = self._metadata([stack], kind)
        if stack.te_ms is not None:
            meta["echo_time_ms"] = stack.te_ms
        return Volume(array, self.spacing, self.origin, self.direction, meta)

    def to_echo_series(self, image_kind=ImageKind.MAGNITUDE, te_ms=None) -> EchoSeries:
        """All echoes of one image kind, sorted by TE; `te_ms` overrides or supplies echo times."""
        kind = ImageKind(image_kind)
        stacks = self.echo_stacks(kind)
        if te_ms is not None:
            echo_times = echo_times_to_ms(te_ms, "--te-ms")
            if len(echo_times) != len(stacks):
                raise InputError("--te-ms", f"{len(echo_times)} echo times given; series '{self.description}' "
                                            f"has {len(stacks)} echoes")
        elif any(s.te_ms is None for s in stacks) or len({s.te_ms for s in stacks}) != len(stacks):
            raise InputError(self.files[0], f"series '{self.description}': the headers do not give a distinct echo "
                                            f"time for each of its {len(stacks)} echoes; pass --te-ms")
        else:
            echo_times = tuple(s.te_ms for s in stacks)
        cache: dict = {}
        arrays = [self._read_stack(s, cache) for s in track(stacks, desc=f"reading {self.description}")]
        arrays = self._to_values(arrays, stacks, kind)
        order = np.argsort(echo_times, kind="stable")
        return EchoSeries(
            np.stack([arrays[i] for i in order]), tuple(echo_times[i] for i in order), self.spacing, self.origin,
            self.direction, image_kind=kind.value, field_strength_t=self.field_strength_t,
            refocusing_angle_deg=self.refocusing_angle_deg, vendor=self.vendor, fat_suppressed=self.fat_suppressed,
            precession_clockwise=self.precession_clockwise,
            metadata=self._metadata([stacks[i] for i in order], kind))


@dataclass
class DicomScan:
    """What a scan found: usable series and (path, reason) for everything left out."""

    series: list[DicomSeries] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def require_series(self, source) -> list[DicomSeries]:
        """The series, or an InputError that says why there are none."""
        if self.series:
            return self.series
        if not self.problems:
            raise InputError(source, "no DICOM files found")
        reasons = sorted({reason.split(" (")[0] for _, reason in self.problems})
        raise InputError(source, f"no usable image series ({len(self.problems)} files left out: "
                                 f"{'; '.join(reasons[:3])}{'; ...' if len(reasons) > 3 else ''})")


def list_files(paths) -> list[Path]:
    """Files under the given folders (recursively) and files, hidden entries skipped."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = []
    for p in (Path(x) for x in paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()
                              and not any(part.startswith(".") for part in f.relative_to(p).parts)))
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(p, "no such file or folder")
    return out


def read_dicom(paths, skip=None) -> DicomScan:
    """Scan a folder (recursively), a file, or a list of them, and assemble every series.

    `skip(path) -> bool` leaves files out silently (discover uses it for NIfTI/NRRD/JSON).
    """
    scan = DicomScan()
    by_series: dict[str, list[Frame]] = defaultdict(list)
    seen_sops: dict[tuple, str] = {}
    for path in track(list_files(paths), desc="scanning DICOM headers"):
        if skip is not None and skip(path):
            continue
        try:
            frames = frames_from_file(path)
        except NotUsable as exc:
            scan.problems.append((str(path), str(exc)))
            continue
        except Exception as exc:  # a header pydicom parses but whose values are garbage
            scan.problems.append((str(path), _one_line(f"invalid DICOM header ({type(exc).__name__}: {exc})")))
            continue
        key = (frames[0].sop_uid,)
        if key in seen_sops:
            scan.problems.append((str(path), f"duplicate file: same SOPInstanceUID as {seen_sops[key]}; ignored"))
            continue
        seen_sops[key] = str(path)
        by_series[frames[0].series_uid].extend(frames)
    for series_uid, frames in by_series.items():
        try:
            scan.series.append(assemble_series(frames, scan.problems))
        except SeriesProblem as exc:
            scan.problems.append((exc.path, exc.reason))
        except Exception as exc:
            scan.problems.append((frames[0].path, _one_line(f"series '{frames[0].header.get('description')}' "
                                                            f"cannot be assembled ({type(exc).__name__}: {exc})")))
    scan.series.sort(key=lambda s: (s.header.get("series_number") or 0, s.description, s.series_uid))
    return scan


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def assemble_series(frames: list[Frame], problems: list) -> DicomSeries:
    """Frames of one SeriesInstanceUID -> DicomSeries; odd files go to `problems`."""
    header = frames[0].header
    name = header["description"] or header["series_uid"]
    frames = _keep_main_geometry(frames, name, problems)
    by_kind: dict[ImageKind, list[Frame]] = defaultdict(list)
    for f in frames:
        by_kind[f.kind].append(f)
    stacks = {kind: _split_echoes(kind_frames, name) for kind, kind_frames in by_kind.items()}
    first = next(s for k in _KIND_ORDER if k in stacks for s in stacks[k])
    spacing, origin, direction = _stack_geometry(first.frames, name)
    for kind, kind_stacks in stacks.items():
        for s in kind_stacks:
            if len(s.frames) != len(first.frames) or not np.allclose(
                    [f.position for f in s.frames], [f.position for f in first.frames], atol=0.05):
                raise SeriesProblem(s.frames[0].path, f"series '{name}': {kind.value} echo {s.echo_label} has "
                                                      f"{len(s.frames)} slices at other positions than the "
                                                      f"{len(first.frames)} of the first echo (incomplete or mixed series)")
    series = DicomSeries(
        series_uid=header["series_uid"], study_uid=header["study_uid"], description=header["description"],
        vendor=header["vendor"], field_strength_t=header["field_strength_t"], stacks=stacks, header=header,
        spacing=spacing, origin=origin, direction=direction)
    series.series_class = classify_series(
        series.image_kinds, [s.te_ms for s in series.echo_stacks()], n_echoes=series.n_echoes,
        scanning_sequence=header["scanning_sequence"], sequence_variant=header["sequence_variant"],
        sequence_name=header["sequence_name"], echo_pulse_sequence=header["echo_pulse_sequence"],
        repetition_time_ms=header["repetition_time_ms"], inversion=header["inversion"],
        inversion_time_ms=header["inversion_time_ms"], description=header["description"])
    return series


def _keep_main_geometry(frames: list[Frame], name: str, problems: list) -> list[Frame]:
    """A series mixing matrices or orientations (e.g. a 3-plane localizer) keeps its largest stack."""
    groups: dict[tuple, list[Frame]] = defaultdict(list)
    for f in frames:
        groups[f.geometry_key].append(f)
    if len(groups) == 1:
        return frames
    keep = max(groups.values(), key=len)
    for group in groups.values():
        if group is keep:
            continue
        for path in sorted({f.path for f in group}):
            problems.append((path, f"mixed series '{name}': orientation/matrix differs from the other "
                                   f"{len(keep)} images of the series; left out"))
    return keep


def _split_echoes(frames: list[Frame], name: str) -> list[Stack]:
    """Frames of one kind -> one sorted stack per echo, ordered by echo time."""
    by_position = defaultdict(list)
    for f in frames:
        by_position[_position_key(f)].append(f)
    per_position = max(len(v) for v in by_position.values())
    te_values = {round(f.te_ms, 3) for f in frames if f.te_ms is not None}
    if per_position == 1:
        keyed = {None: frames}
    elif all(f.te_ms is not None for f in frames) and len(te_values) >= per_position and _unique_per_position(
            by_position, lambda f: round(f.te_ms, 3)):
        keyed = _group(frames, lambda f: round(f.te_ms, 3))  # Siemens XA: no EchoNumbers, TE varies
    elif all(f.echo_number is not None for f in frames) and _unique_per_position(by_position, lambda f: f.echo_number):
        keyed = _group(frames, lambda f: f.echo_number)
    elif any((f.ge_n_echoes or 0) > 1 for f in frames):
        keyed = _ge_rank_echoes(by_position, per_position, frames[0].path, name)  # GE: TE and echo number repeat
    else:
        pos = next(p for p, v in by_position.items() if len(v) == per_position)
        dup = by_position[pos]
        raise SeriesProblem(dup[0].path, f"duplicate slices in series '{name}': {len(dup)} images at slice position "
                                         f"{pos:.2f} mm with the same echo and image type ({dup[0].path}, {dup[1].path})")
    sorted_echoes = [(key, _sort_slices(echo_frames, name)) for key, echo_frames in keyed.items()]
    candidates = []
    for _, echo_frames in sorted_echoes:
        tes = {round(f.te_ms, 3) for f in echo_frames if f.te_ms is not None}
        candidates.append(echo_frames[0].te_ms if len(tes) == 1 and echo_frames[0].te_ms is not None else None)
    if len(candidates) > 1 and (None in candidates or len(set(candidates)) != len(candidates)):
        candidates = [None] * len(candidates)  # e.g. GE writes the first TE on every echo
    stacks = [Stack(frames_, te, f"TE {te:g} ms" if te is not None else f"#{key}")
              for (key, frames_), te in zip(sorted_echoes, candidates)]
    stacks.sort(key=lambda s: (s.te_ms is None, s.te_ms or 0.0, _echo_order(s.echo_label)))
    return stacks


def _echo_order(label: str):
    digits = label.lstrip("#")
    return (0, int(digits)) if digits.isdigit() else (1, label)


def _position_key(frame: Frame) -> float:
    return round(float(frame.position @ frame.normal), 2)


def _unique_per_position(by_position, key) -> bool:
    return all(len({key(f) for f in v}) == len(v) for v in by_position.values())


def _group(frames, key) -> dict:
    out = defaultdict(list)
    for f in frames:
        out[key(f)].append(f)
    return dict(out)


def _ge_rank_echoes(by_position, per_position, path, name) -> dict:
    """GE multi-echo that repeats TE and echo number: rank by raw run number, then SOP UID."""
    out = defaultdict(list)
    for pos, group in by_position.items():
        if len(group) != per_position:
            raise SeriesProblem(group[0].path, f"series '{name}': {len(group)} echoes at slice {pos:.2f} mm, "
                                               f"{per_position} elsewhere")
        group = sorted(group, key=lambda f: (f.ge_run_number or 0.0, _uid_key(f.sop_uid)))
        for rank, f in enumerate(group, start=1):
            out[rank].append(f)
    return dict(out)


def _uid_key(uid: str):
    return tuple(int(p) if p.isdigit() else 0 for p in uid.split("."))


def _sort_slices(frames: list[Frame], name: str) -> list[Frame]:
    normal = frames[0].normal
    frames = sorted(frames, key=lambda f: float(f.position @ normal))
    distances = np.array([float(f.position @ normal) for f in frames])
    steps = np.diff(distances)
    if steps.size and np.min(steps) < 0.01:
        i = int(np.argmin(steps))
        raise SeriesProblem(frames[i + 1].path, f"duplicate slices in series '{name}': two images at slice position "
                                                f"{distances[i]:.2f} mm ({frames[i].path}, {frames[i + 1].path})")
    if steps.size:
        median = float(np.median(steps))
        if np.max(np.abs(steps - median)) > SPACING_TOLERANCE_MM + SPACING_TOLERANCE_REL * median:
            raise SeriesProblem(frames[0].path, f"inconsistent slice spacing in series '{name}': gaps from "
                                                f"{steps.min():.2f} to {steps.max():.2f} mm (missing or extra slices)")
    return frames


def _stack_geometry(frames: list[Frame], name: str):
    f0 = frames[0]
    o = np.asarray(f0.orientation, float)
    row_dir, col_dir = o[:3] / np.linalg.norm(o[:3]), o[3:] / np.linalg.norm(o[3:])
    normal = np.cross(row_dir, col_dir)
    if len(frames) > 1:
        z = float(np.median(np.diff([float(f.position @ normal) for f in frames])))
    else:
        # SpacingBetweenSlices is negative in some exports and either may be 0 or absent: the first
        # positive one of the two, else 1 mm (one slice: the value changes no measurement).
        stated = (abs(v) for v in (f0.header.get("spacing_between_slices"), f0.header.get("slice_thickness")) if v)
        z = float(next(stated, 1.0))
    direction = np.column_stack([row_dir, col_dir, normal])
    spacing = (f0.pixel_spacing[1], f0.pixel_spacing[0], z)  # PixelSpacing is (row step, column step)
    return spacing, tuple(float(v) for v in f0.position), tuple(direction.ravel())
