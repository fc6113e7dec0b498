"""The synthetic thigh exam: determinism, anatomy, truth, closed-form signals and its DICOM."""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from myositis_qmri.io.dicom import read_dicom
from myositis_qmri.io.kinds import ImageKind, SeriesClass
from myositis_qmri.io.nifti import read_volume
from myositis_qmri.maps.epg import cpmg_echo_amplitudes
from myositis_qmri.maps.fat_spectrum import fat_phasor
from myositis_qmri.maps.relaxation import FAT_T1_MS, FAT_T2_MS, WATER_T1_MS
from myositis_qmri.phantom import TRUTH_TABLE, make_exam, write_exam
from myositis_qmri.phantom import anatomy as A
from myositis_qmri.phantom import signals as S
from myositis_qmri.segmentation.labels import LABELS, label_value

pytestmark = pytest.mark.dicom

SERIES_FILES = {"01_T1w_TSE": 1, "02_MESE": 17, "03_GRE_M": 6, "04_GRE_P": 6,
                "05_Dixon_W": 1, "06_Dixon_F": 1, "07_Dixon_FF": 1}


@pytest.fixture(scope="module")
def exam():
    return make_exam(seed=0, size="small")


@pytest.fixture(scope="module")
def written(exam, tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    return {flavour: write_exam(exam, root / flavour, flavour) for flavour in ("classic", "enhanced")}


def _centroid_x_y_mm(exam, value):
    k, j, i = np.nonzero(exam.muscle_labels.array == value)
    xyz = exam.geometry.index_to_physical(np.stack([i, j, k], axis=-1))
    return xyz[:, 0].mean(), xyz[:, 1].mean()


def test_same_seed_same_exam_other_seed_differs():
    first, second = make_exam(5, "small"), make_exam(5, "small")
    for name in ("muscle_labels", "tissue_labels", "b1", "vendor_ff", "t1w"):
        np.testing.assert_array_equal(getattr(first, name).array, getattr(second, name).array)
    np.testing.assert_array_equal(first.mese.array, second.mese.array)
    np.testing.assert_array_equal(first.gre.array, second.gre.array)
    other = make_exam(6, "small")
    assert not np.array_equal(first.muscle_labels.array, other.muscle_labels.array)


def test_every_muscle_on_both_sides_in_plausible_places(exam):
    labels = exam.muscle_labels.array
    assert set(np.unique(labels)) == {0} | {label.value for label in LABELS}
    assert np.all(exam.tissue_labels.array[labels > 0] == A.MUSCLE)
    assert np.all(labels[exam.tissue_labels.array != A.MUSCLE] == 0)
    for side, lateral in (("right", -1.0), ("left", 1.0)):
        femur_x, femur_y = _centroid_x_y_mm_of_tissue(exam, side)
        vl_x, _ = _centroid_x_y_mm(exam, label_value(3, side))
        am_x, am_y = _centroid_x_y_mm(exam, label_value(6, side))
        _, rf_y = _centroid_x_y_mm(exam, label_value(2, side))
        _, bfl_y = _centroid_x_y_mm(exam, label_value(8, side))
        assert lateral * (vl_x - femur_x) > 20          # vastus lateralis lateral to the femur
        assert lateral * (am_x - femur_x) < -5          # adductor magnus medial
        assert rf_y < femur_y - 20                      # rectus femoris anterior (LPS: -y)
        assert bfl_y > femur_y + 15 and am_y > femur_y  # hamstrings and adductor posterior
        bfs = labels == label_value(11, side)
        assert bfs[0].any() and not bfs[-1].any()       # short head only distally (z index 0)


def _centroid_x_y_mm_of_tissue(exam, side):
    k, j, i = np.nonzero(exam.tissue_labels.array == A.MARROW)
    xyz = exam.geometry.index_to_physical(np.stack([i, j, k], axis=-1))
    on_side = xyz[:, 0] < 0 if side == "right" else xyz[:, 0] > 0
    return xyz[on_side, 0].mean(), xyz[on_side, 1].mean()


def test_truth_is_sane_and_matches_the_maps(exam):
    assert len(exam.truth) == 22
    for value, entry in exam.truth.items():
        mask = exam.muscle_labels.array == value
        assert np.all(exam.water_t2_ms.array[mask] == entry["water_t2_ms"])
        assert np.all(exam.ff_percent.array[mask] == entry["ff_percent"])
        assert min(abs(entry["water_t2_ms"] - edge) for edge in (36.4, 42, 48)) >= 2.5
        assert min(abs(entry["ff_percent"] - edge) for edge in (10, 30, 60, 90)) >= 4
    right = [exam.truth[v]["water_t2_ms"] for v in range(1, 12)]
    left = [exam.truth[v]["water_t2_ms"] for v in range(12, 23)]
    assert right != left and max(right) > 36.4 and min(right) < 36.4
    assert exam.truth[1]["name"] == "Sartorius (right)"
    assert (exam.truth[1]["water_t2_ms"], exam.truth[1]["ff_percent"]) == TRUTH_TABLE["right"][0]
    b1 = exam.b1.array
    assert b1.min() == pytest.approx(0.7) and b1.max() == pytest.approx(1.15)
    assert 100 <= np.abs(exam.b0_hz.array).max() <= 150
    # vendor FF is noisy around the truth, per muscle well within a point
    for value, entry in exam.truth.items():
        assert exam.vendor_ff.array[exam.muscle_labels.array == value].mean() == pytest.approx(entry["ff_percent"], abs=1)


def test_mese_at_unit_b1_is_biexponential():
    exam = make_exam(0, "small", noise=False, b1_range=(1.0, 1.0))
    te = np.asarray(exam.mese.echo_times_ms)
    for value in (2, 17):      # an edematous and a fatty muscle
        entry = exam.truth[value]
        k, j, i = np.argwhere(exam.muscle_labels.array == value)[0]
        f = entry["ff_percent"] / 100
        expected = S.SIGNAL_SCALE * ((1 - f) * np.exp(-te / entry["water_t2_ms"]) + f * np.exp(-te / FAT_T2_MS))
        np.testing.assert_allclose(exam.mese.array[:, k, j, i], np.round(expected), atol=0.5)


def test_mese_follows_epg_at_each_voxels_b1_and_gre_the_fat_model():
    exam = make_exam(0, "small", noise=False)
    mask = exam.muscle_labels.array == 8
    k, j, i = np.argwhere(mask)[len(np.argwhere(mask)) // 2]
    b1, t2 = exam.b1.array[k, j, i], exam.water_t2_ms.array[k, j, i]
    f = exam.ff_percent.array[k, j, i] / 100
    n, esp = exam.mese.n_echoes, exam.mese_echo_spacing_ms
    expected = S.SIGNAL_SCALE * ((1 - f) * cpmg_echo_amplitudes(t2, b1, n, esp, WATER_T1_MS)
                                 + f * cpmg_echo_amplitudes(FAT_T2_MS, b1, n, esp, FAT_T1_MS))
    np.testing.assert_allclose(exam.mese.array[:, k, j, i], expected, atol=0.6)
    assert abs(b1 - 1.0) > 0.01 and not np.allclose(expected, expected[0] * np.exp(-(np.arange(n)) * esp / t2))

    te = np.asarray(exam.gre.echo_times_ms)
    r2s, b0 = exam.r2star_per_s.array[k, j, i], exam.b0_hz.array[k, j, i]
    model = S.SIGNAL_SCALE * ((1 - f) + f * fat_phasor(te, 3.0)) * np.exp((-r2s + 2j * np.pi * b0) * te / 1000)
    measured = exam.gre.array[:, k, j, i]
    # the initial phase is common to all echoes; remove it, then compare
    measured = measured * np.exp(-1j * (np.angle(measured[0]) - np.angle(model[0])))
    np.testing.assert_allclose(np.abs(measured), np.abs(model), atol=0.6)
    np.testing.assert_allclose(np.angle(measured * np.conj(model)), 0, atol=4 * np.pi / 4096)


def test_classic_dicom_counts_headers_and_geometry(exam, written):
    nz = exam.geometry.shape_zyx[0]
    series = written["classic"]["series"]
    assert {name: len(files) for name, files in series.items()} == {k: v * nz for k, v in SERIES_FILES.items()}
    study_uids, series_uids = set(), set()
    for name, files in series.items():
        datasets = [pydicom.dcmread(f) for f in files]
        first = datasets[0]
        assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert UID(first.SOPInstanceUID).is_valid and UID(first.SeriesInstanceUID).is_valid
        study_uids.add(first.StudyInstanceUID)
        series_uids.add(first.SeriesInstanceUID)
        assert (first.Rows, first.Columns) == exam.geometry.shape_zyx[1:]
        assert [float(v) for v in first.PixelSpacing] == [exam.geometry.spacing_mm[1], exam.geometry.spacing_mm[0]]
        z_positions = sorted({float(ds.ImagePositionPatient[2]) for ds in datasets})
        assert len(z_positions) == nz
        np.testing.assert_allclose(np.diff(z_positions), exam.geometry.spacing_mm[2])
        lowest = min(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
        np.testing.assert_allclose([float(v) for v in lowest.ImagePositionPatient], exam.geometry.origin_mm)
    assert len(study_uids) == 1 and len(series_uids) == len(series)
    mese = [pydicom.dcmread(f) for f in series["02_MESE"]]
    assert mese[0].MRAcquisitionType == "3D" and list(mese[0].ImageType[:3]) == ["ORIGINAL", "PRIMARY", "M"]
    assert sorted({float(ds.EchoTime) for ds in mese}) == list(exam.mese.echo_times_ms)
    phase = pydicom.dcmread(series["04_GRE_P"][0])
    assert phase.ImageType[2] == "P" and phase.pixel_array.max() <= 4095
    ff = pydicom.dcmread(series["07_Dixon_FF"][nz // 2])
    assert ff.ImageType[0] == "DERIVED" and float(ff.RescaleSlope) == pytest.approx(0.1)


def test_enhanced_dicom_frames_and_functional_groups(exam, written):
    nz = exam.geometry.shape_zyx[0]
    series = written["enhanced"]["series"]
    assert all(len(files) == 1 for files in series.values())
    mese = pydicom.dcmread(series["02_MESE"][0])
    assert mese.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1"
    assert int(mese.NumberOfFrames) == 17 * nz
    shared = mese.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    frames = mese.PerFrameFunctionalGroupsSequence
    echo_times = [f.MREchoSequence[0].EffectiveEchoTime for f in frames]
    assert sorted(set(echo_times)) == list(exam.mese.echo_times_ms)
    positions = {tuple(float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient) for f in frames}
    assert len(positions) == nz
    assert frames[0].MRImageFrameTypeSequence[0].FrameType[2] == "M"
    assert frames[0].FrameContentSequence[0].InStackPositionNumber == 1
    assert mese.pixel_array.shape == (17 * nz,) + exam.geometry.shape_zyx[1:]
    ff = pydicom.dcmread(series["07_Dixon_FF"][0])
    assert float(ff.PerFrameFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope) == 0.1


@pytest.mark.parametrize("flavour", ["classic", "enhanced"])
def test_dicom_reads_back_to_the_exam(exam, written, flavour):
    scan = read_dicom([written[flavour]["dicom"]])
    assert not scan.problems
    by_class = {}
    for series in scan.series:
        by_class.setdefault(series.series_class, []).append(series)
    mese = by_class[SeriesClass.MESE][0].to_echo_series(ImageKind.MAGNITUDE)
    assert mese.geometry.same_grid(exam.geometry)
    assert mese.echo_times_ms == exam.mese.echo_times_ms
    np.testing.assert_array_equal(mese.array, exam.mese.array)
    ff = by_class[SeriesClass.VENDOR_FF][0].to_volume(ImageKind.FAT_FRACTION)
    assert ff.geometry.same_grid(exam.geometry)
    np.testing.assert_allclose(ff.array, exam.vendor_ff.array, atol=1e-3)
    gre = {k: s for s in by_class[SeriesClass.MULTIECHO_GRE] for k in s.image_kinds}
    magnitude = gre[ImageKind.MAGNITUDE].to_echo_series(ImageKind.MAGNITUDE)
    phase = gre[ImageKind.PHASE].to_echo_series(ImageKind.PHASE)
    np.testing.assert_allclose(magnitude.array * np.exp(1j * phase.array), exam.gre.array, atol=0.01)
    assert by_class[SeriesClass.T1W][0].to_volume().geometry.same_grid(exam.geometry)


def test_truth_nifti_and_json(exam, written):
    truth = written["classic"]["truth"]
    labels = read_volume(truth["muscle_labels"])
    assert labels.geometry.same_grid(exam.geometry)
    np.testing.assert_array_equal(labels.array, exam.muscle_labels.array)
    np.testing.assert_allclose(read_volume(truth["water_t2_ms"]).array, exam.water_t2_ms.array)
    info = json.loads(truth["truth_json"].read_text())
    assert info["muscles"]["8"]["water_t2_ms"] == exam.truth[8]["water_t2_ms"]
    assert info["muscles"]["8"]["volume_ml"] > 0
    assert info["tissue_codes"][str(A.MUSCLE)] == "muscle"
