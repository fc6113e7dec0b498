"""DICOM variants a clinic sends, made from any study into a new folder (inputs never touched):
optional attributes stripped, other transfer syntaxes, no preamble, implicit VR. Shared by the
DICOM tests; not a test module itself."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from myositis_qmri.io.dicom_compat import save_dataset

# What an MR image cannot be read without (type 1 of the image, plane and MR modules, and the
# echo time a T2 fit needs); every other attribute is optional for this test.
ESSENTIAL = {
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality",
    "ImageType", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "SamplesPerPixel", "PhotometricInterpretation", "PixelData", "ImagePositionPatient", "ImageOrientationPatient",
    "PixelSpacing", "SliceThickness", "EchoTime", "EchoNumbers", "ScanningSequence", "SequenceVariant",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "RealWorldValueMappingSequence", "RepetitionTime",
    "EchoTrainLength", "FlipAngle", "SpecificCharacterSet", "InstanceNumber",
}


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and _is_dicom(p))


def _is_dicom(path: Path) -> bool:
    try:
        pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        return True
    except Exception:  # noqa: BLE001 - labels.nii.gz and other non-DICOM files
        return False


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder, to check that inputs stay byte for byte."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def strip_optional(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The dataset with every element outside ESSENTIAL (and every private one) removed."""
    for elem in list(ds):
        if elem.keyword not in ESSENTIAL:
            del ds[elem.tag]
    return ds


def rewrite(src: Path, dst: Path, change, limit: int | None = None) -> Path:
    """Every DICOM file of src written under dst after `change(ds, path)`; `limit` keeps the
    first few files of each series folder (tests stay fast)."""
    per_folder: dict[Path, int] = {}
    for path in dicom_files(src):
        count = per_folder.get(path.parent, 0)
        if limit is not None and count >= limit:
            continue
        per_folder[path.parent] = count + 1
        ds = pydicom.dcmread(path)
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        change(ds, target)
    return dst


def save_stripped(ds, target):
    save_dataset(strip_optional(ds), target)


def save_implicit(ds, target):
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    _set_encoding(ds, True)
    save_dataset(ds, target)


def save_without_preamble(ds, target):
    """File meta and dataset only: no 128-byte preamble, no "DICM" (as the OAI files are)."""
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    _set_encoding(ds, False)
    save_dataset(ds, target)
    raw = Path(target).read_bytes()
    assert raw[128:132] == b"DICM"
    Path(target).write_bytes(raw[132:])


def compressor(name: str):
    """A `change` that re-encodes the pixel data losslessly: "rle", "jpeg-ls" or "jpeg2000".
    Frames are encoded with the codec libraries directly and encapsulated, which works alike
    under pydicom 2.4 and 3; a missing encoder skips the test (reading needs only decoders)."""
    def change(ds, target):
        import pytest
        from pydicom.encaps import encapsulate
        from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless
        pixels = read_pixels_as_stored(ds)
        if name == "rle":
            bits = max(int(ds.BitsStored), int(pixels.max()).bit_length())
            ds.BitsStored, ds.HighBit = bits, bits - 1
            ds.compress(RLELossless, pixels)
        else:
            if name == "jpeg-ls":
                jpeg_ls = pytest.importorskip("jpeg_ls", reason="pyjpegls encodes JPEG-LS")
                frame, syntax = bytes(jpeg_ls.encode_array(pixels)), JPEGLSLossless
            else:
                openjpeg = pytest.importorskip("openjpeg", reason="pylibjpeg-openjpeg encodes JPEG 2000")
                # a scanner's values may exceed BitsStored (see io/dicom_frames._unmasked): the
                # lossless stream then declares the bits they need
                bits = max(int(ds.BitsStored), int(pixels.max()).bit_length())
                ds.BitsStored, ds.HighBit = bits, bits - 1
                frame = openjpeg.encode(pixels, bits_stored=bits, use_mct=False)
                syntax = JPEG2000Lossless
            ds.PixelData = encapsulate([frame])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            ds.file_meta.TransferSyntaxUID = syntax
            _set_encoding(ds, False)
        save_dataset(ds, target)
    return change


def read_pixels_as_stored(ds):
    from myositis_qmri.io.dicom_frames import _unmasked
    return _unmasked(ds, ds.pixel_array)


def _set_encoding(ds, implicit: bool) -> None:
    if int(pydicom.__version__.split(".")[0]) < 3:
        ds.is_little_endian, ds.is_implicit_VR = True, implicit
