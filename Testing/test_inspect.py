"""`myositis-qmri inspect`: series listing (text and JSON), problems with reasons, exit 2 when nothing is usable."""
from __future__ import annotations

import json
import shutil

import pytest

from myositis_qmri.cli import main

pytestmark = pytest.mark.dicom


def test_inspect_real_mese_and_dixon(shared_data, capsys):
    rc = main(["inspect", str(shared_data / "mese_calf_siemens_enhanced"), str(shared_data / "dixon3pt_thigh_siemens")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "2 series" in out and "class mese" in out and "class multiecho_gre" in out
    assert "echoes 17 (TE 11, 22, ... 187 ms)" in out
    assert "matrix 256x128" in out and "slices 8" in out and "Siemens" in out
    assert "images magnitude, phase" in out


def test_inspect_json_lists_problems(shared_data, tmp_path, capsys):
    folder = tmp_path / "study"
    shutil.copytree(shared_data / "mese_calf_siemens_enhanced", folder)
    (folder / "readme.bin").write_text("not an image")
    data = (folder / "image0003.dcm").read_bytes()
    (folder / "image0003.dcm").write_bytes(data[:-5000])  # a truncated copy (our copy, not the input)
    rc = main(["inspect", str(folder), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    (series,) = report["series"]
    assert series["classification"] == "mese" and series["n_echoes"] == 16 and 33.0 not in series["echo_times_ms"]
    assert series["voxel_size_mm"][:2] == [1.5625, 1.5625] and series["n_slices"] == 8
    reasons = {p.split("/")[-1]: r for p, r in ((x["path"], x["reason"]) for x in report["problems"])}
    assert reasons["readme.bin"] == "not a DICOM file"
    assert reasons["image0003.dcm"].startswith("truncated")


def test_inspect_nothing_usable_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MYOSITIS_QMRI_PROGRESS", "off")
    (tmp_path / "a.dcm").write_bytes(b"\x00" * 300)
    rc = main(["inspect", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and str(tmp_path) in err and "no usable image series" in err


def test_inspect_missing_path_exits_2(tmp_path, capsys):
    rc = main(["inspect", str(tmp_path / "nope")])
    assert rc == 2 and "no such file or folder" in capsys.readouterr().err
