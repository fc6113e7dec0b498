"""Write image stacks as MR DICOM series: classic MR Image Storage (one file per slice and
image) or Enhanced MR Image Storage (one multi-frame file per series, geometry, echo time and
rescale in the functional groups).

A series is a list of `ImageStack`s (one 3-D block per echo or image type) on one grid.
Values are real-world values; the writer stores them as integers through each stack's
rescale slope/intercept and refuses values that do not fit. UIDs are deterministic from the
caller's entropy, so the same input writes the same files.
Conventions: ImageType value 3 says what the pixels are (M, P, W, F, FF ...); phase is
stored Siemens style (0..4095 with slope 2, intercept -4096, i.e. value*pi/4096 radians).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from ..volume import Geometry
from .atomic import atomic_path
from .dicom_compat import save_dataset

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
FLAVOURS = ("classic", "enhanced")


@dataclass(frozen=True)
class StudyInfo:
    """Patient and study attributes shared by every series of one study."""

    study_uid: str
    frame_of_reference_uid: str
    patient_name: str = "PHANTOM^THIGH"
    patient_id: str = "MYOQMRI-PHANTOM"
    patient_birth_date: str = "19700101"
    patient_sex: str = "O"
    study_date: str = "20240115"
    study_time: str = "091500"
    study_id: str = "1"
    accession_number: str = "PH0001"
    study_description: str = "MR thighs myositis protocol"
    manufacturer: str = "SIEMENS"
    model: str = "MyositisQMRI phantom"
    field_strength_t: float = 3.0
    institution: str = "MyositisQMRI synthetic"
    patient_position: str = "FFS"
    body_part: str = "THIGH"


@dataclass
class ImageStack:
    """One 3-D block (z, y, x) of real-world values with how they are labelled and stored."""

    values: np.ndarray
    image_type: tuple[str, ...]                    # e.g. ("ORIGINAL", "PRIMARY", "M", "ND")
    echo_time_ms: float | None = None
    echo_number: int | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    bits_stored: int = 16
    complex_component: str = "MAGNITUDE"           # enhanced MR: MAGNITUDE, PHASE, REAL ...
    acquisition_contrast: str = "UNKNOWN"          # enhanced MR: T1, T2, PROTON_DENSITY, ...


@dataclass
class SeriesSpec:
    """One series: its stacks, grid and acquisition attributes (DICOM keyword -> value)."""

    description: str
    number: int
    stacks: list[ImageStack]
    geometry: Geometry
    slice_thickness_mm: float | None = None
    acquisition: dict = field(default_factory=dict)
    units: str | None = None                       # for a Real World Value Mapping ("%", "ms")
    echo_pulse_sequence: str = "SPIN"              # enhanced MR: SPIN, GRADIENT, BOTH
    sources: list | None = None                    # classic: per slice, the (SOPClassUID, SOPInstanceUID)
                                                   # it was derived from (SourceImageSequence)


def uid_from(*entropy) -> str:
    """A valid, deterministic UID from any entropy (strings/numbers)."""
    return generate_uid(entropy_srcs=[str(e) for e in entropy])


def write_series(study: StudyInfo, series: SeriesSpec, folder: str | Path, flavour: str = "classic",
                 entropy: str = "") -> list[Path]:
    """Write one series into `folder` (created); returns the files written."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = uid_from(entropy, study.study_uid, "series", series.number)
    stored = [_stored_values(stack) for stack in series.stacks]
    if flavour == "classic":
        return _write_classic(study, series, series_uid, stored, folder, entropy)
    return [_write_enhanced(study, series, series_uid, stored, folder, entropy)]


def _stored_values(stack: ImageStack) -> np.ndarray:
    stored = np.round((np.asarray(stack.values, float) - stack.rescale_intercept) / stack.rescale_slope)
    low, high = (0, 2 ** stack.bits_stored - 1)
    if stored.min() < low or stored.max() > high:
        raise ValueError(f"values {stored.min()}..{stored.max()} do not fit {stack.bits_stored}-bit unsigned "
                         f"storage with slope {stack.rescale_slope}, intercept {stack.rescale_intercept}")
    return stored.astype(np.uint16)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40]


def _orientation(geometry: Geometry) -> list[float]:
    d = geometry.direction_matrix()
    return [round(float(v), 8) for v in list(d[:, 0]) + list(d[:, 1])]


def _position(geometry: Geometry, k: int) -> list[float]:
    return [round(float(v), 6) for v in geometry.index_to_physical(np.array([0.0, 0.0, float(k)]))]


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MYOSITISQMRI"
    return meta


def _common(study: StudyInfo, series: SeriesSpec, series_uid: str, sop_class: str, sop_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study.study_date
    ds.StudyTime = study.study_time
    ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = _series_time(study.study_time, series.number)
    ds.AccessionNumber = study.accession_number
    ds.Modality = "MR"
    ds.Manufacturer = study.manufacturer
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study.study_description
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = study.model
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.BodyPartExamined = study.body_part
    ds.MagneticFieldStrength = study.field_strength_t
    ds.ImagingFrequency = round(42.577478518 * study.field_strength_t, 6)
    ds.ImagedNucleus = "1H"
    ds.ProtocolName = series.description
    ds.PatientPosition = study.patient_position
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    nz, ny, nx = series.geometry.shape_zyx
    ds.Rows, ds.Columns = ny, nx
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    for keyword, value in series.acquisition.items():
        setattr(ds, keyword, value)
    return ds


def _set_bits(ds: Dataset, stacks: list[ImageStack]) -> None:
    bits = max(stack.bits_stored for stack in stacks)
    ds.BitsStored, ds.HighBit = bits, bits - 1


def _window(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [1, 99.5])
    return round(float(low + high) / 2, 3), round(float(max(high - low, 1e-3)), 3)


def _real_world_mapping(stack: ImageStack, units: str, last_stored: int) -> Dataset:
    item = Dataset()
    item.RealWorldValueFirstValueMapped = 0
    item.RealWorldValueLastValueMapped = last_stored
    item.RealWorldValueSlope = stack.rescale_slope
    item.RealWorldValueIntercept = stack.rescale_intercept
    item.LUTLabel = units[:16]
    item.LUTExplanation = f"value in {units}"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = units, "UCUM", units
    item.MeasurementUnitsCodeSequence = Sequence([code])
    return item


def _save(ds: Dataset, path: Path) -> Path:
    with atomic_path(path) as tmp:
        save_dataset(ds, tmp)
    return path


def _write_classic(study, series: SeriesSpec, series_uid, stored, folder: Path, entropy) -> list[Path]:
    paths = []
    geometry = series.geometry
    instance = 0
    for stack, pixels in zip(series.stacks, stored):
        centre, width = _window(stack.values)
        for k in range(geometry.shape_zyx[0]):
            instance += 1
            sop_uid = uid_from(entropy, series_uid, "instance", instance)
            ds = _common(study, series, series_uid, MR_IMAGE_STORAGE, sop_uid)
            ds.ImageType = list(stack.image_type)
            ds.InstanceNumber = instance
            ds.ImagePositionPatient = _position(geometry, k)
            ds.ImageOrientationPatient = _orientation(geometry)
            ds.PixelSpacing = [geometry.spacing_mm[1], geometry.spacing_mm[0]]  # row spacing (y), column (x)
            ds.SliceThickness = series.slice_thickness_mm or geometry.spacing_mm[2]
            ds.SpacingBetweenSlices = geometry.spacing_mm[2]
            ds.SliceLocation = round(float(np.dot(_position(geometry, k), geometry.direction_matrix()[:, 2])), 6)
            if stack.echo_time_ms is not None:
                ds.EchoTime = round(stack.echo_time_ms, 6)
            if stack.echo_number is not None:
                ds.EchoNumbers = stack.echo_number
            _set_bits(ds, [stack])
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = stack.rescale_intercept, stack.rescale_slope, "US"
            ds.WindowCenter, ds.WindowWidth = centre, width
            if series.units:
                ds.RealWorldValueMappingSequence = Sequence([_real_world_mapping(stack, series.units,
                                                                                 2 ** stack.bits_stored - 1)])
            if series.sources:
                ds.SourceImageSequence = Sequence([_source_item(*series.sources[k])])
            ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
            paths.append(_save(ds, folder / f"IM{instance:05d}.dcm"))
    return paths


def _source_item(sop_class: str, sop_uid: str) -> Dataset:
    """A SourceImageSequence item: the image this slice was derived from (DCM 121322,
    "Source image for image processing operation")."""
    purpose = _item(CodeValue="121322", CodingSchemeDesignator="DCM",
                    CodeMeaning="Source image for image processing operation")
    return _item(ReferencedSOPClassUID=sop_class, ReferencedSOPInstanceUID=sop_uid,
                 PurposeOfReferenceCodeSequence=Sequence([purpose]))


def _item(**attributes) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _write_enhanced(study, series: SeriesSpec, series_uid, stored, folder: Path, entropy) -> Path:
    geometry = series.geometry
    nz = geometry.shape_zyx[0]
    sop_uid = uid_from(entropy, series_uid, "instance", 1)
    ds = _common(study, series, series_uid, ENHANCED_MR_IMAGE_STORAGE, sop_uid)
    for keyword in ("RepetitionTime", "FlipAngle", "EchoTrainLength", "EchoTime", "ScanningSequence",
                    "SequenceVariant", "ScanOptions", "SequenceName", "ImagingFrequency", "ImagedNucleus",
                    "AcquisitionDate", "AcquisitionTime", "PixelBandwidth", "NumberOfAverages"):
        if keyword in ds:
            del ds[keyword]
    first = series.stacks[0]
    components = {s.complex_component for s in series.stacks}
    contrasts = {s.acquisition_contrast for s in series.stacks}
    ds.ImageType = list(_enhanced_type(first.image_type))
    ds.InstanceNumber = 1
    ds.AcquisitionDateTime = study.study_date + ds.ContentTime
    ds.PixelPresentation, ds.VolumetricProperties, ds.VolumeBasedCalculationTechnique = "MONOCHROME", "VOLUME", "NONE"
    ds.ComplexImageComponent = components.pop() if len(components) == 1 else "MIXED"
    ds.AcquisitionContrast = contrasts.pop() if len(contrasts) == 1 else "MIXED"
    ds.ContentQualification = "PRODUCT"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.EchoPulseSequence = series.echo_pulse_sequence
    ds.MultipleSpinEcho = "YES" if series.echo_pulse_sequence == "SPIN" and len(series.stacks) > 1 else "NO"
    ds.PhaseContrast, ds.SteadyStatePulseSequence, ds.EchoPlanarPulseSequence = "NO", "NONE", "NO"
    ds.SaturationRecovery, ds.SpectrallySelectedSuppression = "NO", "NONE"
    ds.GeometryOfKSpaceTraversal, ds.SegmentedKSpaceTraversal = "RECTILINEAR", "SINGLE"
    ds.NumberOfFrames = nz * len(series.stacks)
    _set_bits(ds, series.stacks)
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"

    organisation_uid = uid_from(entropy, series_uid, "dimensions")
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=organisation_uid)])
    ds.DimensionIndexSequence = Sequence([
        _item(DimensionOrganizationUID=organisation_uid, DimensionIndexPointer=Tag("StackID"),
              FunctionalGroupPointer=Tag("FrameContentSequence"), DimensionDescriptionLabel="Stack ID"),
        _item(DimensionOrganizationUID=organisation_uid, DimensionIndexPointer=Tag("InStackPositionNumber"),
              FunctionalGroupPointer=Tag("FrameContentSequence"), DimensionDescriptionLabel="In-Stack Position"),
        _item(DimensionOrganizationUID=organisation_uid, DimensionIndexPointer=Tag("EffectiveEchoTime"),
              FunctionalGroupPointer=Tag("MREchoSequence"), DimensionDescriptionLabel="Effective Echo Time"),
    ])

    acquisition = series.acquisition
    timing = _item(RepetitionTime=acquisition.get("RepetitionTime", 0), FlipAngle=acquisition.get("FlipAngle", 90),
                   EchoTrainLength=acquisition.get("EchoTrainLength", len(series.stacks)),
                   RFEchoTrainLength=len(series.stacks) if series.echo_pulse_sequence == "SPIN" else 0,
                   GradientEchoTrainLength=len(series.stacks) if series.echo_pulse_sequence == "GRADIENT" else 0)
    shared = _item(
        PixelMeasuresSequence=Sequence([_item(
            PixelSpacing=[geometry.spacing_mm[1], geometry.spacing_mm[0]],
            SliceThickness=series.slice_thickness_mm or geometry.spacing_mm[2],
            SpacingBetweenSlices=geometry.spacing_mm[2])]),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=_orientation(geometry))]),
        MRTimingAndRelatedParametersSequence=Sequence([timing]),
        MRImagingModifierSequence=Sequence([_item(PixelBandwidth=acquisition.get("PixelBandwidth", 300),
                                                  MagnetizationTransfer="NONE", BloodSignalNulling="NO",
                                                  Tagging="NONE",
                                                  TransmitterFrequency=round(42.577478518 * study.field_strength_t, 6))]),
        MRModifierSequence=Sequence([_item(InversionRecovery="NO", FlowCompensation="NONE", T2Preparation="NO",
                                           SpectrallySelectedExcitation="NONE", SpatialPresaturation="NONE",
                                           PartialFourier="NO", ParallelAcquisition="NO")]),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])

    frames = []
    for e, (stack, pixels) in enumerate(zip(series.stacks, stored), start=1):
        centre, width = _window(stack.values)
        for k in range(nz):
            frame = _item(
                FrameContentSequence=Sequence([_item(StackID="1", InStackPositionNumber=k + 1,
                                                     FrameAcquisitionNumber=e,
                                                     DimensionIndexValues=[1, k + 1, e])]),
                PlanePositionSequence=Sequence([_item(ImagePositionPatient=_position(geometry, k))]),
                PixelValueTransformationSequence=Sequence([_item(RescaleIntercept=stack.rescale_intercept,
                                                                 RescaleSlope=stack.rescale_slope,
                                                                 RescaleType="US")]),
                FrameVOILUTSequence=Sequence([_item(WindowCenter=centre, WindowWidth=width)]),
                MRImageFrameTypeSequence=Sequence([_item(
                    FrameType=list(_enhanced_type(stack.image_type)), PixelPresentation="MONOCHROME",
                    VolumetricProperties="VOLUME", VolumeBasedCalculationTechnique="NONE",
                    ComplexImageComponent=stack.complex_component,
                    AcquisitionContrast=stack.acquisition_contrast)]),
            )
            if stack.echo_time_ms is not None:
                frame.MREchoSequence = Sequence([_item(EffectiveEchoTime=float(stack.echo_time_ms),
                                                       **({"EchoNumbers": stack.echo_number}
                                                          if stack.echo_number is not None else {}))])
            if series.units:
                frame.RealWorldValueMappingSequence = Sequence([_real_world_mapping(
                    stack, series.units, 2 ** stack.bits_stored - 1)])
            frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.ascontiguousarray(np.concatenate(stored, axis=0)).tobytes()
    return _save(ds, folder / "enhanced.dcm")


def _enhanced_type(image_type: tuple[str, ...]) -> tuple[str, ...]:
    """Enhanced objects carry exactly four Image/Frame Type values."""
    values = list(image_type[:4]) + ["NONE"] * max(0, 4 - len(image_type))
    return tuple(values)


def _series_time(study_time: str, series_number: int) -> str:
    """HHMMSS a minute per series number after the study time (a valid DICOM TM)."""
    hours, minutes = int(study_time[:2]), int(study_time[2:4])
    total = (hours * 60 + minutes + int(series_number)) % (24 * 60)
    return f"{total // 60:02d}{total % 60:02d}00"
