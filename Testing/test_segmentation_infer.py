"""Segmentation inference on the phantom: sides, Dice, input geometry, export, bad input."""
import json
import warnings

import numpy as np
import pytest

from myositis_qmri.errors import InputError
from myositis_qmri.phantom import make_exam
from myositis_qmri.segmentation import labels as schema
from myositis_qmri.segmentation.canonical import crop_leg, leg_windows, midline_column, uncrop_leg
from myositis_qmri.segmentation.export import write_segmentation
from myositis_qmri.segmentation.infer import segment_muscles
from myositis_qmri.segmentation.model import default_model_path, dice_per_label
from myositis_qmri.volume import Volume

MIN_MEAN_DICE = 0.5   # shipped model on the phantom T1w (measured value is in the model header notes)


@pytest.fixture(scope="module")
def exam():
    return make_exam(3, "demo")


@pytest.fixture(scope="module")
def segmented(exam):
    default_model_path()  # skips nothing: the shipped model must exist
    return segment_muscles(exam.t1w)


def test_midline_and_leg_crops_round_trip():
    mask = np.zeros((3, 40, 100), bool)
    mask[:, 10:30, 10:40] = True
    mask[:, 12:32, 60:90] = True
    assert 40 <= midline_column(mask) <= 60
    windows = leg_windows(mask)
    assert [w.side for w in windows] == ["right", "left"]
    values = np.arange(3 * 40 * 100, dtype=float).reshape(3, 40, 100)
    for window in windows:
        crop = crop_leg(values, window, 32)
        if window.side == "left":
            assert crop[0, 16, 0] > crop[0, 16, 31]  # mirrored: medial side on the right
        part, (ys, xs) = uncrop_leg(crop[None], window, values.shape)
        np.testing.assert_array_equal(part[0], values[:, ys, xs])


def test_touching_thighs_are_split_but_one_wide_thigh_is_not():
    yy, xx = np.mgrid[0:80, 0:160]
    touching = np.zeros((2, 80, 160), bool)
    for cx in (47, 102):   # 60 px wide, 70 px deep, centres 55 px apart: they overlap
        touching[:, ((yy - 40) / 35) ** 2 + ((xx - cx) / 30) ** 2 <= 1] = True
    assert touching[0, 40, 47:103].all()          # one blob: no empty column between the legs
    pressed_flat = np.zeros((2, 80, 160), bool)   # two thighs squared off against each other: no dip
    pressed_flat[:, 10:70, 20:140] = True
    for both in (touching, pressed_flat):
        assert 70 <= midline_column(both) <= 90
        assert [w.side for w in leg_windows(both)] == ["right", "left"]
    one_thigh = np.zeros((2, 80, 160), bool)
    one_thigh[:, ((yy - 40) / 35) ** 2 + ((xx - 80) / 45) ** 2 <= 1] = True   # 1.3x as wide as deep
    assert midline_column(one_thigh) is None
    assert len(leg_windows(one_thigh)) == 1


def test_real_thighs_pushed_together_are_still_two_legs(shared_data):
    """The real Dixon with its air gap and 32 mm of each thigh's inner side cut out: the thighs
    merge into one blob, and each leg must still get its own 11 muscles."""
    from myositis_qmri.io import read_volume
    image = read_volume(shared_data / "dixon3pt_thigh_siemens" / "0006-Dixon_TE_345_th.nii.gz")
    apart = segment_muscles(image, test_time_augmentation=False).array
    middle, cut = image.array.shape[2] // 2, 46      # columns of 0.8 mm either side of the midline
    keep = np.r_[0:middle - cut, middle + cut:image.array.shape[2]]
    together = segment_muscles(image.with_array(image.array[:, :, keep].copy()),
                               test_time_augmentation=False).array
    assert set(np.unique(together)) == set(range(23))
    dice = dice_per_label(together, apart[:, :, keep], range(1, 23))
    assert np.nanmean(list(dice.values())) > 0.8     # measured 0.87


def test_phantom_sides_and_dice(exam, segmented):
    truth = exam.muscle_labels.array
    out = segmented.array
    assert out.dtype == np.int16 and segmented.geometry.same_grid(exam.t1w.geometry)
    assert set(np.unique(out)) - {0} <= set(range(1, 23))
    # Right muscles lie at smaller LPS x than left ones.
    geometry = segmented.geometry
    xs = {}
    for side, values in (("right", range(1, 12)), ("left", range(12, 23))):
        z, y, x = np.nonzero(np.isin(out, list(values)))
        xs[side] = geometry.index_to_physical(np.stack([x, y, z], 1).astype(float))[:, 0].mean()
    assert xs["right"] < 0 < xs["left"]
    dice = dice_per_label(out, truth, range(1, 23))
    assert np.nanmean(list(dice.values())) > MIN_MEAN_DICE


def test_output_follows_flipped_and_oblique_input(exam, segmented):
    image = exam.t1w
    flipped = Volume(image.array[:, :, ::-1].copy(), image.spacing_mm,
                     image.geometry.index_to_physical(np.array([image.array.shape[2] - 1, 0, 0])),
                     (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    out = segment_muscles(flipped)
    assert out.geometry.same_grid(flipped.geometry)
    agreement = (out.array[:, :, ::-1] == segmented.array)[segmented.array > 0].mean()
    assert agreement > 0.9


def test_export_is_readable_by_slicerio(tmp_path, segmented):
    import slicerio
    paths = write_segmentation(segmented, tmp_path)
    seg = slicerio.read_segmentation(str(paths["seg_nrrd"]))
    by_value = {s["labelValue"]: s for s in seg["segments"]}
    assert len(by_value) == 22
    assert by_value[12]["name"] == "Sartorius (left)"
    assert by_value[3]["terminology"]["typeModifier"][1] == schema.SIDE_CODES["right"].value
    np.testing.assert_allclose(by_value[1]["color"], np.array(schema.LABEL_BY_VALUE[1].colour_rgb) / 255, atol=1e-3)
    np.testing.assert_array_equal(seg["voxels"].transpose(2, 1, 0), segmented.array)
    labels_json = json.loads(paths["labels_json"].read_text())
    assert [l["value"] for l in labels_json["labels"]] == list(range(1, 23))


def test_bad_input_is_refused_or_warned(exam):
    tiny = Volume(np.random.default_rng(0).random((5, 10, 10)), (1.0, 1.0, 5.0))
    with pytest.raises(InputError, match="too small"):
        segment_muscles(tiny)
    with pytest.raises(InputError, match="constant"):
        segment_muscles(Volume(np.zeros((5, 128, 128)), (2.0, 2.0, 5.0)))
    with pytest.raises(InputError, match="3-D"):
        segment_muscles(exam.mese)
    single = Volume(exam.t1w.array[7:8].copy(), exam.t1w.spacing_mm, exam.t1w.origin_mm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = segment_muscles(single)
    assert any("single slice" in str(w.message) for w in caught)
    assert out.array.shape == single.array.shape


def test_segment_command_writes_outputs_in_input_geometry(tmp_path, exam):
    from myositis_qmri.cli import main
    from myositis_qmri.io import read_volume, write_volume
    image_path = write_volume(exam.t1w, tmp_path / "t1w.nii.gz")
    assert main(["segment", str(image_path), "--out", str(tmp_path / "seg")]) == 0
    labels = read_volume(tmp_path / "seg" / "muscles.nii.gz")
    assert labels.geometry.same_grid(exam.t1w.geometry, tol_mm=1e-3)
    assert (tmp_path / "seg" / "muscles.seg.nrrd").exists() and (tmp_path / "seg" / "labels.json").exists()
    assert main(["segment", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "x")]) == 2


def test_test_time_augmentation_undoes_its_shifts():
    """A translation-equivariant network gives the same probabilities with and without the
    shifted passes (rolls are undone exactly); a position-dependent one does not."""
    import torch
    from myositis_qmri.segmentation.infer import TTA_SHIFTS_PX, _leg_probabilities
    crop = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    equivariant = torch.nn.Conv2d(1, 3, 3, padding=1, padding_mode="circular")
    plain = _leg_probabilities(equivariant, crop, None)
    shifted = _leg_probabilities(equivariant, crop, None, TTA_SHIFTS_PX)
    np.testing.assert_allclose(shifted, plain, atol=1e-5)

    class PositionBias(torch.nn.Module):
        def forward(self, x):
            ramp = torch.linspace(0, 5, x.shape[-1])
            return torch.cat([x * 0, x * 0 + ramp], 1)
    plain = _leg_probabilities(PositionBias(), crop, None)
    shifted = _leg_probabilities(PositionBias(), crop, None, TTA_SHIFTS_PX)
    assert np.abs(shifted - plain).max() > 1e-3


def test_long_stacks_go_through_the_network_in_passes_with_progress(monkeypatch):
    """Slices in passes of SLICES_PER_PASS give the probabilities of one pass over all slices, in
    slice order, and the progress counts every slice once."""
    import torch
    from myositis_qmri.segmentation import infer
    crop = np.random.default_rng(1).random((37, 32, 32)).astype(np.float32)
    network = torch.nn.Conv2d(1, 3, 3, padding=1)

    class Counter:
        done = 0

        def update(self, n):
            self.done += n
    whole = infer._leg_probabilities(network, crop, None, infer.TTA_SHIFTS_PX)
    monkeypatch.setattr(infer, "SLICES_PER_PASS", 5)
    counter = Counter()
    passes = infer._leg_probabilities(network, crop, None, infer.TTA_SHIFTS_PX, counter)
    assert passes.shape == (3, 37, 32, 32) and counter.done == 37
    np.testing.assert_allclose(passes, whole, atol=1e-6)


def test_test_time_augmentation_is_recorded_and_no_worse(exam, segmented, tmp_path):
    truth = exam.muscle_labels.array
    single = segment_muscles(exam.t1w, test_time_augmentation=False)
    assert segmented.metadata["test_time_augmentation"] is True
    assert single.metadata["test_time_augmentation"] is False
    with_tta = np.nanmean(list(dice_per_label(segmented.array, truth, range(1, 23)).values()))
    without = np.nanmean(list(dice_per_label(single.array, truth, range(1, 23)).values()))
    assert with_tta >= without - 0.01
    paths = write_segmentation(segmented, tmp_path)
    sidecar = json.loads(paths["sidecar"].read_text())
    assert sidecar["test_time_augmentation"] is True
    # The sidecar names the exact model file that made the masks (a new model means new masks).
    import hashlib
    shipped = default_model_path()
    assert sidecar["model_file"] == shipped.name
    assert sidecar["model_sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert 0.2 < sidecar["thigh_muscle_fraction"] < 0.9              # a thigh: about half the body


def test_neighbouring_slices_vote():
    from myositis_qmri.segmentation.infer import smooth_across_slices
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=(5, 6, 6)).transpose(3, 0, 1, 2)   # (class, z, y, x)
    blended = smooth_across_slices(probs, 0.2)
    np.testing.assert_allclose(blended.sum(0), 1.0, atol=1e-6)          # still probabilities
    np.testing.assert_allclose(blended[:, 2], 0.2 * probs[:, 1] + 0.6 * probs[:, 2] + 0.2 * probs[:, 3], atol=1e-6)
    np.testing.assert_allclose(blended[:, 0], 0.8 * probs[:, 0] + 0.2 * probs[:, 1], atol=1e-6)
    constant = np.repeat(probs[:, :1], 5, axis=1)
    np.testing.assert_allclose(smooth_across_slices(constant), constant, atol=1e-6)
    assert smooth_across_slices(probs[:, :1]) is not None and smooth_across_slices(probs[:, :1]).shape == (4, 1, 6, 6)
    # an outlier slice flanked by agreeing neighbours is outvoted
    votes = np.zeros((2, 3, 1, 1)); votes[0] = 0.7; votes[1] = 0.3
    votes[:, 1] = np.array([0.45, 0.55])[:, None, None]
    assert smooth_across_slices(votes)[:, 1].argmax(0).item() == 0


def test_slices_past_the_thighs_get_no_muscle(exam):
    """Two slices of pure background noise appended to the phantom: nothing is labelled there,
    and the thigh slices keep their muscles."""
    image = exam.t1w
    rng = np.random.default_rng(3)
    background = np.abs(rng.normal(0, 0.02 * float(image.array.max()), (2,) + image.array.shape[1:]))
    extended = Volume(np.concatenate([image.array, background]).astype(np.float32), image.spacing_mm,
                      image.origin_mm, image.direction)
    labels = segment_muscles(extended).array
    assert not labels[-2:].any()
    assert len(np.unique(labels[:-2])) == 23


def test_little_thigh_muscle_is_warned():
    from myositis_qmri.segmentation.infer import (MIN_THIGH_MUSCLE_FRACTION, _warn_if_little_thigh,
                                                  thigh_muscle_fraction)
    body = np.zeros((2, 10, 10), bool); body[:, 2:8, 2:8] = True          # 72 body voxels
    probs = np.zeros((12, 2, 10, 10)); probs[0] = 1.0
    share = int(np.ceil(MIN_THIGH_MUSCLE_FRACTION * 72))                 # just enough muscle
    probs[3].reshape(-1)[np.flatnonzero(body)[:share]] = 2.0
    probs[5, 0, 0, 0] = 2.0                                               # muscle outside the body: not counted
    assert thigh_muscle_fraction(probs, body) == pytest.approx(share / 72)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_if_little_thigh(thigh_muscle_fraction(probs, body), "enough.nii.gz")
    assert not caught
    probs[3].reshape(-1)[np.flatnonzero(body)[share - 1]] = 0.0           # one voxel short
    with pytest.warns(UserWarning, match=r"short.nii.gz: thigh muscles cover only \d+ % of the body"):
        _warn_if_little_thigh(thigh_muscle_fraction(probs, body), "short.nii.gz")


def test_real_calf_is_not_given_thigh_muscles(shared_data):
    """The real calf MESE (never used in training) is a calf, not a thigh: the shipped model,
    trained with calf outlines as negative anatomy, labels little of it and says so; the real
    thigh Dixon keeps its muscles and gets no warning."""
    from myositis_qmri.io import read_volume
    from myositis_qmri.io.dicom import read_dicom
    from myositis_qmri.segmentation.canonical import body_mask
    calf = read_dicom(shared_data / "mese_calf_siemens_enhanced").series[0].to_echo_series().echo(0)
    with pytest.warns(UserWarning, match="is this a thigh series"):
        labels = segment_muscles(calf, test_time_augmentation=False).array
    body = body_mask(calf.array)
    assert (labels > 0).sum() / body.sum() < 0.15
    thigh = read_volume(shared_data / "dixon3pt_thigh_siemens" / "0006-Dixon_TE_345_th.nii.gz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = segment_muscles(thigh, test_time_augmentation=False).array
    assert not any("thigh series" in str(w.message) for w in caught)
    assert (labels > 0).sum() / body_mask(thigh.array).sum() > 0.4


def test_real_pelvis_slices_get_no_thigh_labels(musclemap_data):
    """musclemap's B1-mapping spin echo (FA 120) runs from the thigh (slices 0-20) into the hip
    and pelvis (28-39). The model before g labelled 83 cm2 per pelvis slice (gluteal muscles as
    vastus lateralis); g learnt pelvis slices 32-39 of the same subject's FA 60 series."""
    from myositis_qmri.io import read_volume
    image = read_volume(musclemap_data / "b1" / "input" / "se_fa120.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        labels = segment_muscles(image, test_time_augmentation=False).array
    area_cm2 = (labels > 0).sum(axis=(1, 2)) * image.spacing_mm[0] * image.spacing_mm[1] / 100
    assert area_cm2[28:].mean() < 5
    assert area_cm2[:21].mean() > 70


def test_a_thigh_is_not_warned_about(exam):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segment_muscles(exam.t1w, test_time_augmentation=False)
    assert not any("thigh series" in str(w.message) or "unsure" in str(w.message) for w in caught)


def test_slice_range_segments_only_those_slices(exam, tmp_path):
    image = exam.t1w
    full = segment_muscles(image, test_time_augmentation=False).array
    part = segment_muscles(image, test_time_augmentation=False, slice_range=(4, 15))
    assert part.array.shape == full.shape and part.metadata["slice_range"] == [4, 15]
    assert not part.array[:4].any() and not part.array[16:].any()
    # Inside the range the same muscles, in the same place (the range's end slices lose one
    # neighbour's vote, so not voxel for voxel).
    dice = dice_per_label(part.array[4:16], full[4:16], range(1, 23))
    assert np.nanmean(list(dice.values())) > 0.95
    with pytest.raises(InputError, match="slice range 4-99 is outside the image's slices 0-"):
        segment_muscles(image, slice_range=(4, 99))
    paths = write_segmentation(part, tmp_path)
    assert json.loads(paths["sidecar"].read_text())["slice_range"] == [4, 15]


def test_outline_confidence_is_the_mean_probability_of_each_label():
    from myositis_qmri.segmentation.infer import outline_confidence
    labels = np.zeros((1, 4, 4), np.int16)
    labels[0, :2] = 1
    labels[0, 2:, :2] = 13
    probability = np.full(labels.shape, 0.99, np.float32)
    probability[0, 0] = [0.5, 0.6, 0.7, 0.8]          # half of sartorius (R) hesitant
    probability[0, 2:, :2] = 0.9
    confidence = outline_confidence(labels, probability)
    assert confidence == {"sartorius_R": round((0.5 + 0.6 + 0.7 + 0.8 + 4 * 0.99) / 8, 3),
                          "rectus_femoris_L": 0.9}           # background and empty labels left out


def test_outline_confidence_travels_with_the_masks_until_they_are_edited(tmp_path, segmented):
    """The segment command records its confidence beside the masks; a report on those masks reads it
    back, and on the same masks once edited (the reviewer has seen them) no longer does."""
    from myositis_qmri.io import read_volume, write_volume
    from myositis_qmri.report import quality
    assert set(segmented.metadata["outline_confidence"]) == {schema.LABEL_BY_VALUE[v].key
                                                              for v in np.unique(segmented.array) if v}
    write_segmentation(segmented, tmp_path)
    masks = read_volume(tmp_path / "muscles.nii.gz")
    assert quality.outline_confidence(masks) == segmented.metadata["outline_confidence"]
    edited = masks.array.copy()
    edited[np.nonzero(edited == 3)[0][0], np.nonzero(edited == 3)[1][0], np.nonzero(edited == 3)[2][0]] = 0
    write_volume(masks.with_array(edited), tmp_path / "muscles.nii.gz")
    assert quality.outline_confidence(read_volume(tmp_path / "muscles.nii.gz")) == {}


def test_outlines_the_network_was_unsure_of_are_warned_by_name():
    from myositis_qmri.segmentation.infer import MIN_OUTLINE_CONFIDENCE, _warn_if_unsure
    with pytest.warns(UserWarning, match=r"thigh.nii.gz: the network was unsure of the outlines of "
                                         r"Adductor group \(left\) 0.70: check"):
        _warn_if_unsure({"adductors_L": 0.7, "sartorius_R": MIN_OUTLINE_CONFIDENCE}, "thigh.nii.gz")
