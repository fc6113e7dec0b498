"""Scanner T2 map import: vendor scaling (ms, ms x 10 through storage, RescaleSlope, Real World
Value Mapping, seconds), ambiguity refused, provenance labels, and the `t2` command path."""
from __future__ import annotations

import json

import numpy as np
import pytest

from myositis_qmri.cli import main
from myositis_qmri.errors import InputError
from myositis_qmri.io.dicom_write import ImageStack, SeriesSpec, StudyInfo, uid_from, write_series
from myositis_qmri.io.nifti import write_volume
from myositis_qmri.maps.scanner_t2 import read_scanner_t2_map
from myositis_qmri.volume import Geometry, Volume


def _t2_ms(seed=0):
    """(3, 32, 32) T2 map in ms: background 0, muscle 30-40 ms, a fat rim 80-110 ms."""
    rng = np.random.default_rng(seed)
    t2 = np.zeros((3, 32, 32))
    t2[:, 4:28, 4:28] = rng.uniform(80, 110, (3, 24, 24))
    t2[:, 8:24, 8:24] = rng.uniform(30, 40, (3, 16, 16))
    return t2


def _write_map(folder, stored_values, manufacturer, description, slope=1.0, units=None):
    study = StudyInfo(uid_from("study", description), uid_from("for", description), manufacturer=manufacturer)
    geometry = Geometry((3, 32, 32), (1.5, 1.5, 5.0), (-24.0, -24.0, 10.0))
    stack = ImageStack(stored_values, ("DERIVED", "PRIMARY", "T2_MAP"), rescale_slope=slope)
    write_series(study, SeriesSpec(description, 7, [stack], geometry, units=units), folder)
    return folder


@pytest.mark.parametrize("manufacturer,description,factor,slope,units,label", [
    ("SIEMENS", "T2Map_MapIt", 10.0, 1.0, None, "Siemens MapIt"),          # integer ms x 10
    ("SIEMENS", "T2_GRAPPATINI_map", 1.0, 1.0, None, "Siemens GRAPPATINI"),  # plain ms
    ("GE MEDICAL SYSTEMS", "Cartigram T2 map", 1.0, 0.1, None, "GE Cartigram"),  # RescaleSlope 0.1
    ("Philips Medical Systems", "T2 map", 1.0, 0.05, "ms", "Philips T2 map"),    # RWVM in ms
])
def test_vendor_maps_read_in_ms(tmp_path, manufacturer, description, factor, slope, units, label):
    truth = _t2_ms()
    stored = np.round(truth * factor / slope) * slope   # what the scanner can store
    _write_map(tmp_path, stored, manufacturer, description, slope, units)
    t2 = read_scanner_t2_map(tmp_path)
    assert t2.metadata["units"] == "ms"
    assert t2.metadata["source"] == f"scanner mono-exponential T2 ({label})"
    assert np.allclose(t2.array, truth, atol=max(0.1, slope) / min(factor, 10) + 1e-3)
    assert t2.spacing_mm == pytest.approx((1.5, 1.5, 5.0))


def test_seconds_detected_and_ambiguous_refused(tmp_path):
    truth = _t2_ms()
    seconds = Volume(truth / 1000.0, (1.5, 1.5, 5.0), metadata={"series_description": "T2 map"})
    assert np.allclose(read_scanner_t2_map(seconds).array, truth, rtol=1e-5)
    ambiguous = Volume(truth * 2.0, (1.5, 1.5, 5.0))      # median ~170: ms of fat, or ms x 10 of 17 ms
    with pytest.raises(InputError, match="scanner-t2-scale"):
        read_scanner_t2_map(ambiguous)
    assert np.allclose(read_scanner_t2_map(ambiguous, scale_to_ms=0.5).array, truth, rtol=1e-5)
    with pytest.raises(InputError, match="positive factor"):
        read_scanner_t2_map(ambiguous, scale_to_ms=-1)
    with pytest.raises(InputError, match="no positive value"):
        read_scanner_t2_map(Volume(np.zeros((2, 4, 4))))


def test_header_unit_contradicting_values_is_refused(tmp_path):
    _write_map(tmp_path, np.round(_t2_ms() * 10), "Philips Medical Systems", "T2 map", 1.0, "ms")
    with pytest.raises(InputError, match="implausible"):
        read_scanner_t2_map(tmp_path)


def test_t2_command_imports_scanner_map_with_provenance(tmp_path):
    truth = _t2_ms()
    folder = _write_map(tmp_path / "dicom", np.round(truth * 10), "SIEMENS", "T2Map_MapIt")
    out = tmp_path / "out"
    assert main(["t2", str(folder), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["t2_fit.json", "t2w.nii.gz"]
    info = json.loads((out / "t2_fit.json").read_text())
    assert info["model"] == "scanner"
    assert info["source"] == "scanner mono-exponential T2 (Siemens MapIt)"
    assert "not the EPG water T2" in info["note"]
    assert info["scanner_t2_scale"]["factor_to_ms"] == pytest.approx(0.1)
    import SimpleITK as sitk
    image = sitk.ReadImage(str(out / "t2w.nii.gz"))
    assert np.allclose(sitk.GetArrayFromImage(image), truth, atol=0.051)
    assert image.GetSpacing() == pytest.approx((1.5, 1.5, 5.0))
    # a NIfTI map with --scanner-t2 and an explicit factor
    nifti = write_volume(Volume((truth * 4).astype(np.float32), (1.5, 1.5, 5.0)), tmp_path / "map.nii.gz")
    out2 = tmp_path / "out2"
    assert main(["t2", str(nifti), "--scanner-t2", "--scanner-t2-scale", "0.25", "--out", str(out2)]) == 0
    assert json.loads((out2 / "t2_fit.json").read_text())["scanner_t2_scale"]["reason"] == "factor given"
