"""Fat fraction from every input kind: simulated truth, phantom truth, real Dixon data, bad input."""
from __future__ import annotations

import glob

import numpy as np
import pytest
from scipy import ndimage

from myositis_qmri.errors import InputError
from myositis_qmri.maps.dixon import compute_fat_fraction
from myositis_qmri.maps.dixon.simulate import simulate_gre
from myositis_qmri.volume import EchoSeries, Volume


def _series(sim, array=None, kind="complex", **extra):
    return EchoSeries(sim.signal if array is None else array, sim.echo_times_ms, (1.5, 1.5, 5.0),
                      image_kind=kind, field_strength_t=sim.field_t, **extra)


@pytest.fixture(scope="module")
def sim6():
    return simulate_gre((6, 64, 64), snr=50.0, field_amplitude_hz=400.0, seed=1)


def test_multiecho_pdff_slope_bias_and_no_swaps(sim6):
    maps = compute_fat_fraction("multiecho", complex_series=_series(sim6), clockwise=True)
    ff = maps.ff_percent.array
    tissue = sim6.tissue
    truth = 100 * sim6.ff[tissue]
    slope, intercept = np.polyfit(truth, ff[tissue], 1)
    assert abs(slope - 1) <= 0.02
    assert abs(np.mean(ff[tissue] - truth)) <= 1.0
    assert np.count_nonzero(np.abs(ff[tissue] - truth) > 20) == 0   # no swapped voxel anywhere
    assert np.median(np.abs(maps.r2star_per_s.array[tissue] - sim6.r2star[tissue])) < 10
    assert np.median(np.abs(maps.fieldmap_hz.array[tissue] - sim6.field_hz[tissue])) < 3
    assert np.all(ff[~tissue] == 0)                                  # background is 0, not 50 %
    assert maps.metadata["method"] == "multiecho"


def test_counter_clockwise_data_detected_and_conjugated(sim6):
    flipped = _series(sim6, np.conj(sim6.signal))
    maps = compute_fat_fraction("auto", complex_series=flipped)
    assert maps.metadata["precession_clockwise"] is False
    err = maps.ff_percent.array[sim6.tissue] - 100 * sim6.ff[sim6.tissue]
    assert abs(err.mean()) <= 1.0


def _magnitude_phase(sim, echoes, raw_phase=True):
    signal = sim.signal[list(echoes)]
    te = sim.echo_times_ms[list(echoes)]
    magnitude = EchoSeries(np.abs(signal), te, (1.5, 1.5, 5.0), field_strength_t=sim.field_t)
    phase = np.angle(signal)
    if raw_phase:   # Siemens-style 12-bit integers
        phase = np.round((phase + np.pi) / (2 * np.pi) * 4095)
    return magnitude, EchoSeries(phase.astype(np.float32), te, (1.5, 1.5, 5.0), image_kind="phase")


@pytest.mark.parametrize("method,echoes", [("dixon3", (1, 2, 3)), ("dixon2", (0, 1))])
def test_dixon_magnitude_phase_flexible_echo_times(method, echoes):
    sim = simulate_gre((4, 64, 64), snr=80.0, field_amplitude_hz=150.0, seed=2)
    magnitude, phase = _magnitude_phase(sim, echoes)
    maps = compute_fat_fraction("auto", magnitude=magnitude, phase=phase, clockwise=True)
    assert maps.metadata["method"] == method
    tissue = sim.tissue & (sim.r2star < 60)   # these methods do not model R2*
    err = maps.ff_percent.array[tissue] - 100 * sim.ff[tissue]
    assert abs(np.median(err)) <= 2.0
    assert np.mean(np.abs(err) > 25) < 0.002


def test_water_fat_images_noise_floor_and_background():
    rng = np.random.default_rng(3)
    truth = np.zeros((4, 40, 40))
    truth[:, 10:30, 10:20] = 0.0      # pure water muscle
    truth[:, 10:30, 20:30] = 0.6
    body = np.zeros(truth.shape, bool)
    body[:, 10:30, 10:30] = True
    sigma = 5.0
    noisy = lambda a: np.abs(a + rng.normal(0, sigma, a.shape) + 1j * rng.normal(0, sigma, a.shape))
    water = Volume(noisy(np.where(body, 400 * (1 - truth), 0)).astype(np.float32))
    fat = Volume(noisy(np.where(body, 400 * truth, 0)).astype(np.float32))
    maps = compute_fat_fraction("wf", water=water, fat=fat)
    ff = maps.ff_percent.array
    assert abs(np.median(ff[:, 12:28, 12:18])) < 1.0           # no noise-floor FF in pure water
    assert abs(np.median(ff[:, 12:28, 22:28]) - 60) < 1.0
    assert np.all(ff[~body] == 0)                                # background is not ~50 %


@pytest.mark.parametrize("factor,expected", [(0.01, "fraction"), (1.0, "percent"), (10.0, "per-mille")])
def test_vendor_ff_scaling_detected(factor, expected):
    percent = np.zeros((3, 30, 30), np.float32)
    percent[:, 5:25, 5:10] = 92.0
    percent[:, 5:25, 10:25] = 7.5
    maps = compute_fat_fraction("vendor", ff_map=Volume(percent * factor))
    assert maps.metadata["ff_scaling"] == expected
    assert np.allclose(maps.ff_percent.array, percent, atol=1e-3)


def test_vendor_ambiguous_scaling_refused_then_accepted_with_scale():
    stored = np.zeros((3, 30, 30), np.float32)
    stored[:, 5:25, 5:25] = 3000.0
    with pytest.raises(InputError, match="ff-scale"):
        compute_fat_fraction("vendor", ff_map=Volume(stored))
    maps = compute_fat_fraction("vendor", ff_map=Volume(stored), ff_scale=0.01)
    assert maps.ff_percent.array.max() == pytest.approx(30.0)


def test_bad_inputs_are_refused(sim6):
    magnitude, phase = _magnitude_phase(sim6, (0, 1, 2))
    with pytest.raises(InputError, match="phase"):
        compute_fat_fraction("auto", magnitude=magnitude)
    with pytest.raises(InputError, match="phase"):
        compute_fat_fraction("dixon3", magnitude=magnitude)
    with pytest.raises(InputError, match="needs 2 echoes"):
        compute_fat_fraction("dixon2", magnitude=magnitude, phase=phase)
    magnitude4, phase4 = _magnitude_phase(sim6, (0, 1, 2, 3))
    with pytest.raises(InputError, match="needs 3 echoes"):
        compute_fat_fraction("dixon3", magnitude=magnitude4, phase=phase4)
    water = Volume(np.ones((3, 10, 10), np.float32))
    with pytest.raises(InputError, match="grid"):
        compute_fat_fraction("wf", water=water, fat=Volume(np.ones((3, 10, 10), np.float32), origin_mm=(5, 0, 0)))
    no_field = EchoSeries(sim6.signal, sim6.echo_times_ms)
    with pytest.raises(InputError, match="field-t"):
        compute_fat_fraction("multiecho", complex_series=no_field)
    same_phase = EchoSeries(sim6.signal[:3], (2.30, 4.60, 6.90), field_strength_t=3.0)  # main fat peak cycle 2.30 ms at 3 T
    with pytest.raises(InputError, match="same phase"):
        compute_fat_fraction("multiecho", complex_series=same_phase)


def test_phantom_per_muscle_ff_from_every_input_kind():
    phantom = pytest.importorskip("myositis_qmri.phantom")
    exam = phantom.make_exam(0, size="small")
    labels = exam.muscle_labels.array
    truth = exam.ff_percent.array
    gre = exam.gre
    magnitude = gre.replace(array=np.abs(gre.array).astype(np.float32), image_kind="magnitude")
    phase = gre.replace(array=np.angle(gre.array).astype(np.float32), image_kind="phase")
    runs = {
        "multiecho": dict(complex_series=gre),
        "magnitude+phase": dict(magnitude=magnitude, phase=phase),
        "wf": dict(water=exam.vendor_water, fat=exam.vendor_fat),
        "vendor": dict(ff_map=exam.vendor_ff),
    }
    for name, inputs in runs.items():
        ff = compute_fat_fraction("auto", **inputs).ff_percent.array
        for label in np.unique(labels[labels > 0]):
            region = labels == label
            assert abs(np.median(ff[region]) - np.median(truth[region])) <= 1.0, (name, label)


def test_real_three_point_thigh(shared_data):
    from myositis_qmri.io.load import load_magnitude_phase
    files = sorted(glob.glob(str(shared_data / "dixon3pt_thigh_siemens" / "*.nii.gz")))
    magnitude, phase = load_magnitude_phase(files, te_ms=[3.45, 4.60, 5.75])
    maps = compute_fat_fraction("auto", magnitude=magnitude, phase=phase, field_t=3.0)
    ff = maps.ff_percent.array
    body = ndimage.binary_fill_holes(ndimage.binary_closing(ff > 0, np.ones((1, 5, 5))), np.ones((1, 3, 3)))
    erode = lambda m, n: ndimage.binary_erosion(m, np.ones((1, 3, 3)), iterations=n)
    rim = erode(body, 3) & ~erode(body, 8)    # subcutaneous fat: 2.5-6.5 mm under the skin
    interior = erode(body, 25)                # 2 cm inside the skin: muscle with bone and septa
    assert np.median(ff[rim]) > 85
    assert np.median(ff[interior]) < 20
    # A swapped muscle region would read > 80 %: only marrow and septa may.
    assert np.mean(ff[interior] > 80) < 0.2


def test_real_ismrm_case_without_swaps(shared_data):
    from scipy.io import loadmat
    params = loadmat(shared_data / "ismrm2012_fatwater" / "17.mat")["imDataParams"][0, 0]
    images = np.transpose(params["images"][:, :, :, 0, :], (3, 2, 1, 0)).astype(np.complex64)
    series = EchoSeries(images, params["TE"].ravel() * 1000, field_strength_t=float(params["FieldStrength"].ravel()[0]),
                        image_kind="complex")
    mask = np.transpose(params["mask"], (2, 1, 0)).astype(bool)
    toolbox_flag = bool(params["PrecessionIsClockwise"].ravel()[0])
    given = compute_fat_fraction("multiecho", complex_series=series, mask=mask, clockwise=toolbox_flag)
    auto = compute_fat_fraction("multiecho", complex_series=series, mask=mask)
    assert auto.metadata["precession_clockwise"] == toolbox_flag
    ff = given.ff_percent.array
    body = mask & (np.abs(images[0]) > 0.1 * np.percentile(np.abs(images[0][mask]), 95))
    assert np.median(ff[body]) < 50              # muscle dominates the slice and reads low ...
    assert np.percentile(ff[body], 90) > 85      # ... while subcutaneous fat and marrow read high
    # Field map: smooth, no jumps of a water-fat shift between neighbours.
    field = given.fieldmap_hz.array
    jumps = np.abs(np.diff(field, axis=2))[body[:, :, 1:] & body[:, :, :-1]]
    assert np.mean(jumps > 100) < 0.01


def test_cli_on_phantom_dicom_study(tmp_path):
    phantom = pytest.importorskip("myositis_qmri.phantom")
    from myositis_qmri.cli import main
    from myositis_qmri.io.nifti import read_volume
    exam = phantom.make_exam(1, size="small")
    study = phantom.write_exam(exam, tmp_path / "exam")["dicom"]
    labels = exam.muscle_labels.array
    truth = exam.ff_percent.array
    for method in ("auto", "multiecho"):
        out = tmp_path / method
        assert main(["ff", str(study), "--out", str(out), "--method", method]) == 0
        ff = read_volume(out / "ff.nii.gz")
        assert ff.geometry.same_grid(exam.ff_percent.geometry)
        for label in np.unique(labels[labels > 0]):
            region = labels == label
            assert abs(np.median(ff.array[region]) - np.median(truth[region])) <= 1.0, (method, label)
    assert (tmp_path / "multiecho" / "r2star.nii.gz").exists()
    assert main(["ff", "--magnitude", str(tmp_path / "multiecho" / "water.nii.gz"), "--out", str(tmp_path / "x")]) == 2
