"""geometry.py: resampling against closed forms, overlap, label alignment with rigid registration."""
import numpy as np
import pytest

from myositis_qmri.errors import InputError
from myositis_qmri.geometry import align_labels_to, overlap_fraction, resample_to
from myositis_qmri.volume import Geometry, Volume


def _rotation_z(deg):
    a = np.deg2rad(deg)
    return (np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a), 0, 0, 0, 1)


def test_linear_resampling_of_a_ramp_is_exact():
    # f(x, y, z) = 2x - y + 0.5z (mm, LPS) is reproduced exactly by linear interpolation.
    source_geometry = Geometry((12, 40, 40), (2.0, 2.0, 3.0), (-40.0, -40.0, -15.0))
    ijk = np.stack(np.meshgrid(np.arange(40), np.arange(40), np.arange(12), indexing="ij"), -1)
    xyz = source_geometry.index_to_physical(ijk.reshape(-1, 3)).reshape(40, 40, 12, 3)
    ramp = (2 * xyz[..., 0] - xyz[..., 1] + 0.5 * xyz[..., 2]).transpose(2, 1, 0)
    source = Volume.on_geometry(ramp.astype(np.float64), source_geometry)
    target = Geometry((5, 20, 20), (1.3, 1.1, 2.0), (-10.0, -8.0, -4.0), _rotation_z(17))
    out = resample_to(source, target, "linear")
    tijk = np.stack(np.meshgrid(np.arange(20), np.arange(20), np.arange(5), indexing="ij"), -1)
    txyz = target.index_to_physical(tijk.reshape(-1, 3)).reshape(20, 20, 5, 3).transpose(2, 1, 0, 3)
    expected = 2 * txyz[..., 0] - txyz[..., 1] + 0.5 * txyz[..., 2]
    assert out.geometry.same_grid(target)
    np.testing.assert_allclose(out.array, expected, atol=1e-6)


def test_nearest_keeps_label_values_and_flipped_grid_matches():
    labels = np.zeros((4, 10, 10), np.int16)
    labels[:, 2:5, 6:9] = 7
    volume = Volume(labels, (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    # The same voxels described with a flipped x axis.
    flipped = Geometry((4, 10, 10), (1.0, 1.0, 5.0), (9.0, 0.0, 0.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    out = resample_to(volume, flipped, "nearest")
    assert out.array.dtype == np.int16
    np.testing.assert_array_equal(out.array, labels[:, :, ::-1])


def test_overlap_fraction():
    a = Geometry((10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert overlap_fraction(a, a) == pytest.approx(1.0)
    shifted = Geometry((10, 10, 10), (1.0, 1.0, 1.0), (5.0, 0.0, 0.0))
    assert overlap_fraction(a, shifted) == pytest.approx(0.5, abs=0.05)
    far = Geometry((10, 10, 10), (1.0, 1.0, 1.0), (500.0, 0.0, 0.0))
    assert overlap_fraction(a, far) == 0.0
    with pytest.raises(InputError, match="do not overlap"):
        align_labels_to(Volume.on_geometry(np.ones((10, 10, 10), np.int16), far), a)


def _blob(centre_mm, shape=(24, 48, 48), spacing=(2.0, 2.0, 2.0)):
    geometry = Geometry(shape, spacing, (-48.0, -48.0, -24.0))
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape[::-1]], indexing="ij"), -1)
    xyz = geometry.index_to_physical(ijk.reshape(-1, 3)).reshape(*shape[::-1], 3).transpose(2, 1, 0, 3)
    d = (xyz - np.asarray(centre_mm)) / np.array([20.0, 14.0, 10.0])
    inside = (d ** 2).sum(-1) < 1
    image = np.where(inside, 100.0, 10.0) + 30 * np.exp(-((xyz[..., 0] - centre_mm[0]) ** 2) / 200)
    return Volume.on_geometry(image.astype(np.float32), geometry), Volume.on_geometry(inside.astype(np.int16), geometry)


def test_align_labels_follows_patient_motion_with_registration():
    fixed_image, fixed_mask = _blob((0.0, 0.0, 0.0))
    moved_image, moved_mask = _blob((6.0, -4.0, 2.0))
    dice = lambda a, b: 2 * (a & b).sum() / (a.sum() + b.sum())  # noqa: E731
    plain = align_labels_to(moved_mask, fixed_image)
    registered = align_labels_to(moved_mask, fixed_image, register_with=moved_image)
    truth = fixed_mask.array > 0
    assert dice(registered.array > 0, truth) > 0.9
    assert dice(registered.array > 0, truth) > dice(plain.array > 0, truth) + 0.05
