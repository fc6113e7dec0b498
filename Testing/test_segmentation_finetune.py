"""Fine-tuning on 5 corrected slices helps the same case and keeps synthetic validation Dice."""
import numpy as np
import pytest

from myositis_qmri.errors import InputError
from myositis_qmri.phantom import make_exam
from myositis_qmri.segmentation.finetune import finetune, phantom_replay
from myositis_qmri.segmentation.model import default_model_path, read_header
from myositis_qmri.segmentation.train import make_batch


def test_finetune_on_five_slices(tmp_path):
    source = default_model_path()
    header = read_header(source)
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    exam = make_exam(11, "demo")
    replay = phantom_replay(seeds=(101,), spacing_mm=spacing, size=size)
    validation = make_batch(np.random.default_rng(5), phantom_replay(seeds=(202,), spacing_mm=spacing, size=size),
                            48, size, spacing)
    out = tmp_path / "tuned.safetensors"
    result = finetune(source, exam.t1w, exam.muscle_labels, out, slices=[1, 4, 7, 10, 13], steps=25,
                      batch_size=8, replay=replay, validation=validation, seed=0)
    before, after = result["before"], result["after"]
    assert after["case_other_slices"] > before["case_other_slices"]
    assert after["synthetic_validation"] >= before["synthetic_validation"] - 0.02
    tuned = read_header(out)
    assert tuned["model_version"] == header["model_version"] + 1
    assert tuned["metrics"]["finetune"]["after"]["case_other_slices"] == pytest.approx(after["case_other_slices"])
    assert tuned["provenance"]["corrected_slices"] == [1, 4, 7, 10, 13]


def test_finetune_never_overwrites_the_source(tmp_path):
    exam = make_exam(11, "small")
    with pytest.raises(InputError, match="never overwrites"):
        finetune(None, exam.t1w, exam.muscle_labels, default_model_path(), steps=1)
