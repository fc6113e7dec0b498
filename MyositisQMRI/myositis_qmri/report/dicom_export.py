"""DICOM outputs of a report: SEG of the muscles, a TID 1500 SR (highdicom) with per-muscle
measurements and the two grades, and the T2/FF maps twice: as MR derived series with Real World
Value Mapping (true units in ms and %, for viewers that show only images) and as Parametric
Map objects (float values, the same mapping, references to the source images).

SEG and SR reference the series the segmentation was drawn on; plane positions come from the
label map's own geometry, so single-frame and enhanced multi-frame sources work alike. Map
series copy patient and study from their source series and reference it.
"""
from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from .. import __version__
from ..errors import InputError
from ..io.atomic import atomic_path
from ..io.dicom_compat import read_dataset, save_dataset, segment_description
from ..io.dicom_write import ImageStack, SeriesSpec, StudyInfo, write_series
from ..segmentation.labels import (CATEGORY_CODE, LABEL_BY_VALUE, PRIVATE_SCHEME, PRIVATE_SCHEME_NAME, REGION_CODE,
                                   SIDE_CODES, type_code)
from ..volume import Volume
from .scoring import edema_statistic

MANUFACTURER = "MyositisQMRI"
# Local codes for quantities, grades and the muscles that have no verified SNOMED CT code; the
# scheme (the label schema's private one) is declared in CodingSchemeIdentificationSequence.
LOCAL_SCHEME = PRIVATE_SCHEME
WATER_T2 = hd.sr.CodedConcept("WT2", LOCAL_SCHEME, "Muscle water T2")
FAT_FRACTION = hd.sr.CodedConcept("FF", LOCAL_SCHEME, "Fat fraction")
EDEMA_GRADE = hd.sr.CodedConcept("EDEMA_GRADE", LOCAL_SCHEME, "Muscle edema grade")
FAT_GRADE = hd.sr.CodedConcept("FAT_GRADE", LOCAL_SCHEME, "Fatty replacement grade")
SKELETAL_MUSCLE = hd.sr.CodedConcept("127954009", "SCT", "Skeletal muscle")
MS = hd.sr.CodedConcept("ms", "UCUM", "millisecond")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "percent")
ML = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
# CID 3488 statistics, spelt out: pydicom 2.4's `codes.SCT.Median` is ambiguous (two codes).
DERIVATIONS = (("mean", hd.sr.CodedConcept("373098007", "SCT", "Mean")),
               ("median", hd.sr.CodedConcept("373099004", "SCT", "Median")),
               ("sd", hd.sr.CodedConcept("386136009", "SCT", "Standard Deviation")))
MAP_SPECS = {  # kind -> (series description, ImageType value 3, rescale slope, UCUM unit, series number)
    "t2": ("Water T2 map (ms)", "T2_MAP", 0.1, "ms", 50),
    "ff": ("Fat fraction map (%)", "FF", 0.01, "%", 51),
}


def _code(code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _with_modifier(concept: hd.sr.CodedConcept, keyword: str, modifier) -> hd.sr.CodedConcept:
    """The concept with a modifier sequence nested in its item, where DICOM puts a segment's
    type modifier (0062,0011) and anatomic region modifier (0008,2220); highdicom has no argument."""
    setattr(concept, keyword, Sequence([_code(modifier)]))
    return concept


def _local_scheme() -> Sequence:
    scheme = Dataset()
    scheme.CodingSchemeDesignator = LOCAL_SCHEME
    scheme.CodingSchemeName = PRIVATE_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "MyositisQMRI"
    return Sequence([scheme])


def _grade_code(kind: str, grade: int, label: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(f"{kind.upper()}{grade}", LOCAL_SCHEME, f"{kind} grade {grade}: {label}"[:64])


def read_source_datasets(volume: Volume) -> list[Dataset]:
    """Headers of the DICOM instances a volume was read from (first echo), in slice order."""
    files = volume.metadata.get("source_files") or []
    wanted = (volume.metadata.get("source_sop_instance_uids") or [[]])[0]
    by_uid = {}
    for path in files:
        try:
            ds = read_dataset(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a non-DICOM file among the sources just isn't a source
            continue
        by_uid[ds.SOPInstanceUID] = ds
    ordered, seen = [], set()
    for uid in wanted:
        if uid in by_uid and uid not in seen:
            ordered.append(by_uid[uid])
            seen.add(uid)
    return ordered


# Type 2 attributes (present, may be empty) of the Patient, General Study and General Series
# modules that highdicom copies from the source images into SEG and SR. Anonymised exports
# often drop them; highdicom then fails with AttributeError after every map was computed.
ABSENT_OK = {"PatientName": "PN", "PatientID": "LO", "PatientBirthDate": "DA", "PatientSex": "CS",
             "StudyDate": "DA", "StudyTime": "TM", "ReferringPhysicianName": "PN", "StudyID": "SH",
             "AccessionNumber": "SH", "SeriesNumber": "IS", "Laterality": "CS", "PositionReferenceIndicator": "LO"}


def with_absent_attributes(sources: list[Dataset]) -> list[Dataset]:
    """Copies of the source headers with every absent type 2 attribute present and empty, for
    highdicom; the datasets (and files) given are never changed."""
    copies = []
    for ds in sources:
        clone = copy.deepcopy(ds)
        for keyword, vr in ABSENT_OK.items():
            if keyword not in clone:
                clone.add_new(keyword, vr, None)
        copies.append(clone)
    return copies


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
    sources = with_absent_attributes(sources)
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
        # Coded as Slicer's terminology is: the muscle as property type with the side as its
        # modifier, and the thigh, of the same side, as anatomic region.
        side = SIDE_CODES[label.side]
        description = segment_description(
            hd, _rgb_to_lab(label.colour_rgb), segment_number=number, segment_label=label.name, segmented_property_category=_code(CATEGORY_CODE),
            segmented_property_type=_code(type_code(label.muscle)), algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=label.key,
            anatomic_regions=[_code(REGION_CODE)])
        _with_modifier(description.SegmentedPropertyTypeCodeSequence[0], "SegmentedPropertyTypeModifierCodeSequence",
                       side)
        _with_modifier(description.AnatomicRegionSequence[0], "AnatomicRegionModifierSequence", side)
        descriptions.append(description)
    orientation, measures, positions = _plane_info(labels)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=renumbered, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9001,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name="myositis-qmri", software_versions=__version__, device_serial_number="0",
        content_description="Thigh muscles", content_label="MUSCLES", plane_orientation=orientation,
        pixel_measures=measures, plane_positions=positions, omit_empty_frames=False)
    seg.SeriesDescription = "Thigh muscles (MyositisQMRI)"
    if any(LABEL_BY_VALUE[v].muscle.code is None for v in present):
        seg.CodingSchemeIdentificationSequence = _local_scheme()
    _save(seg, path)
    return seg


def _rgb_to_lab(rgb) -> tuple[float, float, float]:
    from skimage.color import rgb2lab
    lab = rgb2lab(np.asarray(rgb, float).reshape(1, 1, 3) / 255.0)[0, 0]
    return float(np.clip(lab[0], 0, 100)), float(np.clip(lab[1], -127, 127)), float(np.clip(lab[2], -127, 127))


def write_sr(report: dict, seg: Dataset, sources: list[Dataset], path: Path) -> Dataset:
    """TID 1500 measurement report: per muscle and side, volume, T2 and FF statistics, grades."""
    numbers = {item.SegmentLabel: item.SegmentNumber for item in seg.SegmentSequence}
    sources = with_absent_attributes(sources)
    source_series = hd.sr.SourceSeriesForSegmentation(sources[0].SeriesInstanceUID)
    t2_stat = edema_statistic(report["scoring"])
    groups = []
    for row in report["muscles"]:
        label = LABEL_BY_VALUE[row["label_value"]]
        if row["empty"] or label.name not in numbers:
            continue
        measurements = [hd.sr.Measurement(name=codes.SCT.Volume, value=row["volume_ml"], unit=ML)]
        for kind, name, unit in (("t2", WATER_T2, MS), ("ff", FAT_FRACTION, PERCENT)):
            stats = row.get(kind) or {}
            for stat, derivation in DERIVATIONS:
                if stats.get(stat) is not None:
                    measurements.append(hd.sr.Measurement(name=name, value=stats[stat], unit=unit, derivation=derivation))
        evaluations = []
        for kind, concept in (("edema", EDEMA_GRADE), ("fat", FAT_GRADE)):
            grade = row["grades"][kind]
            if grade.get("grade") is not None:
                evaluations.append(hd.sr.QualitativeEvaluation(concept, _grade_code(kind, grade["grade"], grade["label"])))
        finding_site = hd.sr.FindingSite(
            anatomic_location=_code(type_code(label.muscle)),
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
    sr.CodingSchemeIdentificationSequence = _local_scheme()
    _save(sr, path)
    return sr


def _study_info(template: Dataset | None, volume: Volume) -> StudyInfo:
    """Patient and study of the source series, for derived series written into the same study."""
    def get(keyword, default=""):
        value = template.get(keyword) if template is not None else None
        return default if value is None else str(value)

    return StudyInfo(
        study_uid=get("StudyInstanceUID") or volume.metadata.get("study_uid") or generate_uid(),
        frame_of_reference_uid=get("FrameOfReferenceUID") or volume.metadata.get("frame_of_reference_uid")
        or generate_uid(),
        patient_name=get("PatientName"), patient_id=get("PatientID"), patient_birth_date=get("PatientBirthDate"),
        patient_sex=get("PatientSex"), study_date=get("StudyDate"), study_time=get("StudyTime", "000000") or "000000",
        study_id=get("StudyID"), accession_number=get("AccessionNumber"), study_description=get("StudyDescription"),
        manufacturer=MANUFACTURER, model=f"myositis-qmri {__version__}",
        field_strength_t=float(get("MagneticFieldStrength", "0") or 0), institution=get("InstitutionName"),
        patient_position=get("PatientPosition", "FFS") or "FFS", body_part=get("BodyPartExamined", "THIGH") or "THIGH")


def write_map_series(volume: Volume, kind: str, folder: Path, template: Dataset | None = None,
                     sources: list[Dataset] | None = None) -> list[Path]:
    """A map as an MR derived series in true units (RescaleSlope and Real World Value Mapping, UCUM),
    through the project's DICOM writer; non-finite voxels are stored as 0 and negative ones clipped.
    With one source image per slice, each slice names its source in SourceImageSequence."""
    description, image_type, slope, units, number = MAP_SPECS[kind]
    values = np.nan_to_num(volume.array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    values = np.clip(values, 0.0, (2 ** 16 - 1) * slope)
    stack = ImageStack(values, ("DERIVED", "PRIMARY", image_type), rescale_slope=slope)
    references = None
    if sources and len(sources) == volume.array.shape[0]:
        references = [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in sources]
    spec = SeriesSpec(description, number, [stack], volume.geometry, units=units, sources=references,
                      acquisition={"SoftwareVersions": __version__, "DerivationDescription": description,
                                   **_mr_image_attributes(template)})
    return write_series(_study_info(template, volume), spec, folder, "classic", entropy=generate_uid())


def _mr_image_attributes(template: Dataset | None) -> dict:
    """The MR Image module's type 1 and 2 acquisition attributes, from the source series where it
    has them (type 1: research mode "RM" / "NONE" otherwise; type 2: empty). Laterality is type
    2C for paired body parts: empty, as both thighs are in the image."""
    def source(keyword, default):
        value = template.get(keyword) if template is not None else None
        return default if value in (None, "") else value
    return {"ScanningSequence": source("ScanningSequence", "RM"), "SequenceVariant": source("SequenceVariant", "NONE"),
            "ScanOptions": source("ScanOptions", None), "MRAcquisitionType": source("MRAcquisitionType", None),
            "RepetitionTime": source("RepetitionTime", None), "EchoTime": None, "EchoTrainLength": None,
            "Laterality": None}


# kind -> (content label, LUT label, quantity meaning, UCUM unit, its meaning, series number)
PARAMETRIC_SPECS = {
    "t2": ("WATER_T2", "T2", "Muscle water T2 (ms)", "ms", "millisecond", 60),
    "ff": ("FAT_FRACTION", "FF", "Fat fraction (%)", "%", "percent", 61),
}


def write_parametric_map(volume: Volume, kind: str, sources: list[Dataset], path: Path) -> Dataset:
    """The map as a DICOM Parametric Map (highdicom): float values in true units, a real-world
    value mapping in UCUM (ms or %), references to the source images. Non-finite voxels are 0."""
    _check_source(volume, sources)
    label, lut_label, meaning, unit, unit_meaning, number = PARAMETRIC_SPECS[kind]
    values = np.nan_to_num(volume.array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=lut_label, lut_explanation=meaning, unit=hd.sr.CodedConcept(unit, "UCUM", unit_meaning),
        value_range=(low, high if high > low else low + 1.0), slope=1.0, intercept=0.0)
    centre, width = _window(values)
    orientation, measures, positions = _plane_info(volume)
    pmap = hd.pm.ParametricMap(
        source_images=with_absent_attributes(sources), pixel_array=values, series_instance_uid=hd.UID(),
        series_number=number, sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name="myositis-qmri", software_versions=__version__, device_serial_number="0",
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        window_center=centre, window_width=width, content_label=label, content_description=meaning,
        pixel_measures=measures, plane_orientation=orientation, plane_positions=positions)
    pmap.SeriesDescription = f"{meaning} parametric map (MyositisQMRI)"
    pmap.Laterality = None  # type 2C for paired body parts: both thighs are in the map
    _save(pmap, path)
    return pmap


def _window(values: np.ndarray) -> tuple[float, float]:
    inside = values[values != 0]
    low, high = np.percentile(inside, [1, 99.5]) if inside.size else (0.0, 1.0)
    return float(low + high) / 2, float(max(high - low, 1e-3))


def _save(ds: Dataset, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_dataset(ds, tmp)


def _sr_needs_seg():
    raise InputError(None, "not written: the SR references the DICOM SEG, which failed")


def write_dicom_outputs(report: dict, inputs, out_dir: Path, attempt=None) -> dict:
    """seg.dcm, report_sr.dcm and the map series under dicom/; returns {name: path}.

    `attempt(name, write)` runs each export on its own and returns None when it failed
    (report.build records the failure); without it a failure raises. The SR needs the SEG.
    """
    attempt = attempt or (lambda name, write: write())
    outputs: dict[str, str] = {}
    sources = inputs.source_dicom.get("segmentation") or []
    seg_path, sr_path = out_dir / "seg.dcm", out_dir / "report_sr.dcm"
    seg = attempt("dicom_seg", lambda: write_seg(inputs.labels, sources, seg_path))
    if seg is not None:
        outputs["dicom_seg"] = str(seg_path)
        if attempt("dicom_sr", lambda: write_sr(report, seg, sources, sr_path)) is not None:
            outputs["dicom_sr"] = str(sr_path)
    else:
        attempt("dicom_sr", _sr_needs_seg)
    for kind, volume in (("t2", inputs.t2), ("ff", inputs.ff)):
        if volume is None:
            continue
        folder = out_dir / "dicom" / f"{kind}_map"
        pm_path = out_dir / "dicom" / f"{kind}_parametric_map.dcm"
        map_sources = lambda kind=kind: inputs.source_dicom.get(kind) or sources
        if attempt(f"dicom_{kind}_map", lambda kind=kind, volume=volume, folder=folder: write_map_series(
                volume, kind, folder, map_sources()[0], map_sources())) is not None:
            outputs[f"dicom_{kind}_map"] = str(folder)
        if attempt(f"dicom_{kind}_parametric_map", lambda kind=kind, volume=volume, pm_path=pm_path:
                   write_parametric_map(volume, kind, map_sources(), pm_path)) is not None:
            outputs[f"dicom_{kind}_parametric_map"] = str(pm_path)
    return outputs
