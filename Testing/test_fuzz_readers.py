"""Bounded fuzzing of the DICOM and NIfTI readers (hypothesis, derandomised).

Each example starts from a small valid input and damages it: truncation, corrupted bytes, or
headers that contradict themselves or the pixel data. The reader must either give a valid
result (finite, positive geometry; array shape matching the header) or raise InputError,
never another exception, a hang or a crash. A watchdog turns a hang into a failure.
"""
from __future__ import annotations

import contextlib
import faulthandler
import math
import struct
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, MRImageStorage, generate_uid

from myositis_qmri.errors import InputError
from myositis_qmri.io.dicom_compat import save_dataset
from myositis_qmri.io import read_echo_series, read_volume
from myositis_qmri.io.dicom import read_dicom

# Garbage input makes pydicom and numpy warn (invalid VR values, overflow); that is expected.
pytestmark = [pytest.mark.dicom, pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")]

FUZZ = settings(max_examples=100, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def watchdog(monkeypatch):
    """A reader that hangs kills the run with a traceback instead of stalling the suite."""
    monkeypatch.setenv("MYOSITIS_QMRI_PROGRESS", "off")
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def assert_valid_geometry(obj) -> None:
    assert all(math.isfinite(v) and v > 0 for v in obj.spacing_mm), obj.spacing_mm
    assert all(math.isfinite(v) for v in obj.origin_mm + obj.direction)
    assert abs(abs(np.linalg.det(np.reshape(obj.direction, (3, 3)))) - 1) < 1e-3, obj.direction
    assert np.isfinite(obj.array).any() or obj.array.size == 0


# ------------------------------------------------------------------ DICOM

N_SLICES, N_ECHOES = 3, 2


def mese_file(series_uid: str, slice_index: int, echo_index: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.3", series_uid, "1.2.3.4"
    ds.Modality, ds.Manufacturer, ds.SeriesDescription, ds.SeriesNumber = "MR", "SIEMENS", "t2_mese", 3
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE", "SK", "2D"
    ds.EchoTime, ds.EchoNumbers, ds.RepetitionTime, ds.FlipAngle = 10.0 * (echo_index + 1), echo_index + 1, 3000, 180
    ds.MagneticFieldStrength = 3.0
    ds.InstanceNumber = echo_index * N_SLICES + slice_index + 1
    ds.ImagePositionPatient = [-4.0, -4.0, 6.0 * slice_index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 6.0
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = (np.arange(64, dtype=np.uint16) * (slice_index + 1) + 100 // (echo_index + 1)).tobytes()
    return ds


@pytest.fixture(scope="module")
def dicom_study(tmp_path_factory) -> dict[str, bytes]:
    uid = generate_uid()
    files = {}
    folder = tmp_path_factory.mktemp("mese")
    for e in range(N_ECHOES):
        for z in range(N_SLICES):
            path = folder / f"IM{e}{z}.dcm"
            save_dataset(mese_file(uid, z, e), path)
            files[path.name] = path.read_bytes()
    return files


def read_everything(folder: Path) -> None:
    """What `inspect` and the pipeline do with a folder: scan, then read every kind's pixels."""
    scan = read_dicom(folder)
    for series in scan.require_series(folder):
        series.summary()
        for kind in series.image_kinds:
            volume = series.to_volume(kind)
            assert volume.array.shape[1:] == (series.matrix[1], series.matrix[0])
            assert_valid_geometry(volume)
            if len(set(series.echo_times_ms)) == series.n_echoes > 1:
                echoes = series.to_echo_series(kind)
                assert echoes.array.shape[0] == series.n_echoes
                assert_valid_geometry(echoes)


@contextlib.contextmanager
def written(files: dict[str, bytes]):
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        yield Path(tmp)


def must_be_clean(folder: Path) -> None:
    try:
        read_everything(folder)
        event("valid result")
    except InputError as exc:
        event("InputError")
        assert str(exc).strip() and "\n" not in str(exc), repr(str(exc))


CONTRADICTIONS = {
    "Rows": st.sampled_from([0, 1, 7, 9, 4096, 65535]),
    "Columns": st.sampled_from([0, 1, 7, 9, 4096, 65535]),
    "BitsAllocated": st.sampled_from([0, 1, 7, 8, 12, 24, 32, 64]),
    "BitsStored": st.sampled_from([0, 1, 17, 40]),
    "HighBit": st.sampled_from([0, 31, 63]),
    "PixelRepresentation": st.sampled_from([1, 2]),
    "SamplesPerPixel": st.sampled_from([0, 3, 4]),
    "PhotometricInterpretation": st.sampled_from(["RGB", "PALETTE COLOR", "YBR_FULL", ""]),
    "NumberOfFrames": st.sampled_from(["0", "-3", "2", "1000000", "abc"]),
    "ImagePositionPatient": st.sampled_from([None, ["nan", 0, 0], [1, 2], ["inf", "0", "0"], ["x", "y", "z"]]),
    "ImageOrientationPatient": st.sampled_from([None, [0] * 6, ["nan"] * 6, [1, 0, 0, 1, 0, 0], [1, 0, 0]]),
    "PixelSpacing": st.sampled_from([None, ["nan", "nan"], [0, 0], [-1, 1], ["inf", 1], [1]]),
    "SliceThickness": st.sampled_from([None, "nan", "-6", "0"]),
    "EchoTime": st.sampled_from([None, "nan", "-5", "0", "inf", "1e308"]),
    "RescaleSlope": st.sampled_from(["nan", "0", "inf", "-1e308"]),
    "RescaleIntercept": st.sampled_from(["nan", "inf"]),
    "SeriesInstanceUID": st.sampled_from([None, "", "1.2.3"]),
    "SOPInstanceUID": st.sampled_from([None, "", "1.2.3"]),
    "PixelData": st.sampled_from([None, b"", b"\x00" * 10, b"\x00" * 1000]),
    "TransferSyntaxUID": st.sampled_from([JPEGBaseline8Bit, "1.2.840.10008.1.2.4.90", "1.2.3.4.5"]),
}


def raw_value(vr: str, value) -> bytes:
    """The bytes a (possibly invalid) value has in the file, bypassing pydicom's checks."""
    if isinstance(value, bytes):
        raw = value
    elif vr in ("US", "SS"):
        raw = struct.pack("<H" if vr == "US" else "<h", int(value) & 0xFFFF if vr == "US" else int(value))
    else:
        raw = "\\".join(str(v) for v in value).encode() if isinstance(value, list) else str(value).encode()
    return raw + (b" " if len(raw) % 2 else b"")


def with_header_change(data: bytes, keyword: str, value) -> bytes:
    """The file with one attribute deleted or set to a raw value; pixel data left as is even
    when the transfer syntax then claims a compressed encoding."""
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    meta = ds.file_meta
    if keyword == "TransferSyntaxUID":
        meta.TransferSyntaxUID = value
    elif value is None:
        if keyword in ds:
            del ds[keyword]
    else:
        tag = pydicom.datadict.tag_for_keyword(keyword)
        vr = "OW" if keyword == "PixelData" else pydicom.datadict.dictionary_VR(tag)
        raw = raw_value(vr, value)
        ds[tag] = RawDataElement(pydicom.tag.Tag(tag), vr, len(raw), raw, 0, False, True)
    out = pydicom.filebase.DicomBytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=False)
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


@FUZZ
@given(data=st.data())
def test_dicom_reader_survives_contradictory_headers(dicom_study, data):
    files = dict(dicom_study)
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        name = data.draw(st.sampled_from(sorted(files)), label="file")
        keyword = data.draw(st.sampled_from(sorted(CONTRADICTIONS)), label="attribute")
        value = data.draw(CONTRADICTIONS[keyword], label="value")
        files[name] = with_header_change(files[name], keyword, value)
    with written(files) as folder:
        must_be_clean(folder)


@FUZZ
@given(data=st.data())
def test_dicom_reader_survives_truncation_and_corrupted_bytes(dicom_study, data):
    files = dict(dicom_study)
    for name in data.draw(st.lists(st.sampled_from(sorted(files)), min_size=1, max_size=3, unique=True)):
        raw = bytearray(files[name])
        if data.draw(st.booleans(), label="truncate"):
            raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
        else:
            for _ in range(data.draw(st.integers(1, 12), label="n_bytes")):
                position = data.draw(st.integers(0, len(raw) - 1), label="position")
                raw[position] = data.draw(st.integers(0, 255), label="byte")
        files[name] = bytes(raw)
    with written(files) as folder:
        must_be_clean(folder)


# ------------------------------------------------------------------ NIfTI

@pytest.fixture(scope="module")
def nifti_bytes(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("nifti")
    affine = np.array([[-1.5, 0, 0, 10], [0, -1.5, 0, 20], [0, 0, 6.0, -30], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    out = {}
    for name, shape in (("map.nii", (8, 7, 3)), ("mese.nii", (8, 7, 3, 4)), ("mese.nii.gz", (8, 7, 3, 4))):
        nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32), affine), folder / name)
        out[name] = (folder / name).read_bytes()
    return out


NIFTI_FIELDS = {
    "dim": st.tuples(st.integers(0, 7), st.sampled_from([-1, 0, 1, 3, 4, 7, 8, 300, 32767])),
    "pixdim": st.tuples(st.integers(0, 7), st.sampled_from([math.nan, math.inf, -1.5, 0.0, 1e-30, 1e30])),
    "datatype": st.tuples(st.just(0), st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 255, 256, 1792, 2304, 9999])),
    "bitpix": st.tuples(st.just(0), st.sampled_from([0, 1, 7, 8, 16, 32, 64, 128])),
    "vox_offset": st.tuples(st.just(0), st.sampled_from([0.0, 10.0, 351.0, 1e9, -5.0, math.nan])),
    "scl_slope": st.tuples(st.just(0), st.sampled_from([math.nan, math.inf, 0.0, -1e38])),
    "srow_x": st.tuples(st.integers(0, 3), st.sampled_from([math.nan, math.inf, 0.0, 1e38])),
    "quatern_b": st.tuples(st.just(0), st.sampled_from([math.nan, 2.0, -1.0])),
    "qform_code": st.tuples(st.just(0), st.sampled_from([0, 1, 2, 99, -1])),
    "sform_code": st.tuples(st.just(0), st.sampled_from([0, 1, 4, 99, -1])),
    "magic": st.tuples(st.just(0), st.sampled_from([b"ni1", b"n+2", b"\x00\x00\x00"])),
}


def read_nifti_like_the_pipeline(path: Path, n_echoes_hint: int) -> None:
    try:
        volume = read_volume(path)
        assert volume.array.ndim == 3
        assert_valid_geometry(volume)
        event("3-D: valid result")
    except InputError as exc:
        event("3-D: InputError")
        assert "\n" not in str(exc)
    try:
        series = read_echo_series(path, echo_times_ms=[10.0 * (i + 1) for i in range(n_echoes_hint)])
        assert series.array.shape[0] == n_echoes_hint
        assert_valid_geometry(series)
        event("4-D: valid result")
    except InputError as exc:
        event("4-D: InputError")
        assert "\n" not in str(exc)


def nifti_with_changes(raw: bytes, changes) -> bytes:
    header = nib.Nifti1Header.from_fileobj(pydicom.filebase.DicomBytesIO(raw[:348]), check=False)
    for field, (index, value) in changes:
        array = header.structarr[field]
        if array.ndim:
            array[index % array.shape[0]] = value
        else:
            header.structarr[field] = value
    return header.binaryblock + raw[348:]


@FUZZ
@given(data=st.data())
def test_nifti_reader_survives_bad_headers_and_damage(nifti_bytes, data):
    name = data.draw(st.sampled_from(["map.nii", "mese.nii", "mese.nii.gz"]), label="file")
    raw = nifti_bytes[name]
    mode = data.draw(st.sampled_from(["fields", "truncate", "bytes"]), label="mode")
    if mode == "fields" and not name.endswith(".gz"):
        changes = data.draw(st.lists(st.sampled_from(sorted(NIFTI_FIELDS)).flatmap(
            lambda f: st.tuples(st.just(f), NIFTI_FIELDS[f])), min_size=1, max_size=3), label="changes")
        raw = nifti_with_changes(raw, changes)
    elif mode == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        raw = bytearray(raw)
        low, high = data.draw(st.sampled_from([(0, 348), (352, len(raw))]), label="region")
        for _ in range(data.draw(st.integers(1, 8), label="n_bytes")):
            position = data.draw(st.integers(low, high - 1), label="position")
            raw[position] = data.draw(st.integers(0, 255), label="byte")
        raw = bytes(raw)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        read_nifti_like_the_pipeline(path, 4)


def test_truncated_nifti_is_refused_not_zero_filled(nifti_bytes, tmp_path):
    path = tmp_path / "map.nii"
    path.write_bytes(nifti_bytes["map.nii"][:-40])
    with pytest.raises(InputError, match="truncated"):
        read_volume(path)
    gz = tmp_path / "mese.nii.gz"
    gz.write_bytes(nifti_bytes["mese.nii.gz"][: len(nifti_bytes["mese.nii.gz"]) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_echo_series(gz, [10, 20, 30, 40])


def test_nifti_header_declaring_huge_image_is_refused_before_allocating(nifti_bytes, tmp_path):
    raw = bytearray(nifti_bytes["map.nii"])
    struct.pack_into("<4h", raw, 40, 3, 32767, 32767, 32767)  # ~140 TB of float32
    path = tmp_path / "huge.nii"
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="truncated"):
        read_volume(path)
