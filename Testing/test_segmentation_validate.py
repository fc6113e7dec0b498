"""Volume-level validation: rendering of held-out label maps and end-to-end Dice (shared data)."""
import numpy as np
import pytest
from scipy import ndimage

from myositis_qmri.segmentation import synth
from myositis_qmri.segmentation.validate import CONTRASTS, render, tissue_map, validate_label_map


def _two_leg_map():
    muscles = np.zeros((2, 120, 200), np.uint8)
    yy, xx = np.mgrid[0:120, 0:200]
    for cx in (50, 150):
        ring = np.hypot(yy - 60, xx - cx)
        muscles[:, (ring > 12) & (ring < 30) & (xx < cx)] = 3
        muscles[:, (ring > 12) & (ring < 30) & (xx >= cx)] = 5
        muscles[:, (ring > 12) & (ring < 30) & (yy < 48)] = 4
    return muscles


def test_rendered_contrasts_order_the_tissues():
    tissue = tissue_map(_two_leg_map(), 2.0, seed=0)
    assert (tissue == synth.FAT).any() and (tissue == synth.SKIN).any()
    fat_brighter = {"t1w": True, "t2w": True, "mese_echo1": True, "dixon_water": False, "stir": False,
                    "dixon_fat": True, "dixon_in_phase": True, "dixon_opposed_phase": True}
    assert set(CONTRASTS) == set(fat_brighter)
    for contrast in CONTRASTS:
        image = render(tissue, contrast, seed=1)
        fat, muscle = np.median(image[tissue == synth.FAT]), np.median(image[(tissue >= 1) & (tissue <= 11)])
        assert (fat > muscle) == fat_brighter[contrast], contrast
        assert image.dtype == np.float32 and np.isfinite(image).all()


def test_opposed_phase_darkens_muscle_fat_borders():
    """Water and fat cancel where a voxel holds both: the border is darker than either side."""
    tissue = tissue_map(_two_leg_map(), 2.0, seed=0)[:1]
    muscle = (tissue[0] >= 1) & (tissue[0] <= 11)
    fat = tissue[0] == synth.FAT
    border = muscle & ndimage.binary_dilation(fat)
    inner_muscle = ndimage.binary_erosion(muscle, iterations=2)
    inner_fat = ndimage.binary_erosion(fat)
    for contrast, darker in (("dixon_opposed_phase", True), ("dixon_in_phase", False)):
        image = render(tissue, contrast, seed=1)[0]
        edge = np.median(image[border])
        assert (edge < 0.8 * min(np.median(image[inner_muscle]), np.median(image[inner_fat]))) == darker, contrast


def test_held_out_label_map_is_segmented_end_to_end(shared_data):
    from myositis_qmri.segmentation.train import split_maps
    _, held_out = split_maps(sorted((shared_data / "thigh_label_maps").glob("*.nii.gz")))
    result = validate_label_map(held_out[0], contrasts=("t1w",))[0]
    assert result.contrast == "t1w" and len(result.dice) == 11
    # Measured with the shipped model: mean 0.934, lowest muscle 0.880 (the real-case
    # targets are 0.85 and 0.70).
    assert result.mean_dice > 0.85
    assert min(result.dice.values()) > 0.7


def test_agreement_refuses_images_on_different_grids():
    from myositis_qmri.errors import InputError
    from myositis_qmri.segmentation.validate import cross_contrast_agreement
    from myositis_qmri.volume import Volume
    image = Volume(np.zeros((2, 64, 64), np.float32), spacing_mm=(2.0, 2.0, 5.0))
    moved = Volume(image.array, spacing_mm=(2.0, 2.0, 5.0), origin_mm=(10.0, 0.0, 0.0))
    with pytest.raises(InputError, match="moved: not on the grid of image"):
        cross_contrast_agreement({"image": image, "moved": moved})


def test_real_dixon_contrasts_get_the_same_muscles(shared_data):
    """Water, fat and an echo of one real exam, segmented apart, must agree (no reference needed).

    Measured without test-time shifts: shipped model 0.84 (pairs 0.82-0.86); the models before it
    in the README's training chain 0.815-0.828. A 2.3 mm model trained for 41.5k steps on the
    synthesis alone read 0.74 (pairs down to 0.72): a model that overfits the synthesis fails.
    """
    from myositis_qmri.io.load import load_magnitude_phase
    from myositis_qmri.maps.dixon import compute_fat_fraction
    from myositis_qmri.segmentation.validate import cross_contrast_agreement
    files = sorted((shared_data / "dixon3pt_thigh_siemens").glob("*.nii.gz"))
    magnitude, phase = load_magnitude_phase(files, te_ms=[3.45, 4.60, 5.75])
    maps = compute_fat_fraction("auto", magnitude=magnitude, phase=phase, field_t=3.0)
    images = {"water": maps.water, "fat": maps.fat, "echo 2": magnitude.echo(1)}
    result = cross_contrast_agreement(images, test_time_augmentation=False)
    assert set(result.dice) == {("water", "fat"), ("water", "echo 2"), ("fat", "echo 2")}
    assert result.mean_dice > 0.80
    assert min(result.dice.values()) > 0.78
    assert len(result.dice_per_slice[("water", "fat")]) == maps.water.array.shape[0]
    assert all(result.labels[n].shape == maps.water.array.shape for n in images)
