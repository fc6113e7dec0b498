"""Core objects: geometry carried with pixels, NIfTI round trips, echo-time units, EPG."""
import json

import numpy as np
import pytest

from myositis_qmri.errors import InputError
from myositis_qmri.io import (echo_times_to_ms, read_echo_series, read_volume, require_uniform_spacing,
                              write_echo_series, write_volume)
from myositis_qmri.maps.epg import cpmg_echo_amplitudes
from myositis_qmri.volume import EchoSeries, Volume

OBLIQUE = tuple(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).ravel())


def test_volume_nifti_round_trip_keeps_geometry(tmp_path):
    arr = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    vol = Volume(arr, (0.8, 0.9, 5.0), (-10.0, 20.0, 30.0), OBLIQUE)
    for name in ("v.nii.gz", "v.nrrd"):
        back = read_volume(write_volume(vol, tmp_path / name))
        np.testing.assert_allclose(back.array, arr)
        assert back.geometry.same_grid(vol.geometry)


def test_index_to_physical_inverts():
    vol = Volume(np.zeros((4, 5, 6)), (0.8, 0.9, 5.0), (-10.0, 20.0, 30.0), OBLIQUE)
    ijk = np.array([[1.0, 2.0, 3.0], [0.5, 4.0, 1.0]])
    np.testing.assert_allclose(vol.geometry.physical_to_index(vol.geometry.index_to_physical(ijk)), ijk)


def test_images_name_their_source_file_for_messages(tmp_path):
    path = write_volume(Volume(np.zeros((2, 3, 4), np.float32)), tmp_path / "t1.nii.gz")
    assert read_volume(path).source_name("image") == str(path)
    assert Volume(np.zeros((2, 3, 4))).source_name("image") == "image"        # made in memory
    assert Volume(np.zeros((2, 3, 4)), metadata={"source_files": []}).source_name("x") == "x"
    series = EchoSeries(np.zeros((2, 1, 3, 4)), (10.0, 20.0), metadata={"source_files": ["a.dcm", "b.dcm"]})
    assert series.source_name() == "a.dcm" and EchoSeries(np.zeros((2, 1, 3, 4)), (10.0, 20.0)).source_name() is None


def test_echo_series_round_trip_with_bids_sidecar(tmp_path):
    arr = np.random.default_rng(1).random((4, 3, 5, 6)).astype(np.float32)
    series = EchoSeries(arr, (10, 20, 30, 40), (1.5, 1.5, 7.0), (1.0, 2.0, 3.0))
    path = write_echo_series(series, tmp_path / "mese.nii.gz")
    assert json.loads((tmp_path / "mese.json").read_text())["EchoTime"] == [0.01, 0.02, 0.03, 0.04]
    back = read_echo_series(path)
    assert back.echo_times_ms == (10, 20, 30, 40)
    np.testing.assert_allclose(back.array, arr)
    assert back.geometry.same_grid(series.geometry)


def test_echo_time_units_detected():
    assert echo_times_to_ms([0.01, 0.02]) == (10.0, 20.0)
    assert echo_times_to_ms([10, 20]) == (10.0, 20.0)
    with pytest.raises(InputError):
        echo_times_to_ms([0, 10])


def test_unequal_echo_spacing_and_single_echo_refused():
    assert require_uniform_spacing([10, 20, 30]) == pytest.approx(10)
    with pytest.raises(InputError, match="not equally spaced"):
        require_uniform_spacing([10, 20, 35])
    with pytest.raises(InputError, match="single echo"):
        require_uniform_spacing([10])


def test_epg_matches_closed_form_for_ideal_refocusing():
    t2 = np.array([20.0, 35.0, 60.0])
    echoes = cpmg_echo_amplitudes(t2, 1.0, 17, 10.0)
    expected = np.exp(-np.arange(1, 18)[None, :] * 10.0 / t2[:, None])
    np.testing.assert_allclose(echoes, expected, atol=1e-12)


def test_epg_imperfect_refocusing_gives_stimulated_echoes():
    ideal = cpmg_echo_amplitudes(35.0, 1.0, 17, 10.0)
    low_b1 = cpmg_echo_amplitudes(35.0, 0.7, 17, 10.0)
    assert low_b1[0] < ideal[0]          # first echo loses signal
    assert low_b1[1] > low_b1[0]         # second echo gains from stimulated echoes
