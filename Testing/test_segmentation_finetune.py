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


def test_negative_anatomy_is_found_through_earlier_finetunes():
    from myositis_qmri.segmentation.finetune import negative_anatomy
    trained = {"provenance": {"negative_anatomy": {"calf_roi_files": ["t1_manual_rois.npz"]}}}
    tuned_twice = {"provenance": {"finetuned_from": "v2", "source_provenance": {
        "finetuned_from": "shipped", "source_provenance": trained["provenance"]}}}
    assert negative_anatomy(tuned_twice) == {"calf_roi_files": ["t1_manual_rois.npz"]}
    assert negative_anatomy({"provenance": {"steps": 3}}) is None


def test_replay_draws_the_fatty_infiltration_the_model_learnt(tmp_path):
    from myositis_qmri.commands.finetune import _replay
    header = {"spacing_mm": [2.3, 2.3], "crop_px": 96,
              "provenance": {"finetuned_from": "h", "source_provenance": {"fatty_infiltration": 0.5}}}
    empty = tmp_path / "no_maps"
    empty.mkdir()
    assert _replay(empty, tmp_path / "m.safetensors", header).fatty_infiltration == 0.5     # phantom replay
    assert _replay(empty, tmp_path / "m.safetensors", header).infiltration_patterns == ("patches",)
    plain = {**header, "provenance": {"steps": 3}}
    assert _replay(empty, tmp_path / "m.safetensors", plain).fatty_infiltration == 0.0
    shaped = {**header, "provenance": {"finetuned_from": "i", "source_provenance": {
        "fatty_infiltration": 0.5, "infiltration_patterns": ["patches", "streaks", "rim"]}}}
    assert _replay(empty, tmp_path / "m.safetensors", shaped).infiltration_patterns == ("patches", "streaks", "rim")


def test_finetune_replays_calf_negatives_when_the_model_learnt_them(tmp_path, calf_roi_folder):
    """Without them, 60 steps on a phantom took the real calf's thigh-labelled share from 0.10
    to 0.24; replaying them kept it at 0.12 (benchmarks/README.md)."""
    from myositis_qmri.commands.finetune import _negatives
    header = read_header(default_model_path())
    assert _negatives(None, {**header, "provenance": {}}) == []      # a model without negatives
    negatives = _negatives(calf_roi_folder, header)
    assert len(negatives) == 1 and len(negatives[0][0]) == 2
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    exam = make_exam(11, "small")
    out = tmp_path / "tuned.safetensors"
    finetune(None, exam.t1w, exam.muscle_labels, out, steps=1, batch_size=4, seed=0,
             replay=phantom_replay(seeds=(101,), spacing_mm=spacing, size=size), negatives=negatives)
    assert read_header(out)["provenance"]["negative_replay"]["calf_roi_files"] == ["t1_manual_rois.npz"]


def test_finetune_replays_negative_images_given_to_it(tmp_path, pelvis_like_image):
    from myositis_qmri.commands.finetune import _negatives
    header = read_header(default_model_path())
    negatives = _negatives(None, {**header, "provenance": {}}, [f"{pelvis_like_image}:0-1"])
    assert len(negatives) == 1 and negatives[0][0].names == ["pelvis.nii.gz:0-1"]
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    exam = make_exam(11, "small")
    out = tmp_path / "tuned.safetensors"
    finetune(None, exam.t1w, exam.muscle_labels, out, steps=1, batch_size=4, seed=0,
             replay=phantom_replay(seeds=(101,), spacing_mm=spacing, size=size), negatives=negatives)
    replay = read_header(out)["provenance"]["negative_replay"]
    assert replay["negative_images"] == {"slices": ["pelvis.nii.gz:0-1"], "fraction_of_replay": 0.1}
