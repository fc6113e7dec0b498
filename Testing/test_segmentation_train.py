"""Training: synthetic images from label maps, a short run that checkpoints and resumes."""
import numpy as np

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


def test_short_training_run_resumes(tmp_path):
    maps = _label_maps(tmp_path)
    out = tmp_path / "model.safetensors"
    config = TrainConfig(label_maps=maps, out=out, steps=2, batch_size=2, validate_every=2,
                         n_validation_slices=4, threads=1)
    state = train(config, resume=False)
    assert state["step"] == 2 and checkpoint_path(out).exists()
    header = read_header(out)
    assert header["provenance"]["steps"] == 2 and "synthetic_validation" in header["metrics"]
    config.steps = 3
    state = train(config, resume=True)
    assert state["step"] == 3 and len(state["history"]) == 2
