"""The few pydicom / highdicom calls whose spelling differs between the versions the core
supports: pydicom 2.4 + highdicom 0.22 (what fits beside Slicer 5.6-5.10, which bundles
pydicom 2.4.x) and pydicom 3 + current highdicom.

Every DICOM file the project writes goes through `save_dataset`, so no caller needs to know
which pydicom it runs on.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])


def _numpy2_alias_for_old_highdicom() -> None:
    """highdicom 0.22 (the last one for pydicom 2.4) compares dtypes with `np.float_`, which
    NumPy 2 removed (Slicer 5.8+ bundles NumPy 2): every SEG fails with AttributeError. The
    alias is restored, to the same float64 it always named, only where it is missing."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        major, minor = (int(v) for v in version("highdicom").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return
    if (major, minor) < (0, 23) and not hasattr(np, "float_"):
        np.float_ = np.float64


_numpy2_alias_for_old_highdicom()


# The first group of a DICOM stream written without the 128-byte preamble and "DICM": file meta
# (0002) or, without file meta too, identifying attributes (0008). Little endian.
_BARE_STREAM_STARTS = (b"\x02\x00", b"\x08\x00")


def read_dataset(path, **kwargs) -> Dataset:
    """`pydicom.dcmread`, also for files without the preamble and "DICM" prefix (some PACS
    exports and older archives write the bare stream). pydicom refuses those unless forced;
    forcing is limited to files that begin with a DICOM group 0002 or 0008 tag, so that any
    other file is still refused with InvalidDicomError."""
    from pydicom.errors import InvalidDicomError
    try:
        return pydicom.dcmread(str(path), **kwargs)
    except InvalidDicomError:
        with open(path, "rb") as handle:
            start = handle.read(2)
        if start not in _BARE_STREAM_STARTS:
            raise
    return pydicom.dcmread(str(path), force=True, **kwargs)


def save_dataset(ds: Dataset, path) -> None:
    """Write `ds` as a conformant DICOM file (preamble, file meta, its transfer syntax).

    pydicom 3 spells this `enforce_file_format=True`; pydicom 2.x `write_like_original=False`.
    """
    if PYDICOM_MAJOR >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(str(path) if isinstance(path, Path) else path, write_like_original=False)


def segment_description(hd_module, display_lab=None, **kwargs):
    """`highdicom.seg.SegmentDescription`, with its recommended display colour (CIELab, as
    `highdicom.color.CIELabColor` takes it) on every highdicom: 0.24 and later take
    `display_color`; on earlier ones the attribute is set directly, in DICOM's scaled
    integer encoding (PS3.3 C.10.7.1.1)."""
    cls = hd_module.seg.SegmentDescription
    if display_lab is None:
        return cls(**kwargs)
    if "display_color" in inspect.signature(cls.__init__).parameters:
        return cls(display_color=hd_module.color.CIELabColor(*display_lab), **kwargs)
    description = cls(**kwargs)
    description.RecommendedDisplayCIELabValue = lab_to_dicom(display_lab)
    return description


def lab_to_dicom(lab) -> list[int]:
    """CIELab (L 0-100, a and b -128..127) -> the three unsigned 16-bit values DICOM stores."""
    l_star, a_star, b_star = (float(v) for v in lab)
    return [int(round(l_star * 0xFFFF / 100.0)), int(round((a_star + 128.0) * 0xFFFF / 255.0)),
            int(round((b_star + 128.0) * 0xFFFF / 255.0))]
