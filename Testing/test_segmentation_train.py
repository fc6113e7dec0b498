"""Training: synthetic images from label maps, a short run that checkpoints and resumes."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

from myositis_qmri.io import write_volume
from myositis_qmri.phantom import make_exam
from myositis_qmri.segmentation import synth
from myositis_qmri.segmentation.labels import muscle_index
from myositis_qmri.segmentation.model import read_header
from myositis_qmri.segmentation.train import TrainConfig, checkpoint_path, train


def _label_maps(tmp_path, seeds=(1, 2)):
    paths = []
    for seed in seeds:
        labels = make_exam(seed, "small").muscle_labels
        sideless = np.vectorize(muscle_index)(labels.array).astype(np.uint8)
        paths.append(write_volume(labels.with_array(sideless), tmp_path / f"map{seed}.nii.gz"))
    return paths


def test_synthesized_slices_keep_muscle_targets(tmp_path):
    slices = synth.prepare_leg_slices(_label_maps(tmp_path, (1,)), 2.3, 96)
    assert len(slices.labels) > 0
    # Both legs give crops, each with this leg's muscles (1..11) and the other leg's (OTHER_LEG).
    assert set(np.unique(slices.labels)) >= set(range(1, 12))
    image, target = synth.synthesize(np.random.default_rng(0), slices.labels[0], 96, 2.3)
    assert image.shape == target.shape == (96, 96) and image.dtype == np.float32
    assert target.max() <= 11 and (target > 0).sum() > 100
    # Muscles differ from the background: the image carries the anatomy.
    assert abs(image[target > 0].mean() - image[target == 0].mean()) > 0.01 or image[target > 0].std() > 0


def test_fat_infiltrates_only_muscle_between_muscle_and_fat_signal():
    """Patchy fatty replacement changes muscle pixels only: in-phase draws stay between the muscle
    and fat signals, opposed-phase draws darken where fat and water cancel."""
    tissue = np.full((96, 96), synth.FAT, np.uint8)
    tissue[20:76, 20:76] = 3                       # one muscle
    tissue[40:56, 40:56] = synth.CORTEX
    muscle = tissue == 3
    muscle_signal, fat_signal = 0.3, 0.9
    image = np.where(muscle, muscle_signal, np.where(tissue == synth.FAT, fat_signal, 0.05))
    changed = 0
    for seed in range(30):
        out = synth.infiltrate_fat(np.random.default_rng(seed), image.copy(), tissue, fat_signal, 1.5)
        np.testing.assert_array_equal(out[~muscle], image[~muscle])
        moved = out[muscle] - muscle_signal
        if np.abs(moved).max() > 0.05:
            changed += 1
        in_phase = out[muscle].min() >= muscle_signal - 0.1
        if in_phase:
            assert out[muscle].max() <= fat_signal + 0.1
        else:   # |(1-f) m - f F| dips to about 0 where (1-f) m = f F
            assert out[muscle].min() < muscle_signal - 0.1
    assert changed >= 8     # severities are drawn per muscle, most of them mild


def _one_muscle_in_fat():
    tissue = np.full((96, 96), synth.FAT, np.uint8)
    tissue[20:76, 20:76] = 3
    return tissue


def test_rim_infiltration_is_fattest_at_the_muscle_edge():
    """Fat creeping in from the fascia: over many draws, the muscle's outer ring takes more fat
    than its core (the plain patches show no such gradient)."""
    tissue = _one_muscle_in_fat()
    image = np.where(tissue == 3, 0.0, 1.0)       # muscle 0, fat 1: in-phase output is the fat fraction
    ring = np.zeros_like(tissue, bool)        # 1-5 pixels in: past the opposed-phase dark edge
    ring[21:75, 21:75], ring[26:70, 26:70] = True, False
    core = np.zeros_like(ring)
    core[36:60, 36:60] = True
    outer_minus_core = {}
    for kind in ("patches", "rim"):
        draws = [synth.infiltrate_fat(np.random.default_rng(s), image.copy(), tissue, 1.0, 1.5, (kind,))
                 for s in range(40)]
        outer_minus_core[kind] = np.mean([d[ring].mean() - d[core].mean() for d in draws])
    assert outer_minus_core["rim"] > 0.04 and abs(outer_minus_core["patches"]) < 0.03


def test_streak_infiltration_runs_along_one_direction_per_muscle():
    """Streaks: the fat varies less along the streaks than across them (patches: alike both ways)."""
    tissue = np.zeros((128, 128), np.int64)
    tissue[:] = 3
    field = synth._streak_field(np.random.default_rng(3), tissue, 4.0, n_directions=1)
    gy, gx = np.gradient(field)
    covariance = np.cov(np.stack([gy.ravel(), gx.ravel()]))
    spreads = np.linalg.eigvalsh(covariance)       # gradient spread along / across the streaks
    assert spreads[1] / spreads[0] > 4
    assert abs(field.std() - 1) < 0.05


def test_unknown_infiltration_pattern_is_refused():
    with pytest.raises(ValueError, match="marbling"):
        synth.infiltrate_fat(np.random.default_rng(0), np.zeros((96, 96)), _one_muscle_in_fat(), 1.0, 1.5,
                             ("patches", "marbling"))


def test_fatty_infiltration_share_zero_draws_the_plain_synthesis(tmp_path):
    slices = synth.prepare_leg_slices(_label_maps(tmp_path, (1,)), 2.3, 96)
    plain = synth.synthesize(np.random.default_rng(4), slices.labels[0], 96, 2.3)
    zero = synth.synthesize(np.random.default_rng(4), slices.labels[0], 96, 2.3, fatty_infiltration=0.0)
    always = synth.synthesize(np.random.default_rng(4), slices.labels[0], 96, 2.3, fatty_infiltration=1.0)
    np.testing.assert_array_equal(plain[0], zero[0])
    np.testing.assert_array_equal(plain[1], always[1])          # the anatomy (target) is the same
    assert not np.array_equal(plain[0], always[0])


def test_unlabelled_muscle_beside_adductor_magnus_may_be_adductors():
    """Only unlabelled-muscle blobs within reach of adductor magnus become MAYBE_ADDUCTOR."""
    adductor = synth.ADDUCTOR
    labels = np.zeros((40, 40), np.uint8)
    labels[10:20, 10:20] = adductor
    tissue = labels.copy()
    tissue[10:20, 21:25] = synth.OTHER_MUSCLE     # 1 px from magnus: longus or brevis
    tissue[30:35, 30:35] = synth.OTHER_MUSCLE     # far away: some other unlabelled muscle
    maybe = synth.unlabelled_muscle_beside_adductor(tissue, labels, spacing_mm=1.5)
    assert maybe[10:20, 21:25].all() and not maybe[30:35, 30:35].any() and not maybe[labels > 0].any()
    assert not synth.unlabelled_muscle_beside_adductor(tissue, np.zeros_like(labels), 1.5).any()


def test_unlabelled_adductors_changes_only_the_target(tmp_path):
    slices = synth.prepare_leg_slices(_label_maps(tmp_path, (1,)), 2.3, 96)
    maybe_seen = False
    for index in range(0, len(slices), max(1, len(slices) // 8)):
        plain = synth.synthesize(np.random.default_rng(index), slices.labels[index], 96, 2.3)
        marked = synth.synthesize(np.random.default_rng(index), slices.labels[index], 96, 2.3,
                                  unlabelled_adductors=True)
        np.testing.assert_array_equal(plain[0], marked[0])    # same image: no extra random draws
        changed = plain[1] != marked[1]
        assert (plain[1][changed] == 0).all() and (marked[1][changed] == synth.MAYBE_ADDUCTOR).all()
        maybe_seen |= bool(changed.any())
    assert maybe_seen


def test_short_training_run_resumes(tmp_path):
    maps = _label_maps(tmp_path)
    out = tmp_path / "model.safetensors"
    config = TrainConfig(label_maps=maps, out=out, steps=2, batch_size=2, validate_every=2,
                         n_validation_slices=4, threads=1, fatty_infiltration=0.5)
    state = train(config, resume=False)
    assert state["step"] == 2 and checkpoint_path(out).exists()
    header = read_header(out)
    assert header["provenance"]["steps"] == 2 and "synthetic_validation" in header["metrics"]
    assert header["provenance"]["fatty_infiltration"] == 0.5
    assert header["provenance"]["infiltration_patterns"] == ["patches"]
    config.steps = 3
    state = train(config, resume=True)
    assert state["step"] == 3 and len(state["history"]) == 2


def _disc(radius_px: float, size: int = 64, value: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    return np.where(np.hypot(yy, xx) <= radius_px, value, 0).astype(np.uint8)


def test_slice_between_interpolates_outlines():
    # Concentric discs of radius 8 and 16 px: halfway lies the disc of radius 12 (closed form).
    middle = synth.slice_between(_disc(8), _disc(16))
    radius = np.sqrt((middle == 3).sum() / np.pi)
    assert abs(radius - 12) < 0.6
    # A muscle on one slice only is shrunk halfway by the absent-muscle distance.
    shrunk = synth.slice_between(np.zeros((64, 64), np.uint8), _disc(16))
    expected = 16 - synth.ABSENT_MUSCLE_DISTANCE_PX
    assert abs(np.sqrt((shrunk == 3).sum() / np.pi) - expected) < 0.6
    # Two muscles keep their own labels and never overlap.
    pair = synth.slice_between(_disc(8) + (_disc(20, value=5) * (_disc(8) == 0)), _disc(20, value=5))
    assert set(np.unique(pair)) <= {0, 3, 5} and (pair == 5).sum() > (pair == 3).sum()


def test_slices_between_double_a_label_stack():
    stack = np.stack([_disc(8), _disc(12), np.zeros((64, 64), np.uint8), _disc(16)])
    out = synth.with_slices_between(stack)
    # One new slice per pair of labelled neighbours; none next to the empty slice.
    assert out.shape[0] == 5
    assert np.array_equal(out[0], stack[0]) and np.array_equal(out[2], stack[1])
    assert (out[0] == 3).sum() < (out[1] == 3).sum() < (out[2] == 3).sum()


def test_training_starts_from_a_model_file(tmp_path):
    maps = _label_maps(tmp_path)
    first = TrainConfig(label_maps=maps, out=tmp_path / "first.safetensors", steps=1, batch_size=2,
                        validate_every=1, n_validation_slices=4, threads=1)
    train(first, resume=False)
    second = TrainConfig(label_maps=maps, out=tmp_path / "second.safetensors", steps=1, batch_size=2,
                         validate_every=1, n_validation_slices=4, threads=1, between_slices=True,
                         init_model=first.out, unlabelled_adductors=True)
    train(second, resume=False)      # the synthetic loss is then the marginal one (MAYBE_ADDUCTOR)
    provenance = read_header(second.out)["provenance"]
    assert provenance["between_slices"] is True and provenance["unlabelled_adductors"] is True
    assert read_header(first.out)["provenance"]["unlabelled_adductors"] is False
    assert provenance["initialised_from"]["file"] == "first.safetensors"
    assert provenance["initialised_from"]["provenance"]["steps"] == 1


def test_train_command_refuses_a_crop_the_network_cannot_halve(tmp_path, capsys):
    from myositis_qmri.cli import main
    maps = _label_maps(tmp_path)
    code = main(["train", "--label-maps", str(tmp_path), "--out", str(tmp_path / "m.safetensors"),
                 "--crop-px", "100", "--steps", "1"])
    assert code == 2 and len(maps) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_calf_outlines_become_background_with_bones(calf_roi_folder):
    negatives = synth.prepare_calf_slices(synth.calf_roi_files(calf_roi_folder), 1.5, 96)
    assert len(negatives.labels) == 2                      # one crop per leg
    crop = negatives.labels[0]
    # The calf's muscles are muscle to draw but background to learn; tibia and fibula are drawn.
    assert set(np.unique(crop)) >= {0, synth.OTHER_LEG, synth.CORTEX, synth.MARROW}
    assert crop.max() <= synth.N_TISSUES and not ((crop >= 1) & (crop <= 11)).any()
    image, target = synth.synthesize(np.random.default_rng(1), crop, 96, 1.5)
    assert image.std() > 0 and target.max() == 0


def test_calf_outlines_without_their_image_file_are_refused(calf_roi_folder):
    from myositis_qmri.errors import InputError
    (calf_roi_folder / "t1_example.npz").unlink()
    with pytest.raises(InputError, match="t1_manual_rois.npz.*t1_example.npz"):
        synth.read_calf_rois(calf_roi_folder / "t1_manual_rois.npz")


def test_batches_mix_in_calf_negatives(tmp_path, calf_roi_folder):
    from myositis_qmri.segmentation.train import make_batch
    slices = synth.prepare_leg_slices(_label_maps(tmp_path, (1,)), 2.3, 96)
    negatives = synth.prepare_calf_slices(synth.calf_roi_files(calf_roi_folder), 2.3, 96)
    rng = np.random.default_rng(0)
    _, targets = make_batch(rng, slices, 6, 96, 2.3, [(negatives, 1.0)])
    assert targets.max() == 0
    _, targets = make_batch(rng, slices, 6, 96, 2.3, [(negatives, 0.0)])
    assert all(t.max() > 0 for t in targets)


def test_train_command_learns_calf_outlines_as_negative_anatomy(tmp_path, calf_roi_folder, capsys):
    from myositis_qmri.cli import main
    maps_dir = tmp_path / "maps"
    maps_dir.mkdir()
    _label_maps(maps_dir)
    out = tmp_path / "m.safetensors"
    common = ["train", "--label-maps", str(maps_dir), "--out", str(out), "--steps", "1", "--batch-size", "2",
              "--validate-every", "1", "--threads", "1"]
    assert main(common + ["--calf-rois", str(maps_dir)]) == 2      # a folder without calf outlines
    assert "no *manual_rois*.npz" in capsys.readouterr().err and not out.exists()
    assert main(common + ["--calf-rois", str(calf_roi_folder), "--negative-fraction", "0.5"]) == 0
    negative = read_header(out)["provenance"]["negative_anatomy"]
    assert negative["calf_roi_files"] == ["t1_manual_rois.npz"] and negative["fraction"] == 0.5


def test_negative_image_specs_name_slices_or_are_refused():
    from myositis_qmri.errors import InputError
    assert synth.parse_negative_image("a/b.nii.gz") == (Path("a/b.nii.gz"), None, None)
    assert synth.parse_negative_image("a/b.nii.gz:28-39") == (Path("a/b.nii.gz"), 28, 39)
    for bad in ("b.nii.gz:39-28", "b.nii.gz:x-3", "b.nii.gz:4"):
        with pytest.raises(InputError, match="PATH:FIRST-LAST"):
            synth.parse_negative_image(bad)


def test_negative_image_slices_are_drawn_with_background_targets(pelvis_like_image):
    hips = synth.prepare_negative_image_slices([f"{pelvis_like_image}:1-2"], 2.3, 96)
    # Two slices, cut into one crop per side as at inference (the body is wider than one thigh).
    assert len(hips) in (2, 4) and hips.names == ["pelvis.nii.gz:1-2"]
    assert hips.classes.max() == synth.N_INTENSITY_CLASSES and hips.classes.min() == 0
    # The classes follow brightness: the bright 'hip' is in the top class, the 'bladder' low.
    bright = hips.images[0] >= np.percentile(hips.images[0], 99)
    assert np.median(hips.classes[0][bright]) == synth.N_INTENSITY_CLASSES
    rng = np.random.default_rng(0)
    for index in range(len(hips)):
        image, target = hips.draw(rng, index, 96, 2.3)
        assert image.shape == target.shape == (96, 96) and target.max() == 0 and np.isfinite(image).all()
        assert image.std() > 0.01


def test_negative_image_outside_its_slices_is_refused(pelvis_like_image):
    from myositis_qmri.errors import InputError
    with pytest.raises(InputError, match="pelvis.nii.gz.*slice range 2-9 is outside"):
        synth.prepare_negative_image_slices([f"{pelvis_like_image}:2-9"], 2.3, 96)


def test_train_command_learns_negative_images(tmp_path, pelvis_like_image, capsys):
    from myositis_qmri.cli import main
    from myositis_qmri.segmentation.train import make_batch
    maps_dir = tmp_path / "maps"
    maps_dir.mkdir()
    _label_maps(maps_dir)
    slices = synth.prepare_leg_slices(sorted(maps_dir.iterdir())[:1], 2.3, 96)
    hips = synth.prepare_negative_image_slices([str(pelvis_like_image)], 2.3, 96)
    _, targets = make_batch(np.random.default_rng(1), slices, 4, 96, 2.3, [(hips, 1.0)])
    assert targets.max() == 0
    out = tmp_path / "m.safetensors"
    common = ["train", "--label-maps", str(maps_dir), "--out", str(out), "--steps", "1", "--batch-size", "2",
              "--validate-every", "1", "--threads", "1"]
    assert main(common + ["--negative-image", str(tmp_path / "missing.nii.gz")]) == 2
    assert "missing.nii.gz" in capsys.readouterr().err and not out.exists()
    assert main(common + ["--negative-image", f"{pelvis_like_image}:0-3", "--negative-image-fraction", "0.5"]) == 0
    negative = read_header(out)["provenance"]["negative_images"]
    assert negative["slices"] == ["pelvis.nii.gz:0-3"] and negative["fraction"] == 0.5
    assert negative["sha256"] == {"pelvis.nii.gz": hashlib.sha256(pelvis_like_image.read_bytes()).hexdigest()}
