"""Model file format: safetensors + JSON header round trip; pickles and bad headers refused."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from myositis_qmri.errors import ModelFileError
from myositis_qmri.segmentation import model as M


def _tiny_header():
    header = M.base_header()
    header["architecture"]["channels"] = [4, 8]
    header["architecture"]["strides"] = [2]
    return header


def test_round_trip(tmp_path):
    header = _tiny_header()
    network = M.build_network(header["architecture"])
    path = M.save_model(network, header, tmp_path / "m.safetensors")
    loaded, loaded_header = M.load_model(path)
    assert loaded_header == header
    for key, value in network.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    x = torch.randn(2, 1, 32, 32)
    network.eval()
    torch.testing.assert_close(loaded(x), network(x))


def test_weights_and_identity_come_from_bytes_read_once(tmp_path):
    import hashlib
    header = _tiny_header()
    network = M.build_network(header["architecture"])
    path = M.save_model(network, header, tmp_path / "m.safetensors")
    content = M.read_model_bytes(path)
    loaded, _ = M.load_model(path, file_bytes=content)
    for key, value in network.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert M.model_identity(path, content) == M.model_identity(path) == \
        {"file": "m.safetensors", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    with pytest.raises(ModelFileError, match="not found"):
        M.read_model_bytes(tmp_path / "missing.safetensors")


def test_header_and_weights_come_from_the_same_bytes_when_the_file_changes(tmp_path):
    """A file replaced between reading and loading cannot pair one file's header with another's weights."""
    header = _tiny_header()
    path = M.save_model(M.build_network(header["architecture"]), header, tmp_path / "m.safetensors")
    content = M.read_model_bytes(path)
    replaced = {**_tiny_header(), "provenance": {"steps": 99}}
    M.save_model(M.build_network(replaced["architecture"]), replaced, path)
    assert "steps" not in M.load_model(path, file_bytes=content)[1].get("provenance", {})
    assert M.load_model(path)[1]["provenance"] == {"steps": 99}


def _refused_both_ways(path, match=None):
    """load_model refuses the file read from disk and the same file passed as bytes."""
    for file_bytes in (None, path.read_bytes()):
        with pytest.raises(ModelFileError, match=match):
            M.load_model(path, file_bytes=file_bytes)


def test_recorded_metrics_join_the_header_and_leave_the_weights(tmp_path):
    header = _tiny_header()
    network = M.build_network(header["architecture"])
    path = M.save_model(network, header, tmp_path / "m.safetensors")
    M.record_metrics(path, "real_cross_contrast_agreement", {"mean_dice": 0.8})
    loaded, loaded_header = M.load_model(path)
    assert loaded_header["metrics"]["real_cross_contrast_agreement"] == {"mean_dice": 0.8}
    assert {k: v for k, v in loaded_header.items() if k != "metrics"} == \
        {k: v for k, v in header.items() if k != "metrics"}
    for key, value in network.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_pickled_file_is_refused_without_unpickling(tmp_path):
    network = M.build_network(_tiny_header()["architecture"])
    for name in ("m.pt", "m.safetensors"):
        path = tmp_path / name
        torch.save(network.state_dict(), path)
        _refused_both_ways(path)


def test_headerless_and_mismatched_headers_are_refused(tmp_path):
    network = M.build_network(_tiny_header()["architecture"])
    tensors = {k: v.contiguous() for k, v in network.state_dict().items()}
    bare = tmp_path / "bare.safetensors"
    save_file(tensors, str(bare))
    _refused_both_ways(bare, "no 'myositis_qmri' JSON header")
    wrong_labels = _tiny_header()
    wrong_labels["labels"]["1"] = "gluteus_maximus"
    path = tmp_path / "labels.safetensors"
    save_file(tensors, str(path), metadata={M.HEADER_KEY: json.dumps(wrong_labels)})
    _refused_both_ways(path, "label schema")
    no_spacing = _tiny_header()
    del no_spacing["spacing_mm"]
    path = tmp_path / "spacing.safetensors"
    save_file(tensors, str(path), metadata={M.HEADER_KEY: json.dumps(no_spacing)})
    _refused_both_ways(path, "spacing_mm")
    # Header describing another network than the weights.
    other = _tiny_header()
    other["architecture"]["channels"] = [8, 16]
    path = tmp_path / "arch.safetensors"
    save_file(tensors, str(path), metadata={M.HEADER_KEY: json.dumps(other)})
    _refused_both_ways(path, "weights do not match")
    with pytest.raises(ModelFileError, match="not found"):
        M.load_model(tmp_path / "missing.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(bare.read_bytes()[:40])
    _refused_both_ways(truncated, "not a readable safetensors file")


def test_default_model_path_honours_environment(tmp_path, monkeypatch):
    header = _tiny_header()
    path = M.save_model(M.build_network(header["architecture"]), header, tmp_path / "env.safetensors")
    monkeypatch.setenv(M.MODEL_ENV, str(path))
    assert M.default_model_path() == path


def test_dice_per_label():
    a = np.array([0, 1, 1, 2, 2, 2])
    b = np.array([0, 1, 2, 2, 2, 0])
    d = M.dice_per_label(a, b, [1, 2, 3])
    assert d[1] == pytest.approx(2 / 3)
    assert d[2] == pytest.approx(2 * 2 / 6)
    assert np.isnan(d[3])
