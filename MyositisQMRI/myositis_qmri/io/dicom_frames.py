"""DICOM headers to `Frame` records: one per 2-D image, classic or enhanced multi-frame.

A `Frame` holds everything series assembly needs (geometry, echo, image kind, value map) so
pixels can be read later, only for the series asked for. Enhanced objects take each value
from the frame's per-frame functional group, falling back to the shared group, then to the
top level. Image kinds come from ImageType/FrameType, ComplexImageComponent and the vendors'
private conventions (GE (0043,102F), Philips (2005,1011)).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from .acquisition import acquisition_type, field_strength_tesla
from .dicom_compat import read_dataset
from .dicom_values import PHILIPS_PRIVATE_FRAME_GROUP, ValueMap, stored_value_range, value_map
from .kinds import ImageKind

GE_IMAGE_TYPE = (0x0043, 0x102F)        # 0 magnitude, 1 phase, 2 real, 3 imaginary
GE_NUMBER_OF_ECHOES = (0x0019, 0x10A9)
GE_RAW_RUN_NUMBER = (0x0019, 0x10A2)
PHILIPS_IMAGE_TYPE = (0x2005, 0x1011)   # 'M', 'P', 'R', 'I', 'W', 'F', ...

# Whole ImageType/FrameType values; compound names first so OPP_PHASE never reads as phase.
_KIND_TOKENS = {
    "FF": ImageKind.FAT_FRACTION, "FAT_FRACTION": ImageKind.FAT_FRACTION, "FATFRACTION": ImageKind.FAT_FRACTION,
    "PDFF": ImageKind.FAT_FRACTION, "FF_MAP": ImageKind.FAT_FRACTION, "FAT_FRAC": ImageKind.FAT_FRACTION,
    "W": ImageKind.WATER, "WATER": ImageKind.WATER,
    "F": ImageKind.FAT, "FAT": ImageKind.FAT,
    "IN_PHASE": ImageKind.IN_PHASE, "INPHASE": ImageKind.IN_PHASE, "IP": ImageKind.IN_PHASE,
    "OPP_PHASE": ImageKind.OPPOSED_PHASE, "OUT_PHASE": ImageKind.OPPOSED_PHASE, "OP": ImageKind.OPPOSED_PHASE,
    "OUT_OF_PHASE": ImageKind.OPPOSED_PHASE, "OPPOSED_PHASE": ImageKind.OPPOSED_PHASE, "OPP": ImageKind.OPPOSED_PHASE,
    "T2_MAP": ImageKind.T2_MAP, "T2MAP": ImageKind.T2_MAP,
    "R2STAR_MAP": ImageKind.R2STAR_MAP, "R2STAR": ImageKind.R2STAR_MAP, "R2_STAR": ImageKind.R2STAR_MAP,
    "P": ImageKind.PHASE, "PHASE": ImageKind.PHASE, "PHA": ImageKind.PHASE,
    "R": ImageKind.REAL, "REAL": ImageKind.REAL,
    "I": ImageKind.IMAGINARY, "IMAGINARY": ImageKind.IMAGINARY, "IMAG": ImageKind.IMAGINARY,
    "M": ImageKind.MAGNITUDE, "MAGNITUDE": ImageKind.MAGNITUDE, "MAG": ImageKind.MAGNITUDE,
}
_KIND_PRIORITY = [ImageKind.FAT_FRACTION, ImageKind.WATER, ImageKind.FAT, ImageKind.OPPOSED_PHASE,
                  ImageKind.IN_PHASE, ImageKind.T2_MAP, ImageKind.R2STAR_MAP, ImageKind.PHASE,
                  ImageKind.REAL, ImageKind.IMAGINARY, ImageKind.MAGNITUDE]
_COMPLEX_COMPONENT = {"MAGNITUDE": ImageKind.MAGNITUDE, "PHASE": ImageKind.PHASE,
                      "REAL": ImageKind.REAL, "IMAGINARY": ImageKind.IMAGINARY}
_GE_KIND = {0: ImageKind.MAGNITUDE, 1: ImageKind.PHASE, 2: ImageKind.REAL, 3: ImageKind.IMAGINARY}

NOT_IMAGE_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4": "a segmentation (SEG)",
                         "1.2.840.10008.5.1.4.1.1.11.1": "a presentation state"}


class NotUsable(Exception):
    """A file that is not (or not entirely) a usable image; the message is the reason."""


@dataclass
class Frame:
    """One 2-D image of a series: where it is, what it is, and how to get its pixels."""

    path: str
    frame_index: int | None          # 0-based frame of a multi-frame file, None for classic
    sop_uid: str
    instance_number: int
    series_uid: str
    kind: ImageKind
    position: np.ndarray             # ImagePositionPatient (LPS mm)
    orientation: tuple[float, ...]   # ImageOrientationPatient (row dir, column dir)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    rows: int
    cols: int
    te_ms: float | None
    echo_number: int | None
    values: ValueMap
    value_range: tuple[float, float, float] | None
    ge_n_echoes: int | None = None
    ge_run_number: float | None = None
    header: dict = field(default_factory=dict)  # series-level attributes, shared by reference

    @property
    def normal(self) -> np.ndarray:
        o = np.asarray(self.orientation, float)
        return np.cross(o[:3], o[3:])

    @property
    def geometry_key(self) -> tuple:
        return (self.rows, self.cols, tuple(np.round(self.orientation, 3)),
                tuple(np.round(self.pixel_spacing, 4)))


def read_header(path: str | Path) -> pydicom.Dataset:
    """Header with large values (pixels) deferred, not read; NotUsable for anything unreadable."""
    try:
        ds = read_dataset(path, defer_size="16 KB")
    except InvalidDicomError:
        raise NotUsable("not a DICOM file") from None
    except (OSError, EOFError) as exc:
        raise NotUsable(f"unreadable ({exc})") from None
    except Exception as exc:  # pydicom raises many types on corrupt headers
        raise NotUsable(f"corrupt or truncated DICOM header ({type(exc).__name__}: {exc})") from None
    return ds


def _first(sequence_owner, name):
    if sequence_owner is None:
        return None
    seq = sequence_owner.get(name)
    return seq[0] if seq else None


def _floats(value, n=None):
    if value is None:
        return None
    try:
        out = [float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value])]
    except (TypeError, ValueError):
        return None
    if n is not None and len(out) != n:
        return None
    if not np.all(np.isfinite(out)):
        return None
    return out


def _num(value, cast=float):
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    try:
        return None if value in (None, "") else cast(value)
    except (TypeError, ValueError):
        return None


def _tokens(values) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = values.split("\\")
    return [str(v).strip().upper().replace(" ", "_") for v in values if str(v).strip()]


def image_kind_from_tokens(image_type, complex_component=None, ge_code=None, philips_code=None,
                           description: str = "") -> ImageKind:
    """The image kind from ImageType-like tokens and vendor hints (magnitude by default)."""
    tokens = _tokens(image_type)[2:] + _tokens(philips_code)
    found = {_KIND_TOKENS[t] for t in tokens if t in _KIND_TOKENS}
    if not found:
        parts = [p for t in tokens for p in t.replace("-", "_").split("_")]
        found = {_KIND_TOKENS[p] for p in parts if p in _KIND_TOKENS}
    if complex_component:
        comp = _COMPLEX_COMPONENT.get(str(complex_component).upper())
        if comp is not None and not (found - {ImageKind.MAGNITUDE, ImageKind.PHASE, ImageKind.REAL,
                                               ImageKind.IMAGINARY}):
            found = {comp}
    if ge_code is not None and not found - {ImageKind.MAGNITUDE}:
        found = {_GE_KIND.get(ge_code, ImageKind.MAGNITUDE)}
    if found - {ImageKind.MAGNITUDE}:
        return next(k for k in _KIND_PRIORITY if k in found)
    derived = "DERIVED" in _tokens(image_type)[:1]
    return _kind_from_description(description, derived) or ImageKind.MAGNITUDE


def _kind_from_description(description: str, derived: bool) -> ImageKind | None:
    """Vendor maps whose ImageType says nothing specific (e.g. 'DERIVED\\PRIMARY\\OTHER')."""
    d = description.upper().replace(" ", "_").replace("-", "_")
    if any(k in d for k in ("FAT_FRACTION", "FATFRACTION", "PDFF", "FF_MAP")) or d.endswith("_FF"):
        return ImageKind.FAT_FRACTION
    # Acquired MESE protocols are often named "t2map" too: only a derived image is a map.
    if derived and ("T2_MAP" in d or "T2MAP" in d or ("MAPIT" in d and "T2" in d)):
        return ImageKind.T2_MAP
    if derived and (d.endswith("_W") or "WATER" in d):
        return ImageKind.WATER
    if derived and (d.endswith("_F") or d.endswith("FAT")):
        return ImageKind.FAT
    return None


def _header_info(ds) -> dict:
    """Series-level attributes (same for every frame of a file)."""
    timing = _first(_first(ds, "SharedFunctionalGroupsSequence"), "MRTimingAndRelatedParametersSequence")
    modifier = _first(_first(ds, "SharedFunctionalGroupsSequence"), "MRModifierSequence")
    src = timing if timing is not None else ds
    scan_options = _tokens(ds.get("ScanOptions"))
    suppression = str(ds.get("SpectrallySelectedSuppression", "") or "").upper()
    if suppression:
        fat_suppressed = "FAT" in suppression
    elif "ScanOptions" in ds:
        fat_suppressed = any(t in ("FS", "SFS", "FAT", "FSAT", "SPIR", "SPAIR", "CHESS") or "FAT" in t
                             for t in scan_options)
    else:
        fat_suppressed = None
    inversion = "IR" in _tokens(ds.get("ScanningSequence")) or "IR" in scan_options or (
        modifier is not None and str(modifier.get("InversionRecovery", "")).upper() == "YES")
    ti = _num(ds.get("InversionTime"))
    if ti is None and modifier is not None:
        ti = _num(modifier.get("InversionTimes"))
    measures = _first(_first(ds, "SharedFunctionalGroupsSequence"), "PixelMeasuresSequence")
    if measures is None:
        measures = _first(_first(ds, "PerFrameFunctionalGroupsSequence"), "PixelMeasuresSequence")
    measures = measures if measures is not None else ds
    return {
        "slice_thickness": _num(measures.get("SliceThickness")),
        "spacing_between_slices": _num(measures.get("SpacingBetweenSlices")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")) or None,
        "patient_id": str(ds.get("PatientID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "series_number": _num(ds.get("SeriesNumber"), int),
        "description": str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or ""),
        "protocol": str(ds.get("ProtocolName", "") or ""),
        "vendor": str(ds.get("Manufacturer", "") or "") or None,
        "field_strength_t": field_strength_tesla(ds.get("MagneticFieldStrength")),
        "mr_acquisition_type": acquisition_type(ds.get("MRAcquisitionType")),
        "scanning_sequence": "\\".join(_tokens(ds.get("ScanningSequence"))),
        "sequence_variant": "\\".join(_tokens(ds.get("SequenceVariant"))),
        "sequence_name": str(ds.get("SequenceName", "") or ds.get("PulseSequenceName", "") or ""),
        "echo_pulse_sequence": str(ds.get("EchoPulseSequence", "") or "").upper() or None,
        "repetition_time_ms": _num(src.get("RepetitionTime")),
        "flip_angle_deg": _num(src.get("FlipAngle")),
        "echo_train_length": _num(src.get("EchoTrainLength"), int),
        "inversion": bool(inversion),
        "inversion_time_ms": ti,
        "fat_suppressed": fat_suppressed,
        "image_type": _tokens(ds.get("ImageType")),
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
        "bits_stored": _num(ds.get("BitsStored"), int),
        "signed": _num(ds.get("PixelRepresentation"), int) == 1,
        "transfer_syntax": str(getattr(getattr(ds, "file_meta", None), "get", lambda *_: "")("TransferSyntaxUID", "")),
    }


def _check_pixel_bytes(ds, path: str, n_frames: int) -> None:
    """A truncated file ends before its pixel data does; catch it before any pixels are read."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise NotUsable("image header but no pixel data (truncated file?)")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        compressed = syntax is not None and syntax.is_compressed
    except ValueError:
        raise NotUsable(f"unknown transfer syntax {syntax}") from None
    if compressed:
        return  # encapsulated: a damaged stream is caught when its pixels are decoded
    element = ds.get_item("PixelData")
    start = getattr(element, "file_tell", None) or getattr(element, "value_tell", None)
    if start is None:
        return
    bits = _num(ds.get("BitsAllocated"), int) or 16
    needed = int(ds.Rows) * int(ds.Columns) * n_frames * bits // 8
    size = os.path.getsize(path)
    if size < start + needed:
        raise NotUsable(f"truncated: pixel data ends at byte {size}, needs {start + needed}")


def frames_from_file(path: str | Path) -> list[Frame]:
    """Every frame of one DICOM file; raises NotUsable with the reason."""
    path = str(path)
    ds = read_header(path)
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class in NOT_IMAGE_SOP_CLASSES:
        raise NotUsable(f"not an image series: {NOT_IMAGE_SOP_CLASSES[sop_class]}")
    if "Rows" not in ds or "Columns" not in ds:
        kind = ds.get("Modality", "?")
        raise NotUsable(f"DICOM without image pixels (modality {kind}, SOP class {sop_class or '?'})")
    if not ds.get("SeriesInstanceUID"):
        raise NotUsable("no SeriesInstanceUID")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise NotUsable("colour (RGB) image, not an MR magnitude/phase/map")
    header = _header_info(ds)
    n_frames = _num(ds.get("NumberOfFrames"), int) or 1
    if n_frames < 1:
        raise NotUsable(f"NumberOfFrames {n_frames}")
    _check_pixel_bytes(ds, path, n_frames)
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return [_plausible(f) for f in _enhanced_frames(ds, path, header, n_frames)]
    if n_frames > 1:
        raise NotUsable(f"multi-frame object with {n_frames} frames but no functional groups")
    return [_plausible(_classic_frame(ds, path, header))]


def _plausible(frame: Frame) -> Frame:
    """Values no scanner writes (TE of 1e308 ms, slope of 1e308) would only poison the maths."""
    if frame.te_ms is not None and not (0 < frame.te_ms < 10000):
        frame.te_ms = None
    if not (abs(frame.values.slope) < 1e15 and abs(frame.values.intercept) < 1e15):
        raise NotUsable(f"implausible rescale slope/intercept {frame.values.slope:g}/{frame.values.intercept:g}")
    if frame.rows < 1 or frame.cols < 1:
        raise NotUsable(f"image of {frame.rows} x {frame.cols} pixels")
    return frame


def _geometry(position, orientation, spacing, path):
    pos = _floats(position, 3)
    ori = _floats(orientation, 6)
    spc = _floats(spacing, 2)
    if pos is None or ori is None:
        raise NotUsable("no ImagePositionPatient/ImageOrientationPatient (no patient-space geometry)")
    if spc is None or min(spc) <= 0:
        raise NotUsable("no valid PixelSpacing")
    o = np.asarray(ori)
    if abs(np.linalg.norm(o[:3]) - 1) > 0.01 or abs(np.linalg.norm(o[3:]) - 1) > 0.01 or abs(o[:3] @ o[3:]) > 0.01:
        raise NotUsable(f"ImageOrientationPatient {ori} is not two orthonormal directions")
    return np.asarray(pos), tuple(ori), (spc[0], spc[1])


def _classic_frame(ds, path: str, header: dict) -> Frame:
    position, orientation, spacing = _geometry(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"),
                                               ds.get("PixelSpacing"), path)
    vendor = (header["vendor"] or "").upper()
    ge_code = _num(ds.get(GE_IMAGE_TYPE).value, int) if "GE" in vendor and GE_IMAGE_TYPE in ds else None
    philips_code = ds.get(PHILIPS_IMAGE_TYPE).value if "PHILIPS" in vendor and PHILIPS_IMAGE_TYPE in ds else None
    kind = image_kind_from_tokens(ds.get("ImageType"), ds.get("ComplexImageComponent"), ge_code,
                                  philips_code if isinstance(philips_code, str) else None, header["description"])
    vmap = value_map(ds, ds.get("RealWorldValueMappingSequence"), ds if "PHILIPS" in vendor else None)
    return Frame(
        path=path, frame_index=None, sop_uid=str(ds.get("SOPInstanceUID", path)),
        instance_number=_num(ds.get("InstanceNumber"), int) or 0, series_uid=header["series_uid"], kind=kind,
        position=position, orientation=orientation, pixel_spacing=spacing, rows=int(ds.Rows), cols=int(ds.Columns),
        te_ms=_num(ds.get("EchoTime")), echo_number=_num(ds.get("EchoNumbers"), int), values=vmap,
        value_range=stored_value_range(header["bits_stored"], header["signed"], vmap),
        ge_n_echoes=_num(ds.get(GE_NUMBER_OF_ECHOES).value, int) if GE_NUMBER_OF_ECHOES in ds else None,
        ge_run_number=_num(ds.get(GE_RAW_RUN_NUMBER).value) if GE_RAW_RUN_NUMBER in ds else None,
        header=header)


def _group(per_frame, shared, name):
    item = _first(per_frame, name)
    return item if item is not None else _first(shared, name)


def _enhanced_frames(ds, path: str, header: dict, n_frames: int) -> list[Frame]:
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frame_seq = ds.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame_seq and len(per_frame_seq) != n_frames:
        raise NotUsable(f"{len(per_frame_seq)} per-frame groups for {n_frames} frames")
    vendor = (header["vendor"] or "").upper()
    frames = []
    for index in range(n_frames):
        pf = per_frame_seq[index] if per_frame_seq else None
        plane_pos = _group(pf, shared, "PlanePositionSequence")
        plane_ori = _group(pf, shared, "PlaneOrientationSequence")
        measures = _group(pf, shared, "PixelMeasuresSequence")
        try:
            position, orientation, spacing = _geometry(
                plane_pos.get("ImagePositionPatient") if plane_pos else None,
                plane_ori.get("ImageOrientationPatient") if plane_ori else None,
                measures.get("PixelSpacing") if measures else None, path)
        except NotUsable as exc:
            raise NotUsable(f"frame {index + 1}: {exc}") from None
        echo = _group(pf, shared, "MREchoSequence")
        frame_type = _group(pf, shared, "MRImageFrameTypeSequence")
        transform = _group(pf, shared, "PixelValueTransformationSequence")
        rwvm_owner = _group(pf, shared, "RealWorldValueMappingSequence")
        rwvm_items = (pf.get("RealWorldValueMappingSequence") if pf is not None and "RealWorldValueMappingSequence" in pf
                      else shared.get("RealWorldValueMappingSequence") if shared is not None else None)
        if rwvm_items is None and rwvm_owner is None:
            rwvm_items = ds.get("RealWorldValueMappingSequence")
        philips = None
        if "PHILIPS" in vendor:
            philips = _first(pf, PHILIPS_PRIVATE_FRAME_GROUP) if pf is not None and PHILIPS_PRIVATE_FRAME_GROUP in pf else ds
        vmap = value_map(transform if transform is not None else ds, rwvm_items, philips)
        kind = image_kind_from_tokens(
            frame_type.get("FrameType") if frame_type is not None else ds.get("ImageType"),
            (frame_type.get("ComplexImageComponent") if frame_type is not None else None) or ds.get("ComplexImageComponent"),
            None, None, header["description"])
        te = _num(echo.get("EffectiveEchoTime")) if echo is not None else None
        frames.append(Frame(
            path=path, frame_index=index, sop_uid=str(ds.get("SOPInstanceUID", path)),
            instance_number=(_num(ds.get("InstanceNumber"), int) or 0) * 100000 + index,
            series_uid=header["series_uid"], kind=kind, position=position, orientation=orientation,
            pixel_spacing=spacing, rows=int(ds.Rows), cols=int(ds.Columns),
            te_ms=te if te is not None else _num(ds.get("EchoTime")),
            echo_number=_num(echo.get("EchoNumbers"), int) if echo is not None else None,
            values=vmap, value_range=stored_value_range(header["bits_stored"], header["signed"], vmap),
            header=header))
    return frames


def read_pixels(path: str) -> np.ndarray:
    """All stored pixel values of a file: (rows, cols) or (frames, rows, cols)."""
    try:
        ds = read_dataset(path)
        return _unmasked(ds, ds.pixel_array)
    except Exception as exc:  # decoder missing, truncated data, corrupt stream
        syntax = ""
        try:
            syntax = f" (transfer syntax {ds.file_meta.TransferSyntaxUID.name})"
        except Exception:
            pass
        raise NotUsable(f"pixel data cannot be read{syntax}: {type(exc).__name__}: {exc}") from None


def _unmasked(ds, pixels: np.ndarray) -> np.ndarray:
    """Uncompressed unsigned pixels as stored, bits above HighBit included. Some scanners write
    values beyond BitsStored (real Siemens 12-bit T1 with 4147); pydicom 3 masks those bits
    (4147 -> 51, a dark speck in bright fat) while pydicom 2.4 keeps them, so the same file would
    read differently beside Slicer. The stored value is kept under both."""
    bits_allocated, bits_stored = int(ds.get("BitsAllocated", 0) or 0), int(ds.get("BitsStored", 0) or 0)
    syntax = getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID")
    if (bits_allocated != 16 or not 0 < bits_stored < 16 or int(ds.get("PixelRepresentation", 0) or 0) != 0
            or "PixelData" not in ds or syntax is None or syntax.is_compressed or not syntax.is_little_endian):
        return pixels
    raw = np.frombuffer(ds.PixelData, "<u2")
    if raw.size < pixels.size:
        return pixels
    return raw[:pixels.size].reshape(pixels.shape)
