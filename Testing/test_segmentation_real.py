"""Learning from group tracings (the marginal loss), the fixed real validation split, and accuracy on
real labelled thighs (skipped without ../shared/data)."""
import numpy as np
import pytest
import torch

from myositis_qmri.errors import InputError
from myositis_qmri.io import read_volume
from myositis_qmri.phantom import make_exam
from myositis_qmri.segmentation.labels import LEFT_OFFSET, MUSCLE_BY_KEY, OAI_GROUPS, THIGH11, label_value
from myositis_qmri.segmentation.losses import fine_matrix_with_maybe, group_matrix, marginal_dice_ce
from myositis_qmri.segmentation.real import (IGNORE, OAI_FOLDER, check_scheme_values, group_dice, oai_split,
                                             pooled_confidence, prepare_real_cases, prepare_real_slices,
                                             sartorius_behind_gracilis)

needs_oai = pytest.mark.skipif(not OAI_FOLDER.is_dir(), reason="../shared/data/oai_thigh_t1 is absent")
VASTI, FEMUR = 2, 3


def test_group_matrix_sums_the_vasti_and_makes_the_femur_background():
    matrix = group_matrix(OAI_GROUPS)
    vasti = [MUSCLE_BY_KEY[k].index for k in ("vastus_lateralis", "vastus_intermedius", "vastus_medialis")]
    assert np.flatnonzero(matrix[VASTI]).tolist() == sorted(vasti)
    assert np.flatnonzero(matrix[FEMUR]).tolist() == [0]
    assert np.flatnonzero(matrix[0]).tolist() == [0]
    # Every fine class belongs to exactly one group: the group probabilities still sum to one.
    assert (matrix.sum(axis=0) >= 1).all()
    assert np.array_equal(group_matrix(None), np.eye(12, dtype=np.float32))


def test_thigh11_leaves_adductor_longus_and_brevis_to_the_unlabelled_voxels():
    """Its 6 is adductor magnus alone: an unlabelled voxel may be background or the adductor group."""
    matrix = group_matrix(THIGH11)
    adductors = MUSCLE_BY_KEY["adductors"].index
    assert np.flatnonzero(matrix[0]).tolist() == [0, adductors]
    assert np.array_equal(matrix[1:], np.eye(12, dtype=np.float32)[1:])
    unlabelled = torch.zeros((1, 1, 8, 8), dtype=torch.int64)
    as_adductor = marginal_dice_ce(_logits(np.full((8, 8), adductors)), unlabelled, matrix)
    as_sartorius = marginal_dice_ce(_logits(np.full((8, 8), MUSCLE_BY_KEY["sartorius"].index)), unlabelled, matrix)
    assert float(as_adductor) < 0.01 < 1.0 < float(as_sartorius)
    # Magnus traced, longus and brevis beside it unlabelled: the adductor group over both is no error.
    target = torch.zeros((1, 1, 8, 8), dtype=torch.int64)
    target[..., :, :4] = adductors
    assert float(marginal_dice_ce(_logits(np.full((8, 8), adductors)), target, matrix)) < 0.01


def test_maybe_adductor_target_accepts_background_or_adductors_only():
    """Synthetic unlabelled muscle beside adductor magnus (fine_matrix_with_maybe): calling it background
    or adductors costs nothing, calling it sartorius does."""
    adductors, sartorius = MUSCLE_BY_KEY["adductors"].index, MUSCLE_BY_KEY["sartorius"].index
    matrix = fine_matrix_with_maybe(12, adductors)
    assert np.array_equal(matrix[:12], np.eye(12, dtype=np.float32))
    assert np.flatnonzero(matrix[12]).tolist() == [0, adductors]
    target = torch.zeros((1, 1, 8, 8), dtype=torch.int64)
    target[..., :, :4] = adductors
    target[..., :, 4:6] = 12
    truth = np.where(np.arange(8) < 4, adductors, 0)[None, :].repeat(8, 0)
    for guess in (0, adductors):
        prediction = truth.copy()
        prediction[:, 4:6] = guess
        assert float(marginal_dice_ce(_logits(prediction), target, matrix)) < 0.01
    prediction = truth.copy()
    prediction[:, 4:6] = sartorius
    assert float(marginal_dice_ce(_logits(prediction), target, matrix)) > 0.5


def test_a_perfect_prediction_of_a_traced_femur_costs_nothing():
    """The femur is traced but is background: left to the cross entropy, not scored as a group."""
    target = np.zeros((8, 8), np.int64)
    target[2:6, 2:6] = FEMUR
    target[6:, :] = VASTI
    prediction = np.where(target == VASTI, MUSCLE_BY_KEY["vastus_lateralis"].index, 0)
    loss = marginal_dice_ce(_logits(prediction), torch.from_numpy(target)[None, None], group_matrix(OAI_GROUPS))
    assert float(loss) < 0.01


def _logits(classes_yx, n_classes=12, strength=8.0):
    logits = torch.full((1, n_classes) + classes_yx.shape, -strength)
    for c in np.unique(classes_yx):
        logits[0, int(c)][torch.from_numpy(classes_yx == c)] = strength
    return logits


def test_marginal_loss_does_not_care_which_vastus_carries_the_vasti():
    target = np.zeros((8, 8), np.int64)
    target[2:6, 2:6] = VASTI
    as_lateralis, as_medialis = np.zeros((8, 8)), np.zeros((8, 8))
    as_lateralis[2:6, 2:6] = MUSCLE_BY_KEY["vastus_lateralis"].index
    as_medialis[2:6, 2:6] = MUSCLE_BY_KEY["vastus_medialis"].index
    t = torch.from_numpy(target)[None, None]
    matrix = group_matrix(OAI_GROUPS)
    a = marginal_dice_ce(_logits(as_lateralis), t, matrix)
    b = marginal_dice_ce(_logits(as_medialis), t, matrix)
    wrong = np.zeros((8, 8))
    wrong[2:6, 2:6] = MUSCLE_BY_KEY["sartorius"].index
    c = marginal_dice_ce(_logits(wrong), t, matrix)
    assert float(a) == pytest.approx(float(b), abs=1e-6)
    assert float(a) < 0.01 < 1.0 < float(c)


def test_marginal_loss_gives_no_gradient_where_the_target_is_ignored():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 10, (1, 1, 8, 8))
    target[..., :, 4:] = IGNORE
    logits = torch.tensor(rng.normal(0, 1, (1, 12, 8, 8)), requires_grad=True)
    marginal_dice_ce(logits, torch.from_numpy(target), group_matrix(OAI_GROUPS)).backward()
    assert torch.all(logits.grad[..., 4:] == 0)
    assert torch.any(logits.grad[..., :4] != 0)


def test_labels_outside_the_scheme_are_refused_with_the_values_found():
    exam = make_exam(3, "small")
    labels = exam.muscle_labels.with_array(np.where(exam.muscle_labels.array > 0, 17, 0).astype(np.int16))
    with pytest.raises(InputError, match=r"label values \[17\] are not in the oai-groups scheme"):
        check_scheme_values(labels, OAI_GROUPS)
    check_scheme_values(labels, None)       # 17 is a muscle of the project's own schema


def _sideless(labels):
    """Labels with 1..11 on both legs (the thigh11 convention)."""
    return labels.with_array(np.where(labels.array > LEFT_OFFSET, labels.array - LEFT_OFFSET,
                                      labels.array).astype(np.int16))


def test_real_cases_read_thigh11_labels_on_both_legs(tmp_path):
    from myositis_qmri.io import write_volume
    exam = make_exam(3, "small")
    image, labels = tmp_path / "water.nii.gz", tmp_path / "labels.nii.gz"
    write_volume(exam.t1w, image)
    write_volume(_sideless(exam.muscle_labels), labels)
    real = prepare_real_cases([(image, labels)], "thigh11", 1.5, 160)
    per_leg = len(np.flatnonzero((exam.muscle_labels.array > 0).any(axis=(1, 2))))
    assert len(real) == 2 * per_leg                     # both legs of every labelled slice
    assert set(np.unique(real.targets).tolist()) == {IGNORE, *range(0, 12)}
    assert real.names == [f"{tmp_path.name}/water.nii.gz"]
    sided = tmp_path / "sided.nii.gz"          # left leg 12-22: not thigh11
    write_volume(exam.muscle_labels, sided)
    with pytest.raises(InputError, match=r"sided.nii.gz.*label values \[1[2-9]"):
        prepare_real_cases([(image, sided)], "thigh11", 1.5, 160)


def test_train_reads_real_cases_as_scheme_image_and_labels(tmp_path):
    import argparse

    from myositis_qmri.commands.train import _real_case
    image = tmp_path / "water.nii.gz"
    image.write_bytes(b"")
    assert _real_case(f"thigh11:{image}:{image}") == ("thigh11", image, image)
    with pytest.raises(argparse.ArgumentTypeError, match="SCHEME one of oai-groups, thigh11"):
        _real_case(f"fine:{image}:{image}")
    with pytest.raises(argparse.ArgumentTypeError, match="missing.nii.gz: file not found"):
        _real_case(f"thigh11:{image}:{tmp_path / 'missing.nii.gz'}")


def test_labels_that_miss_their_image_are_refused_naming_both_files(tmp_path):
    from myositis_qmri.segmentation.finetune import case_slices
    from myositis_qmri.segmentation.model import default_model_path, read_header
    exam = make_exam(3, "small")
    image = exam.t1w.with_array(exam.t1w.array, source_files=["t1w.nii.gz"])
    far = exam.muscle_labels.with_array(exam.muscle_labels.array, source_files=["labels.nii.gz"])
    far.origin_mm = tuple(np.array(far.origin_mm) + 5000.0)
    with pytest.raises(InputError, match="labels.nii.gz.*t1w.nii.gz"):
        case_slices(image, far, read_header(default_model_path()))


def _as_oai_groups(labels):
    """A phantom's right-leg muscles traced as the OAI groups (left leg untraced)."""
    scheme_of = {label_value(m, "right"): value for value, muscles in OAI_GROUPS.muscle_groups().items()
                 for m in muscles}
    array = np.vectorize(lambda v: scheme_of.get(int(v), 0), otypes=[np.int16])(labels.array)
    return labels.with_array(array)


def test_finetune_learns_from_group_labels(tmp_path):
    from myositis_qmri.segmentation.finetune import finetune, phantom_replay
    from myositis_qmri.segmentation.model import default_model_path, read_header
    source = default_model_path()
    header = read_header(source)
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    exam = make_exam(11, "demo")
    groups = _as_oai_groups(exam.muscle_labels)
    result = finetune(source, exam.t1w, groups, tmp_path / "tuned.safetensors", slices=[2, 6, 10], steps=6,
                      batch_size=4, replay=phantom_replay(seeds=(101,), spacing_mm=spacing, size=size),
                      seed=0, scheme=OAI_GROUPS)
    assert read_header(tmp_path / "tuned.safetensors")["provenance"]["label_scheme"] == "oai-groups"
    # The group Dice before tuning is already that of a working model, read through the groups.
    assert result["before"]["case_other_slices"] > 0.7
    assert result["after"]["case_other_slices"] > 0.7


def test_group_dice_reads_only_the_traced_side():
    exam = make_exam(3, "small")
    groups = _as_oai_groups(exam.muscle_labels)
    perfect = group_dice(exam.muscle_labels, groups, OAI_GROUPS)
    assert all(d == pytest.approx(1.0) for d in perfect.values())
    # Muscles given to the wrong side count as missed.
    flipped = exam.muscle_labels.with_array(np.where((exam.muscle_labels.array > 0)
                                                     & (exam.muscle_labels.array <= LEFT_OFFSET),
                                                     exam.muscle_labels.array + LEFT_OFFSET, 0).astype(np.int16))
    assert all(d == 0 for d in group_dice(flipped, groups, OAI_GROUPS).values())


def test_a_tracing_with_sartorius_and_gracilis_swapped_is_flagged():
    groups = _as_oai_groups(make_exam(3, "small").muscle_labels)
    assert not sartorius_behind_gracilis(groups)
    array = groups.array.copy()
    array[groups.array == 4], array[groups.array == 5] = 5, 4
    assert sartorius_behind_gracilis(groups.with_array(array))


@needs_oai
def test_one_shared_oai_tracing_has_sartorius_and_gracilis_swapped():
    from myositis_qmri.segmentation.real import oai_subjects
    flagged = [s for s in oai_subjects() if sartorius_behind_gracilis(read_volume(s / "labels.nii.gz"))]
    assert len(flagged) == 1 and flagged[0] in oai_split()[1]


@needs_oai
def test_validation_split_is_fixed_and_never_trained_on():
    training, validation = oai_split()
    assert len(validation) >= 20
    assert not set(training) & set(validation)
    assert [p.name for p in validation] == sorted(p.name for p in validation)
    assert validation == oai_split()[1]


@needs_oai
def test_real_slices_carry_group_targets_and_ignore_outside_the_view():
    training, _ = oai_split()
    real = prepare_real_slices(training[:1], "oai-groups", 1.5, 160)
    values = set(np.unique(real.targets).tolist())
    assert {0, 1, VASTI, 6, IGNORE} <= values and FEMUR not in values
    image, target = real.draw(np.random.default_rng(0), 3, 160, 1.5)
    assert image.shape == target.shape == (160, 160)
    assert (target == VASTI).sum() > 200


@needs_oai
def test_shipped_model_on_real_oai_validation_scans():
    """Against real manual tracings: the shipped model's group Dice on two held-out scans."""
    from scipy.stats import spearmanr

    from myositis_qmri.segmentation.infer import segment_muscles
    _, validation = oai_split()
    means, confidence_and_dice = {}, []
    for folder in validation[:3]:
        predicted = segment_muscles(read_volume(folder / "image.nii.gz"), test_time_augmentation=False)
        truth = read_volume(folder / "labels.nii.gz")
        dice = group_dice(predicted, truth, OAI_GROUPS)
        means[folder.name] = np.nanmean(list(dice.values()))
        assert dice[2] > 0.9, (folder.name, dice)              # the vasti, the largest group
        if not sartorius_behind_gracilis(truth):               # a reference to trust
            confidence_and_dice += [(pooled_confidence(predicted, muscles), dice[group])
                                    for group, muscles in OAI_GROUPS.muscle_groups().items()]
    # The first three by id, as they come (one of them has gracilis and sartorius swapped).
    assert np.mean(list(means.values())) > 0.82, means
    # The network's outline confidence ranks the groups as their agreement with the tracings does
    # (all 22 validation scans with TTA: Spearman 0.73, benchmarks/segmentation_confidence.py).
    assert spearmanr(*zip(*confidence_and_dice)).statistic > 0.3, confidence_and_dice


def _two_muscle_crop(fat_intensity: float, n: int = 112):
    """RealSlices of one crop: two traced muscles (groups 1 and 2) in a ring of fat, air outside."""
    from myositis_qmri.segmentation.real import RealSlices
    from myositis_qmri.segmentation.synth import intensity_classes
    yy, xx = np.mgrid[0:n, 0:n] - n / 2
    body, left, right = np.hypot(yy, xx) < 40, np.hypot(yy, xx + 14) < 12, np.hypot(yy, xx - 14) < 12
    image = np.where(body, fat_intensity, 0.02) + np.where(left | right, 0.4 - fat_intensity, 0)
    image = image.astype(np.float32)
    target = np.where(left, 1, np.where(right, 2, 0)).astype(np.int16)
    classes = intensity_classes(image, np.ones(image.shape, bool))
    return RealSlices(image[None], classes[None], target[None], np.zeros(1, int), ["crop"], "oai-groups")


@pytest.mark.parametrize("fat_intensity", [0.9, 0.1], ids=["bright-fat", "dark-fat"])
def test_fat_class_is_the_ring_around_the_traced_muscles(fat_intensity):
    from myositis_qmri.segmentation.real import fat_class
    crop = _two_muscle_crop(fat_intensity)
    fat, muscle, air = (crop.classes[0][56, 56 + dx] for dx in (30, 14, 55))
    assert len({fat, muscle, air}) == 3
    assert fat_class(crop.classes[0], crop.targets[0]) == fat
    assert fat_class(crop.classes[0], np.zeros_like(crop.targets[0])) == 0       # no muscle traced


def test_real_draws_can_replace_the_traced_muscles_with_the_scans_own_fat():
    """Whole-muscle fat replacement on a real crop: a traced muscle takes the intensity of the fat
    around it, in the scan's own contrast and in redrawn ones, while its target stays the muscle.
    (In half the draws fat and water mix as in opposed-phase images, where a muscle 80 % fat is
    darker than fat: those keep some contrast, so the claim is for most draws, not all.)"""
    import dataclasses
    plain = _two_muscle_crop(0.9)
    fatty = dataclasses.replace(plain, fatty_infiltration=1.0, infiltration_patterns=("whole",))
    ring = (np.hypot(*(np.mgrid[0:96, 0:96] - 47.5)) > 30) & (np.hypot(*(np.mgrid[0:96, 0:96] - 47.5)) < 34)
    ratios = []
    for seed in range(16):
        image_plain, target_plain = plain.draw(np.random.default_rng(seed), 0, 96, 1.5)
        image_fat, target_fat = fatty.draw(np.random.default_rng(seed), 0, 96, 1.5)
        np.testing.assert_array_equal(target_fat, target_plain)
        fat_ring = ring & (target_plain == 0)
        before = abs(image_plain[target_plain > 0].mean() - image_plain[fat_ring].mean())
        after = min(abs(image_fat[target_fat == g].mean() - image_fat[fat_ring].mean()) for g in (1, 2))
        if before > 0.15:                 # a redrawn contrast may give muscle and fat alike
            ratios.append(after / before)
    assert len(ratios) >= 8 and np.mean(np.array(ratios) < 0.5) >= 0.6, ratios
