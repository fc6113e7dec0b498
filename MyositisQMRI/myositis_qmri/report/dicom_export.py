"""DICOM outputs of a report: SEG of the muscles, a TID 1500 SR (highdicom) with per-muscle
measurements and the two grades, and the T2/FF maps as MR derived series with Real World
Value Mapping (true units in ms and %).

SEG and SR reference the series the segmentation was drawn on; plane positions come from the
label map's own geometry, so single-frame and enhanced multi-frame sources work alike. Map
series copy patient and study from their source series and reference it.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from .. import __version__
from ..errors import InputError
from ..io.atomic import atomic_path
from ..segmentation.labels import CATEGORY_CODE, LABEL_BY_VALUE, SIDE_CODES
from ..volume import Volume

MANUFACTURER = "MyositisQMRI"
# Local codes for quantities and grades that have no standard code in DCM/SCT; the scheme is
# declared in each SR's CodingSchemeIdentificationSequence.
LOCAL_SCHEME = "99MYOQMRI"
WATER_T2 = hd.sr.CodedConcept("WT2", LOCAL_SCHEME, "Muscle water T2")
FAT_FRACTION = hd.sr.CodedConcept("FF", LOCAL_SCHEME, "Fat fraction")
EDEMA_GRADE = hd.sr.CodedConcept("EDEMA_GRADE", LOCAL_SCHEME, "Muscle edema grade")
FAT_GRADE = hd.sr.CodedConcept("FAT_GRADE", LOCAL_SCHEME, "Fatty replacement grade")
SKELETAL_MUSCLE = hd.sr.CodedConcept("127954009", "SCT", "Skeletal muscle")
MS = hd.sr.CodedConcept("ms", "UCUM", "millisecond")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "percent")
ML = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
MAP_SPECS = {  # kind -> (description, ImageType value 3, slope, UCUM unit, LUT label)
    "t2": ("Water T2 map (ms)", "T2_MAP", 0.1, ("ms", "millisecond"), "WATER_T2"),
    "ff": ("Fat fraction map (%)", "FF_MAP", 0.01, ("%", "percent"), "FAT_FRACTION"),
}


def _code(code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _grade_code(kind: str, grade: int, label: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(f"{kind.upper()}{grade}", LOCAL_SCHEME, f"{kind} grade {grade}: {label}"[:64])


def read_source_datasets(volume: Volume) -> list[Dataset]:
    """Headers of the DICOM instances a volume was read from (first echo), in slice order."""
    files = volume.metadata.get("source_files") or []
    wanted = (volume.metadata.get("source_sop_instance_uids") or [[]])[0]
    by_uid = {}
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a non-DICOM file among the sources just isn't a source
            continue
        by_uid[ds.SOPInstanceUID] = ds
    ordered, seen = [], set()
    for uid in wanted:
        if uid in by_uid and uid not in seen:
            ordered.append(by_uid[uid])
            seen.add(uid)
    return ordered


def _plane_info(volume: Volume):
    geometry = volume.geometry
    direction = geometry.direction_matrix()
    orientation = hd.PlaneOrientationSequence("PATIENT", [*direction[:, 0], *direction[:, 1]])
    spacing = volume.spacing_mm
    measures = hd.PixelMeasuresSequence(pixel_spacing=[spacing[1], spacing[0]], slice_thickness=spacing[2],
                                        spacing_between_slices=spacing[2])
    positions = [hd.PlanePositionSequence("PATIENT", list(geometry.index_to_physical(np.array([0.0, 0.0, z]))))
                 for z in range(geometry.shape_zyx[0])]
    return orientation, measures, positions


def _check_source(volume: Volume, sources: list[Dataset]) -> None:
    if not sources:
        raise InputError(None, "no readable DICOM source images for the segmentation")
    first = sources[0]
    ny, nx = volume.array.shape[1:]
    if (int(first.Rows), int(first.Columns)) != (ny, nx):
        raise InputError(first.get("SeriesDescription", "source"), f"source images are {first.Rows}x{first.Columns}, "
                                                                    f"the label map {ny}x{nx}")


def write_seg(labels: Volume, sources: list[Dataset], path: Path) -> Dataset:
    """DICOM SEG (labelmap-style BINARY, one segment per label present)."""
    _check_source(labels, sources)
    array = np.rint(labels.array).astype(np.uint8)
    present = [v for v in sorted(LABEL_BY_VALUE) if np.any(array == v)]
    if not present:
        raise InputError(None, "the segmentation is empty; no DICOM SEG written")
    # Segment numbers must run 1..N: renumber the label values that are present.
    renumbered = np.zeros(array.shape + (len(present),), dtype=bool)
    algorithm = hd.AlgorithmIdentificationSequence(name="MyositisQMRI thigh muscles", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for number, value in enumerate(present, start=1):
        label = LABEL_BY_VALUE[value]
        renumbered[..., number - 1] = array == value
        property_type = _code(label.muscle.code) if label.muscle.code else SKELETAL_MUSCLE
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label.name, segmented_property_category=_code(CATEGORY_CODE),
            segmented_property_type=property_type, algorithm_type="AUTOMATIC", algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id=label.key, anatomic_regions=[_code(SIDE_CODES[label.side])],
            display_color=hd.color.CIELabColor(*_rgb_to_lab(label.colour_rgb))))
    orientation, measures, positions = _plane_info(labels)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=renumbered, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9001,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name="myositis-qmri", software_versions=__version__, device_serial_number="0",
        content_description="Thigh muscles", content_label="MUSCLES", plane_orientation=orientation,
        pixel_measures=measures, plane_positions=positions, omit_empty_frames=False)
    seg.SeriesDescription = "Thigh muscles (MyositisQMRI)"
    _save(seg, path)
    return seg


def _rgb_to_lab(rgb) -> tuple[float, float, float]:
    from skimage.color import rgb2lab
    lab = rgb2lab(np.asarray(rgb, float).reshape(1, 1, 3) / 255.0)[0, 0]
    return float(np.clip(lab[0], 0, 100)), float(np.clip(lab[1], -127, 127)), float(np.clip(lab[2], -127, 127))


def write_sr(report: dict, seg: Dataset, sources: list[Dataset], path: Path) -> Dataset:
    """TID 1500 measurement report: per muscle and side, volume, T2 and FF statistics, grades."""
    numbers = {item.SegmentLabel: item.SegmentNumber for item in seg.SegmentSequence}
    source_series = hd.sr.SourceSeriesForSegmentation(sources[0].SeriesInstanceUID)
    t2_stat = report["scoring"]["edema"].get("statistic", "median")
    groups = []
    for row in report["muscles"]:
        label = LABEL_BY_VALUE[row["label_value"]]
        if row["empty"] or label.name not in numbers:
            continue
        measurements = [hd.sr.Measurement(name=codes.SCT.Volume, value=row["volume_ml"], unit=ML)]
        for kind, name, unit in (("t2", WATER_T2, MS), ("ff", FAT_FRACTION, PERCENT)):
            stats = row.get(kind) or {}
            for stat, derivation in (("mean", codes.SCT.Mean), ("median", codes.SCT.Median),
                                     ("sd", codes.SCT.StandardDeviation)):
                if stats.get(stat) is not None:
                    measurements.append(hd.sr.Measurement(name=name, value=stats[stat], unit=unit, derivation=derivation))
        evaluations = []
        for kind, concept in (("edema", EDEMA_GRADE), ("fat", FAT_GRADE)):
            grade = row["grades"][kind]
            if grade.get("grade") is not None:
                evaluations.append(hd.sr.QualitativeEvaluation(concept, _grade_code(kind, grade["grade"], grade["label"])))
        finding_site = hd.sr.FindingSite(
            anatomic_location=_code(label.muscle.code) if label.muscle.code else SKELETAL_MUSCLE,
            laterality=_code(SIDE_CODES[label.side]))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label.key),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                segment_number=numbers[label.name], source_series=source_series),
            finding_type=SKELETAL_MUSCLE, finding_sites=[finding_site], measurements=measurements,
            qualitative_evaluations=evaluations))
    context = hd.sr.ObservationContext(
        observer_person_context=None,
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=hd.UID(), name="myositis-qmri", manufacturer_name=MANUFACTURER, model_name=__version__)))
    measurement_report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=hd.sr.CodedConcept("241620005", "SCT", "MRI of thigh"),
        imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg], content=measurement_report, series_instance_uid=hd.UID(), series_number=9002,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        record_evidence=True)
    sr.SeriesDescription = "Thigh muscle qMRI report (MyositisQMRI)"
    scheme = Dataset()
    scheme.CodingSchemeDesignator = LOCAL_SCHEME
    scheme.CodingSchemeName = "MyositisQMRI local codes"
    scheme.CodingSchemeResponsibleOrganization = "MyositisQMRI"
    sr.CodingSchemeIdentificationSequence = Sequence([scheme])
    _save(sr, path)
    return sr


def write_map_series(volume: Volume, kind: str, reference: list[Dataset], folder: Path,
                     template: Dataset | None = None) -> list[Path]:
    """A map as an MR derived series: int16 pixels, RescaleSlope and a Real World Value Mapping in
    true units, one instance per slice. Patient/study come from `template` (default: the first
    `reference` instance); `reference`, the map's own source series, is referenced when given."""
    description, image_type, slope, (unit_code, unit_meaning), lut_label = MAP_SPECS[kind]
    template = template if template is not None else (reference[0] if reference else None)
    values = np.nan_to_num(volume.array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    stored = np.clip(np.rint(values / slope), -32768, 32767).astype(np.int16)
    geometry = volume.geometry
    direction = geometry.direction_matrix()
    series_uid, now = generate_uid(), _dt.datetime.now()
    frame_of_reference = (template.get("FrameOfReferenceUID") if template is not None else None) or \
        volume.metadata.get("frame_of_reference_uid") or generate_uid()
    study_uid = (template.get("StudyInstanceUID") if template is not None else None) or \
        volume.metadata.get("study_uid") or generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for z in range(stored.shape[0]):
        ds = Dataset()
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                        "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                        "StudyDescription", "MagneticFieldStrength"):
            if template is not None and keyword in template:
                setattr(ds, keyword, template.data_element(keyword).value)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "StudyID", "AccessionNumber", "ReferringPhysicianName"):  # Type 2: present, maybe empty
            if keyword not in ds:
                setattr(ds, keyword, "")
        ds.StudyInstanceUID = study_uid
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, 9010 + list(MAP_SPECS).index(kind), z + 1
        ds.Modality, ds.Manufacturer, ds.SoftwareVersions = "MR", MANUFACTURER, __version__
        ds.SeriesDescription = description
        ds.ImageType = ["DERIVED", "PRIMARY", image_type]
        ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference, ""
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = None, None, None
        ds.ImagePositionPatient = [float(v) for v in geometry.index_to_physical(np.array([0.0, 0.0, z]))]
        ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [volume.spacing_mm[1], volume.spacing_mm[0]]
        ds.SliceThickness = volume.spacing_mm[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, 0.0, unit_code.upper() if kind == "t2" else "US"
        ds.WindowCenter, ds.WindowWidth = (40 / slope, 40 / slope) if kind == "t2" else (50 / slope, 100 / slope)
        mapping = Dataset()
        mapping.RealWorldValueFirstValueMapped, mapping.RealWorldValueLastValueMapped = -32768, 32767
        mapping.RealWorldValueSlope, mapping.RealWorldValueIntercept = slope, 0.0
        mapping.LUTLabel, mapping.LUTExplanation = lut_label, description
        unit = Dataset()
        unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = unit_code, "UCUM", unit_meaning
        mapping.MeasurementUnitsCodeSequence = Sequence([unit])
        ds.RealWorldValueMappingSequence = Sequence([mapping])
        if reference:
            ref = Dataset()
            ref.SeriesInstanceUID = reference[0].SeriesInstanceUID
            ds.ReferencedSeriesSequence = Sequence([ref])
            source = Dataset()
            source.ReferencedSOPClassUID = reference[min(z, len(reference) - 1)].SOPClassUID
            source.ReferencedSOPInstanceUID = reference[min(z, len(reference) - 1)].SOPInstanceUID
            ds.SourceImageSequence = Sequence([source])
        ds.PixelData = stored[z].tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = folder / f"{kind}_{z + 1:04d}.dcm"
        _save(ds, path)
        paths.append(path)
    return paths


def _save(ds: Dataset, path: Path) -> None:
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def write_dicom_outputs(report: dict, inputs, out_dir: Path) -> dict:
    """seg.dcm, report_sr.dcm and the map series under dicom/; returns {name: path}."""
    outputs: dict[str, str] = {}
    sources = inputs.source_dicom.get("segmentation") or []
    seg_path, sr_path = out_dir / "seg.dcm", out_dir / "report_sr.dcm"
    seg = write_seg(inputs.labels, sources, seg_path)
    outputs["dicom_seg"] = str(seg_path)
    write_sr(report, seg, sources, sr_path)
    outputs["dicom_sr"] = str(sr_path)
    for kind, volume in (("t2", inputs.t2), ("ff", inputs.ff)):
        if volume is None:
            continue
        reference = inputs.source_dicom.get(kind) or []
        if reference and len(reference) != volume.array.shape[0]:
            reference = []  # not slice-for-slice: reference nothing rather than the wrong images
        folder = out_dir / "dicom" / f"{kind}_map"
        write_map_series(volume, kind, reference, folder, template=(reference or sources)[0])
        outputs[f"dicom_{kind}_map"] = str(folder)
    return outputs
