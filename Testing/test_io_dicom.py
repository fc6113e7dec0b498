"""DICOM reader, discovery and loaders: real enhanced MESE, real Dixon NIfTIs, synthetic vendor cases.

Synthetic DICOM is written here with pydicom (classic and enhanced MR) so every quirk and
every bad-input case has a file whose ground truth the test knows.
"""
from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from myositis_qmri.errors import InputError
from myositis_qmri.io.dicom_compat import save_dataset
from myositis_qmri.io import ImageKind, SeriesClass
from myositis_qmri.io.dicom import read_dicom
from myositis_qmri.io.dicom_values import phase_to_radians
from myositis_qmri.io.discover import discover, pair_magnitude_phase, te_from_name
from myositis_qmri.io.load import load_echo_series, load_magnitude_phase, load_volume

pytestmark = pytest.mark.dicom

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
OBLIQUE_IOP = [1.0, 0.0, 0.0, 0.0, math.cos(0.2), math.sin(0.2)]


def _base(sop_class: str, series_uid: str, rows: int, cols: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyInstanceUID = "MR", "P1", "1.2.3.4"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.FrameOfReferenceUID = series_uid, 1, "1.2.3.4.5"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.MagneticFieldStrength = 3
    return ds


def write_classic(path: Path, pixels: np.ndarray, position, te_ms=None, series_uid="1.2.9", echo_number=None,
                  image_type=("ORIGINAL", "PRIMARY", "M", "ND"), orientation=OBLIQUE_IOP, spacing=(0.8, 0.6),
                  instance=1, **tags) -> Path:
    """One classic MR image; `tags` are extra attributes (keyword=value or (group, elem)=(VR, value))."""
    rows, cols = pixels.shape
    ds = _base(MR_IMAGE, series_uid, rows, cols)
    ds.ImageType = list(image_type)
    ds.SeriesDescription = tags.pop("SeriesDescription", "test series")
    ds.Manufacturer = tags.pop("Manufacturer", "SIEMENS")
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 3.0
    ds.InstanceNumber = instance
    if te_ms is not None:
        ds.EchoTime = te_ms
    if echo_number is not None:
        ds.EchoNumbers = echo_number
    private = tags.pop("private", {})
    for key, value in tags.items():
        setattr(ds, key, value)
    for tag, (vr, value) in private.items():
        ds.add_new(tag, vr, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_dataset(ds, path)
    return path


def _stack_positions(n, spacing_mm=4.0, origin=(-20.0, -30.0, 10.0), orientation=OBLIQUE_IOP):
    normal = np.cross(orientation[:3], orientation[3:])
    return [np.asarray(origin) + k * spacing_mm * normal for k in range(n)]


def _slice_pixels(z, echo=0, shape=(6, 5)):
    return (np.arange(np.prod(shape)).reshape(shape) + 100 * z + 1000 * echo).astype(np.uint16)


def _write_series(folder, n_slices=4, echoes=(10.0,), order=None, spacing_mm=4.0, **kw):
    positions = _stack_positions(n_slices, spacing_mm)
    jobs = [(e, z) for e in range(len(echoes)) for z in range(n_slices)]
    order = order if order is not None else np.random.default_rng(0).permutation(len(jobs))
    for count, j in enumerate(order):
        e, z = jobs[j]
        write_classic(folder / f"im{count:03d}.dcm", _slice_pixels(z, e), positions[z], te_ms=echoes[e],
                      instance=int(1 + (7 * count) % 97), **kw)
    return positions


# ---------------------------------------------------------------- real data

def test_real_enhanced_mese_reads_17_echoes_8_slices(shared_data):
    folder = shared_data / "mese_calf_siemens_enhanced"
    scan = read_dicom(folder)
    assert scan.problems == [] and len(scan.series) == 1
    series = scan.series[0]
    assert series.series_class == SeriesClass.MESE
    assert series.echo_times_ms == tuple(11.0 * k for k in range(1, 18))
    assert series.n_slices == 8 and series.matrix == (256, 128)
    assert series.header["slice_thickness"] == pytest.approx(7.0)
    echo = series.to_echo_series()
    assert echo.array.shape == (17, 8, 128, 256)
    assert echo.echo_times_ms[0] == 11.0 and echo.echo_times_ms[-1] == 187.0
    assert echo.spacing_mm[:2] == (1.5625, 1.5625)
    ds = pydicom.dcmread(folder / "image0001.dcm")
    frames = ds.PerFrameFunctionalGroupsSequence
    positions = np.array([[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in frames])
    iop = np.array([float(v) for v in frames[0].PlaneOrientationSequence[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    along = np.sort(positions @ normal)
    # slice spacing is measured between positions (37.1 mm here: 7 mm slices with gaps)
    assert echo.spacing_mm[2] == pytest.approx(np.mean(np.diff(along)), abs=1e-3)
    assert echo.spacing_mm[2] == pytest.approx(float(ds.SpacingBetweenSlices), abs=0.01)
    direction = np.asarray(echo.direction).reshape(3, 3)
    assert np.allclose(direction.T @ direction, np.eye(3), atol=1e-6)
    assert np.allclose(direction[:, 0], iop[:3] / np.linalg.norm(iop[:3]), atol=1e-6)
    assert np.allclose(direction[:, 1], iop[3:] / np.linalg.norm(iop[3:]), atol=1e-6)
    # voxel (0,0,k) lands on the k-th slice position; pixels are the file's own frames
    first = int(np.argmin(positions @ normal))
    assert np.allclose(echo.origin_mm, positions[first], atol=1e-3)
    assert np.allclose(echo.geometry.index_to_physical(np.array([0, 0, 7])), positions[np.argsort(positions @ normal)[-1]],
                       atol=0.05)
    assert np.array_equal(echo.array[0, 0], ds.pixel_array[first].astype(np.float32))
    assert len(echo.metadata["source_sop_instance_uids"]) == 17


def test_real_dixon_niftis_pair_magnitude_and_phase_by_echo(shared_data):
    folder = shared_data / "dixon3pt_thigh_siemens"
    pairs = pair_magnitude_phase(sorted(folder.glob("*.nii.gz")))
    assert [te for te, _, _ in pairs] == [3.45, 4.6, 5.75]
    assert [m.name[:4] for _, m, _ in pairs] == ["0006", "0008", "0010"]
    assert [p.name[:4] for _, _, p in pairs] == ["0007", "0009", "0011"]
    magnitude, phase = load_magnitude_phase(sorted(folder.glob("*.nii.gz")))
    assert magnitude.array.shape == phase.array.shape == (3, 10, 256, 512)
    assert magnitude.echo_times_ms == phase.echo_times_ms == (3.45, 4.6, 5.75)
    assert phase.image_kind == "phase" and -math.pi <= phase.array.min() and phase.array.max() < math.pi
    raw = load_volume(folder / "0007-Dixon_TE_345_th.nii.gz").array
    assert np.allclose(phase.array[0], (raw - 2048) * math.pi / 2048, atol=1e-5)
    study = discover(folder)
    assert len(study.series) == 1 and study.multiecho_gre() is study.series[0]
    assert study.series[0].image_kinds == {ImageKind.MAGNITUDE, ImageKind.PHASE}


def test_te_from_name_fallback():
    assert te_from_name(Path("0006-Dixon_TE_345_th.nii.gz"), hundredths=True) == 3.45
    assert te_from_name(Path("mese_TE_20ms.nii.gz")) == 20.0
    assert te_from_name(Path("gre_te3p2.nii")) == 3.2
    assert te_from_name(Path("t1_tse.nii")) is None


# ---------------------------------------------------------------- synthetic classic

def test_slices_sorted_by_position_and_spacing_from_positions(tmp_path):
    positions = _write_series(tmp_path, n_slices=5, spacing_mm=4.0)
    series = read_dicom(tmp_path).series[0]
    volume = series.to_volume()
    assert volume.array.shape == (5, 6, 5)
    for z in range(5):
        assert np.array_equal(volume.array[z], _slice_pixels(z).astype(np.float32))
    assert volume.spacing_mm == pytest.approx((0.6, 0.8, 4.0))  # not SliceThickness (3)
    assert np.allclose(volume.origin_mm, positions[0])
    assert np.allclose(volume.geometry.index_to_physical(np.array([0, 0, 4])), positions[4])
    assert np.allclose(np.asarray(volume.direction).reshape(3, 3)[:, 1], OBLIQUE_IOP[3:])


def test_rescale_slope_intercept(tmp_path):
    _write_series(tmp_path, n_slices=2, RescaleSlope=0.5, RescaleIntercept=-10)
    volume = read_dicom(tmp_path).series[0].to_volume()
    assert np.allclose(volume.array[1], _slice_pixels(1) * 0.5 - 10)


def test_philips_private_scale(tmp_path):
    private = {(0x2005, 0x0010): ("LO", "Philips Imaging DD 001"), (0x2005, 0x100E): ("FL", 0.5)}
    _write_series(tmp_path / "a", n_slices=2, Manufacturer="Philips Medical Systems", RescaleSlope=2,
                  RescaleIntercept=-100, private=private)
    volume = read_dicom(tmp_path / "a").series[0].to_volume()
    assert np.allclose(volume.array[0], (_slice_pixels(0) * 2.0 - 100) / (2.0 * 0.5))
    private = {(0x2005, 0x0010): ("LO", "Philips Imaging DD 001"), (0x2005, 0x100E): ("FL", 4.0),
               (0x2005, 0x100D): ("FL", 10.0)}
    _write_series(tmp_path / "b", n_slices=2, Manufacturer="Philips Medical Systems", private=private)
    volume = read_dicom(tmp_path / "b").series[0].to_volume()
    assert np.allclose(volume.array[1], (_slice_pixels(1) - 10.0) / 4.0)


def test_real_world_value_mapping_wins_over_rescale(tmp_path):
    item = Dataset()
    item.RealWorldValueSlope, item.RealWorldValueIntercept = 0.1, 5.0
    item.RealWorldValueFirstValueMapped, item.RealWorldValueLastValueMapped = 0, 4095
    item.LUTLabel = "FF"
    _write_series(tmp_path, n_slices=2, RescaleSlope=1, RescaleIntercept=0,
                  RealWorldValueMappingSequence=Sequence([item]))
    volume = read_dicom(tmp_path).series[0].to_volume()
    assert np.allclose(volume.array[1], _slice_pixels(1) * 0.1 + 5.0, atol=1e-4)


def test_siemens_xa_without_echo_numbers_groups_by_te(tmp_path):
    _write_series(tmp_path, n_slices=3, echoes=(30.0, 10.0, 20.0), ScanningSequence="SE",
                  SequenceName="*se2d3")
    series = read_dicom(tmp_path).series[0]
    assert series.echo_times_ms == (10.0, 20.0, 30.0)
    echo = series.to_echo_series()
    assert echo.echo_times_ms == (10.0, 20.0, 30.0)
    assert np.array_equal(echo.array[0, 2], _slice_pixels(2, echo=1).astype(np.float32))  # TE 10 was echo index 1


def test_ge_repeated_echo_numbers(tmp_path):
    _write_series(tmp_path, n_slices=3, echoes=(5.0, 2.5, 7.5), echo_number=1, Manufacturer="GE MEDICAL SYSTEMS",
                  ScanningSequence="GR")
    series = read_dicom(tmp_path).series[0]
    assert series.echo_times_ms == (2.5, 5.0, 7.5)
    assert series.series_class == SeriesClass.MULTIECHO_GRE


def test_ge_te_and_echo_number_repeat_ranked_by_run_number(tmp_path):
    positions = _stack_positions(3)
    for e in range(3):
        for z in range(3):
            private = {(0x0019, 0x0010): ("LO", "GEMS_ACQU_01"), (0x0019, 0x10A9): ("DS", "3"),
                       (0x0019, 0x10A2): ("SL", 100 + e)}
            write_classic(tmp_path / f"{z}_{2 - e}.dcm", _slice_pixels(z, e), positions[z], te_ms=2.5,
                          echo_number=1, Manufacturer="GE MEDICAL SYSTEMS", private=private)
    series = read_dicom(tmp_path).series[0]
    assert series.n_echoes == 3 and series.n_slices == 3
    with pytest.raises(InputError, match="--te-ms"):
        series.to_echo_series()
    echo = series.to_echo_series(te_ms=[2.5, 5.0, 7.5])
    for e in range(3):
        assert np.array_equal(echo.array[e, 1], _slice_pixels(1, e).astype(np.float32))


def test_magnitude_and_phase_split_and_phase_in_radians(tmp_path):
    positions = _stack_positions(2)
    for z in range(2):
        write_classic(tmp_path / f"m{z}.dcm", _slice_pixels(z), positions[z], te_ms=2.4, echo_number=1)
        raw = np.full((6, 5), 3072, np.uint16)  # -> 3072*2-4096 = 2048 -> pi/2
        raw[0] = np.linspace(0, 4095, 5)  # a real phase image covers its span (a constant one is refused)
        write_classic(tmp_path / f"p{z}.dcm", raw, positions[z], te_ms=2.4, echo_number=1,
                      image_type=("ORIGINAL", "PRIMARY", "P", "ND"), RescaleSlope=2, RescaleIntercept=-4096)
    series = read_dicom(tmp_path).series[0]
    assert series.image_kinds == {ImageKind.MAGNITUDE, ImageKind.PHASE}
    phase = series.to_volume(ImageKind.PHASE)
    assert np.allclose(phase.array[:, 1:], math.pi / 2, atol=1e-5)
    assert np.array_equal(series.to_volume().array[1], _slice_pixels(1).astype(np.float32))


@pytest.mark.parametrize("image_type,description,expected", [
    (("DERIVED", "PRIMARY", "DIXON", "WATER"), "t1_vibe_dixon_W", SeriesClass.VENDOR_WATER),
    (("DERIVED", "PRIMARY", "DIXON", "FAT"), "t1_vibe_dixon_F", SeriesClass.VENDOR_FAT),
    (("DERIVED", "PRIMARY", "FF"), "mDIXON FF", SeriesClass.VENDOR_FF),
    (("DERIVED", "PRIMARY", "OTHER"), "T2Map_MapIt", SeriesClass.VENDOR_T2),
    (("ORIGINAL", "PRIMARY", "M", "ND"), "t1_tse_tra", SeriesClass.T1W),
])
def test_vendor_maps_and_structural_classification(tmp_path, image_type, description, expected):
    _write_series(tmp_path, n_slices=2, image_type=image_type, SeriesDescription=description, RepetitionTime=600)
    assert read_dicom(tmp_path).series[0].series_class == expected


def test_structural_from_timing(tmp_path):
    _write_series(tmp_path / "stir", n_slices=2, echoes=(40.0,), SeriesDescription="ax leg", ScanningSequence="IR",
                  InversionTime=160, RepetitionTime=4000)
    _write_series(tmp_path / "t2", n_slices=2, echoes=(90.0,), SeriesDescription="ax leg", ScanningSequence="SE",
                  RepetitionTime=4000, SeriesInstanceUID="1.2.10")
    _write_series(tmp_path / "mese", n_slices=2, echoes=tuple(10.0 * k for k in range(1, 7)),
                  SeriesDescription="ax leg", ScanningSequence="SE", RepetitionTime=3000, FlipAngle=180)
    assert read_dicom(tmp_path / "stir").series[0].series_class == SeriesClass.STIR
    assert read_dicom(tmp_path / "t2").series[0].series_class == SeriesClass.T2W
    mese = read_dicom(tmp_path / "mese").series[0]
    assert mese.series_class == SeriesClass.MESE and mese.refocusing_angle_deg == 180.0


# ---------------------------------------------------------------- synthetic enhanced

def write_enhanced(path: Path, volumes: dict, positions, series_uid="1.2.77", slope=1.0, intercept=0.0):
    """One enhanced MR object holding every (te_ms -> (z, y, x) array) frame, frames shuffled."""
    te_list = list(volumes)
    nz, rows, cols = volumes[te_list[0]].shape
    ds = _base(ENHANCED_MR_IMAGE, series_uid, rows, cols)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.Manufacturer, ds.SeriesDescription, ds.InstanceNumber = "SIEMENS", "enhanced mese", 1
    ds.EchoPulseSequence, ds.MRAcquisitionType = "SPIN", "2D"
    shared = Dataset()
    ori, meas, timing = Dataset(), Dataset(), Dataset()
    ori.ImageOrientationPatient = OBLIQUE_IOP
    meas.PixelSpacing, meas.SliceThickness = [0.7, 0.9], 2.0
    timing.RepetitionTime, timing.FlipAngle = 3000, 160
    shared.PlaneOrientationSequence = Sequence([ori])
    shared.PixelMeasuresSequence = Sequence([meas])
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    jobs = [(te, z) for te in te_list for z in range(nz)]
    order = np.random.default_rng(1).permutation(len(jobs))
    per_frame, pixels = [], []
    for j in order:
        te, z = jobs[j]
        item, pos, echo, trans = Dataset(), Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [float(v) for v in positions[z]]
        echo.EffectiveEchoTime = te
        trans.RescaleSlope, trans.RescaleIntercept, trans.RescaleType = slope, intercept, "US"
        item.PlanePositionSequence = Sequence([pos])
        item.MREchoSequence = Sequence([echo])
        item.PixelValueTransformationSequence = Sequence([trans])
        per_frame.append(item)
        pixels.append(volumes[te][z])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = len(per_frame)
    ds.PixelData = np.stack(pixels).astype(np.uint16).tobytes()
    save_dataset(ds, path)
    return path


def test_enhanced_multiframe_per_frame_echo_and_position(tmp_path):
    positions = _stack_positions(4, spacing_mm=5.0)
    truth = {te: np.stack([_slice_pixels(z, e) for z in range(4)]) for e, te in enumerate((40.0, 10.0, 30.0, 20.0))}
    write_enhanced(tmp_path / "enh.dcm", truth, positions, slope=0.25, intercept=1.0)
    series = read_dicom(tmp_path).series[0]
    assert series.series_class == SeriesClass.MESE and series.refocusing_angle_deg == 160
    echo = series.to_echo_series()
    assert echo.echo_times_ms == (10.0, 20.0, 30.0, 40.0)
    for k, te in enumerate(echo.echo_times_ms):
        assert np.allclose(echo.array[k], truth[te] * 0.25 + 1.0)
    assert echo.spacing_mm == pytest.approx((0.9, 0.7, 5.0))
    assert np.allclose(echo.origin_mm, positions[0])
    frames = echo.metadata["source_frame_numbers"]
    assert sorted(n for per_echo in frames for n in per_echo) == list(range(1, 17))


# ---------------------------------------------------------------- bad input

def _hashes(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_non_dicom_and_truncated_files_are_problems(tmp_path):
    _write_series(tmp_path, n_slices=3)
    (tmp_path / "notes.dcm").write_text("not dicom at all")
    good = tmp_path / "im000.dcm"
    data = good.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 20])
    before = _hashes(tmp_path)
    scan = read_dicom(tmp_path)
    reasons = dict(scan.problems)
    assert reasons[str(tmp_path / "notes.dcm")] == "not a DICOM file"
    assert "truncated" in reasons[str(tmp_path / "cut.dcm")]
    assert len(scan.series) == 1 and scan.series[0].n_slices == 3
    assert _hashes(tmp_path) == before  # inputs never written


def test_folder_without_image_series(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.SOPClassUID, sr.Modality, sr.SeriesInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", "SR", "1.5"
    save_dataset(sr, tmp_path / "report.dcm")
    scan = read_dicom(tmp_path)
    assert scan.series == [] and "without image pixels" in dict(scan.problems)[str(tmp_path / "report.dcm")]
    with pytest.raises(InputError, match="no usable image series"):
        scan.require_series(tmp_path)
    with pytest.raises(InputError, match="no usable image series"):
        load_volume(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no"):
        load_volume(empty)


def test_inconsistent_slice_spacing(tmp_path):
    positions = _stack_positions(5)
    for z in (0, 1, 2, 4):  # slice 3 missing
        write_classic(tmp_path / f"s{z}.dcm", _slice_pixels(z), positions[z], te_ms=10.0)
    scan = read_dicom(tmp_path)
    assert scan.series == []
    assert any("inconsistent slice spacing" in r for _, r in scan.problems)


def test_duplicate_slices(tmp_path):
    positions = _stack_positions(3)
    for z in range(3):
        write_classic(tmp_path / f"s{z}.dcm", _slice_pixels(z), positions[z], te_ms=10.0)
    write_classic(tmp_path / "again.dcm", _slice_pixels(1), positions[1], te_ms=10.0)
    shutil.copy(tmp_path / "s0.dcm", tmp_path / "copy_of_s0.dcm")
    scan = read_dicom(tmp_path)
    reasons = [r for _, r in scan.problems]
    assert any("duplicate slices" in r for r in reasons)
    assert any("duplicate file" in r for r in reasons)
    assert scan.series == []


def test_mixed_series_keeps_main_stack(tmp_path):
    _write_series(tmp_path, n_slices=3)
    write_classic(tmp_path / "odd.dcm", np.zeros((8, 8), np.uint16), (0, 0, 0), te_ms=10.0,
                  orientation=[0, 1, 0, 0, 0, -1])
    scan = read_dicom(tmp_path)
    assert len(scan.series) == 1 and scan.series[0].n_slices == 3
    assert any(p.endswith("odd.dcm") and "mixed series" in r for p, r in scan.problems)


def test_load_echo_series_from_dicom_and_te_override(tmp_path):
    _write_series(tmp_path, n_slices=2, echoes=(10.0, 20.0, 30.0, 40.0), ScanningSequence="SE")
    echo = load_echo_series(tmp_path)
    assert echo.echo_times_ms == (10.0, 20.0, 30.0, 40.0) and echo.array.shape == (4, 2, 6, 5)
    with pytest.raises(InputError, match="echo times given"):
        load_echo_series(tmp_path, te_ms=[10, 20])


# ---------------------------------------------------------------- phase scaling

@pytest.mark.parametrize("values,expected", [
    (np.array([0.0, 2048.0, 4095.0]), np.array([-math.pi, 0.0, math.pi - math.pi / 2048])),
    (np.array([-4096.0, 0.0, 4094.0]), np.array([-math.pi, 0.0, math.pi - 2 * math.pi / 4096])),
    (np.array([-3141.0, 0.0, 1570.8]), np.array([-3.141, 0.0, 1.5708])),
    (np.array([-3.0, 0.5, 3.1]), np.array([-3.0, 0.5, 3.1])),
    (np.array([-180.0, 0.0, 90.0]), np.array([-math.pi, 0.0, math.pi / 2])),
])
def test_phase_to_radians(values, expected):
    assert np.allclose(phase_to_radians(values), expected, atol=1e-4)


def test_phase_scaling_unclear_is_refused():
    with pytest.raises(InputError):
        phase_to_radians(np.array([0.0, 10.0, 20.0]), "x.nii")


def test_acquired_mese_named_t2map_is_not_a_scanner_map(tmp_path):
    """Acquired MESE protocols are often called "t2map"; only DERIVED images are scanner maps."""
    _write_series(tmp_path, n_slices=2, echoes=tuple(10.0 * k for k in range(1, 7)),
                  image_type=("ORIGINAL", "PRIMARY", "M", "ND"), SeriesDescription="se_mc_t2map_6echoes",
                  ScanningSequence="SE", RepetitionTime=3000, FlipAngle=180)
    assert read_dicom(tmp_path).series[0].series_class == SeriesClass.MESE


# ---------------------------------------------------------------- absent optional attributes are unknown

MESE_TAGS = dict(ScanningSequence="SE", RepetitionTime=3000, FlipAngle=180)
MESE_ECHOES = tuple(10.0 * k for k in range(1, 7))


def _strip(folder: Path, *keywords) -> None:
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword in keywords:
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(path)


@pytest.mark.parametrize("stated, expected", [(None, None), ("", None), ("  ", None), ("2D", "2D"), ("3D", "3D")])
def test_mr_acquisition_type_absent_or_empty_is_unknown(tmp_path, stated, expected):
    """No MRAcquisitionType, or an empty one, is unknown: the key is left out of the metadata
    (the T2 fit then tries the non-selective model); a stated value is kept."""
    tags = dict(MESE_TAGS) if stated is None else dict(MESE_TAGS, MRAcquisitionType=stated)
    _write_series(tmp_path, n_slices=2, echoes=MESE_ECHOES, **tags)
    series = read_dicom(tmp_path).series[0]
    assert series.series_class == SeriesClass.MESE
    assert series.mr_acquisition_type == expected
    metadata = series.to_echo_series().metadata
    assert ("MRAcquisitionType" in metadata) == (expected is not None)
    assert metadata.get("MRAcquisitionType") == expected


@pytest.mark.parametrize("stored, expected", [(None, None), (0, None), (1.5, 1.5), (15000, 1.5), (3, 3.0)])
def test_field_strength_absent_or_zero_is_unknown(tmp_path, stored, expected):
    """Absent or zero MagneticFieldStrength is unknown (the Dixon fit then asks for --field-t)
    rather than 0 T; a value in gauss (older scanners) is read in tesla."""
    _write_series(tmp_path, n_slices=2, echoes=(2.4, 4.8), MagneticFieldStrength=stored or 0)
    if stored is None:
        _strip(tmp_path, "MagneticFieldStrength")
    series = read_dicom(tmp_path).series[0]
    assert series.field_strength_t == expected
    metadata = series.to_echo_series().metadata
    assert metadata.get("field_strength_t") == expected and ("field_strength_t" in metadata) == (expected is not None)


@pytest.mark.parametrize("flip, expected", [(None, None), (90, None), (160, 160.0), (180, 180.0)])
def test_refocusing_angle_only_from_a_refocusing_flip(tmp_path, flip, expected):
    """A MESE without FlipAngle, or with the 90° excitation, has an unknown refocusing angle."""
    tags = dict(MESE_TAGS, FlipAngle=flip or 180)
    _write_series(tmp_path, n_slices=2, echoes=MESE_ECHOES, **tags)
    if flip is None:
        _strip(tmp_path, "FlipAngle")
    series = read_dicom(tmp_path).series[0]
    assert series.refocusing_angle_deg == expected
    assert series.to_echo_series().refocusing_angle_deg == expected


def test_single_slice_spacing_from_negative_or_absent_spacing(tmp_path):
    """One slice: SpacingBetweenSlices stored negative gives its magnitude; 0 falls to SliceThickness."""
    write_classic(tmp_path / "a" / "im.dcm", _slice_pixels(0), (0.0, 0.0, 0.0), SpacingBetweenSlices=-5.0)
    write_classic(tmp_path / "b" / "im.dcm", _slice_pixels(0), (0.0, 0.0, 0.0), SpacingBetweenSlices=0)
    assert read_dicom(tmp_path / "a").series[0].spacing[2] == 5.0
    assert read_dicom(tmp_path / "b").series[0].spacing[2] == 3.0   # SliceThickness


def test_sidecar_excitation_flip_and_zero_field_are_unknown(tmp_path):
    """A BIDS sidecar's FlipAngle 90 is the excitation, not the refocusing angle; a field of 0 is unknown."""
    import json
    import SimpleITK as sitk
    from myositis_qmri.io.nifti import read_echo_series
    path = tmp_path / "mese.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((6, 2, 4, 5), np.float32), isVector=False), str(path))
    sidecar = {"EchoTime": [0.01 * k for k in range(1, 7)], "FlipAngle": 90, "MagneticFieldStrength": 0,
               "MRAcquisitionType": ""}
    (tmp_path / "mese.json").write_text(json.dumps(sidecar))
    series = read_echo_series(path)
    assert series.refocusing_angle_deg is None and series.field_strength_t is None
    (tmp_path / "mese.json").write_text(json.dumps(dict(sidecar, RefocusingFlipAngle=150, MagneticFieldStrength=3)))
    series = read_echo_series(path)
    assert series.refocusing_angle_deg == 150 and series.field_strength_t == 3.0
