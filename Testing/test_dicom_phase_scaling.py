"""Phase scaling from DICOM headers and from the data: every vendor convention at BitsStored 12
and 16, signed and unsigned, and the failure case of issue 23 (12-bit Siemens phase declared
as 16-bit) through the whole fat-fraction stage.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from myositis_qmri.errors import InputError
from myositis_qmri.io.dicom import read_dicom
from myositis_qmri.io.dicom_values import phase_to_radians, stored_value_range, ValueMap
from test_io_dicom import write_classic

pytestmark = pytest.mark.dicom


def _true_phase(shape=(24, 20), seed=0):
    """A wrapped phase with a smooth field (several wraps) in a body and noise outside: it covers
    every angle, as a scanner's phase image does."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    field = 0.9 * xx + 0.4 * yy + 0.02 * (xx - 10) ** 2
    body = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2) < 0.4 * min(shape)
    phase = np.where(body, field, rng.uniform(-math.pi, math.pi, shape))
    return np.angle(np.exp(1j * phase))


# name -> (stored from radians, PixelRepresentation, RescaleSlope, RescaleIntercept, Manufacturer)
CONVENTIONS = {
    "siemens_rescaled": (lambda p: np.round((p + math.pi) / (2 * math.pi) * 4096) % 4096, 0, 2.0, -4096.0, "SIEMENS"),
    "siemens_raw": (lambda p: np.round((p + math.pi) / (2 * math.pi) * 4096) % 4096, 0, 1.0, 0.0, "SIEMENS"),
    "signed_12bit": (lambda p: np.clip(np.round(p / (2 * math.pi) * 4096), -2048, 2047), 1, 1.0, 0.0, "SIEMENS"),
    "ge_milliradians": (lambda p: np.clip(np.round(p * 1000), -3142, 3141), 1, 1.0, 0.0, "GE MEDICAL SYSTEMS"),
    "philips_radians": (lambda p: np.round((p + math.pi) / (2 * math.pi) * 4095), 0, 2 * math.pi / 4095, -math.pi,
                        "Philips Medical Systems"),
}


def _write_phase(folder, name, bits_stored, phase):
    to_stored, signed, slope, intercept, vendor = CONVENTIONS[name]
    stored = to_stored(phase).astype(np.int64)
    pixels = (stored & 0xFFFF).astype(np.uint16)  # two's complement for signed values
    return write_classic(folder / f"{name}_{bits_stored}.dcm", pixels, (0, 0, 0), te_ms=4.6,
                         image_type=("ORIGINAL", "PRIMARY", "P", "ND"), orientation=[1, 0, 0, 0, 1, 0],
                         Manufacturer=vendor, BitsStored=bits_stored, HighBit=bits_stored - 1,
                         PixelRepresentation=signed, RescaleSlope=slope, RescaleIntercept=intercept)


def _angle_error(a, b):
    return np.abs(np.angle(np.exp(1j * (np.asarray(a, float) - np.asarray(b, float)))))


@pytest.mark.parametrize("name,bits_stored", [(name, bits) for name in sorted(CONVENTIONS) for bits in (12, 16)
                                              if (name, bits) != ("ge_milliradians", 12)])  # +-3142 needs 13 bits
def test_vendor_phase_read_in_radians(tmp_path, name, bits_stored):
    truth = _true_phase()
    _write_phase(tmp_path, name, bits_stored, truth)
    series = read_dicom(tmp_path).series[0]
    radians = series.to_volume("phase").array[0]
    assert radians.min() >= -math.pi and radians.max() < math.pi
    assert np.max(_angle_error(radians, truth)) < 2 * math.pi / 4096 * 1.01 + 1e-3, name


def test_header_span_too_wide_falls_back_to_the_data():
    """The issue's numbers: 12-bit Siemens phase (slope 2, intercept -4096) declared 16-bit."""
    truth = _true_phase()
    values = 2 * (np.round((truth + math.pi) / (2 * math.pi) * 4096) % 4096) - 4096
    header16 = stored_value_range(16, False, ValueMap(2.0, -4096.0, "rescale"))
    header12 = stored_value_range(12, False, ValueMap(2.0, -4096.0, "rescale"))
    from_16 = phase_to_radians(values, "p.dcm", header16)
    from_12 = phase_to_radians(values, "p.dcm", header12)
    assert np.max(_angle_error(from_16, from_12)) < 1e-5
    assert np.max(_angle_error(from_16, truth)) < 2 * math.pi / 4096 + 1e-4


def test_unclear_header_and_data_are_refused_naming_file_and_reason():
    # Values 1000..1500 fill 0.8 % of a 16-bit span and 24 % of the power-of-two span 0..2047:
    # neither tells the scaling.
    values = np.linspace(1000, 1500, 200)
    with pytest.raises(InputError, match=r"phase\.dcm: cannot tell the phase scaling.*BitsStored"):
        phase_to_radians(values, "phase.dcm", stored_value_range(16, False, ValueMap()))
    with pytest.raises(InputError, match="fill only 24 % of the power-of-two span 0..2047"):
        phase_to_radians(values, "phase.nii")


def test_header_that_fits_the_data_is_kept():
    """A correct 12-bit header wins over the data even when the data fill only part of it."""
    values = np.linspace(-4096, 0, 300)  # half the span: the data alone would suggest -4096..4095 too
    out = phase_to_radians(values, "p.dcm", stored_value_range(12, False, ValueMap(2.0, -4096.0, "rescale")))
    assert np.allclose(out, values * math.pi / 4096, atol=1e-5)


@pytest.fixture(scope="module")
def small_exam():
    phantom = pytest.importorskip("myositis_qmri.phantom")
    return phantom.make_exam(1, size="small")


def _gre_study(exam, folder, phase_bits):
    from myositis_qmri.io.dicom_write import write_series
    from myositis_qmri.phantom.writer import _study, exam_series
    for name, spec in exam_series(exam):
        if name not in ("03_GRE_M", "04_GRE_P"):
            continue
        for stack in spec.stacks:
            if stack.image_type[2] == "P":
                stack.bits_stored = phase_bits
        write_series(_study(exam), spec, folder / name, "classic", f"bits{phase_bits}")
    return folder


def test_issue_failure_case_sixteen_bit_phase_gives_the_twelve_bit_result(tmp_path, small_exam):
    """Before the fix the 16-bit header shrank the phase 16 times: fat and water swapped in 28 %
    of the body and muscle FF read 5 points low."""
    from myositis_qmri.cli import main
    from myositis_qmri.io.nifti import read_volume
    maps = {}
    for bits in (12, 16):
        study = _gre_study(small_exam, tmp_path / f"study{bits}", bits)
        assert main(["ff", str(study), "--out", str(tmp_path / f"out{bits}"), "--method", "multiecho"]) == 0
        maps[bits] = read_volume(tmp_path / f"out{bits}" / "ff.nii.gz").array
    labels = small_exam.muscle_labels.array
    truth = small_exam.ff_percent.array
    tissue = small_exam.tissue_labels.array > 0
    for bits, ff in maps.items():
        assert np.mean(np.abs(ff[tissue] - truth[tissue]) > 30) < 0.002, bits   # no fat/water swaps
    for label in np.unique(labels[labels > 0]):
        region = labels == label
        assert abs(np.mean(maps[16][region]) - np.mean(maps[12][region])) <= 0.5, label
        assert abs(np.mean(maps[16][region]) - np.mean(truth[region])) <= 1.0, label
