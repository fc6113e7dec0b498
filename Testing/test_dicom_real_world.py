"""Real clinical DICOM as clinics send it: the two real OAI thigh series (Siemens, no preamble)
as they are and re-encoded into a temporary folder (RLE, JPEG-LS and JPEG 2000 lossless, no
preamble, implicit VR, every optional attribute stripped). Each goes through `inspect` and
`run`: the pixels read back equal the originals, and `run` ends with a report or a one-line
error naming the study or file. The inputs are never modified. A few slices keep it fast."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest

from dicom_cases import compressor, digest, rewrite, save_implicit, save_stripped, save_without_preamble
from myositis_qmri.cli import main
from myositis_qmri.io.load import load_volume

pytestmark = pytest.mark.dicom

SLICES = 3
CASES = {"as_is": None, "rle": compressor("rle"), "jpeg_ls": compressor("jpeg-ls"),
         "jpeg2000": compressor("jpeg2000"), "no_preamble": save_without_preamble, "implicit_vr": save_implicit,
         "stripped": save_stripped}
SUBJECTS = ("9000798", "9001695")


@pytest.fixture(scope="module")
def oai_series(shared_data, tmp_path_factory):
    """A few middle slices of each real series, copied unchanged, and a digest of the originals."""
    root = shared_data / "oai_thigh_t1_dicom"
    if not root.is_dir():
        pytest.skip("OAI DICOM absent")
    before = digest(root)
    out = tmp_path_factory.mktemp("oai")
    for subject in SUBJECTS:
        files = sorted((root / subject / "dicom").glob("*.dcm"))
        middle = len(files) // 2
        for path in files[middle - SLICES // 2: middle - SLICES // 2 + SLICES]:
            (out / subject).mkdir(exist_ok=True)
            shutil.copy(path, out / subject / path.name)
    yield out
    assert digest(root) == before  # the shared originals are never touched


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("subject", SUBJECTS)
def test_clinical_encodings_inspect_and_run(oai_series, tmp_path, capsys, case, subject):
    original = oai_series / subject
    study = original if CASES[case] is None else rewrite(original, tmp_path / "study", CASES[case])
    assert main(["inspect", str(study), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert len(listing["series"]) == 1 and listing["series"][0]["n_slices"] == SLICES, listing
    volume, reference = load_volume(study), load_volume(original)
    assert volume.geometry.same_grid(reference.geometry)
    assert np.array_equal(volume.array, reference.array)        # lossless: the very same pixels
    stored = max(int(np.frombuffer(pydicom.dcmread(f).PixelData, "<u2").max()) for f in original.glob("*.dcm"))
    assert reference.array.max() == stored   # values beyond BitsStored kept, under pydicom 2.4 and 3 alike
    before = digest(study)
    code = main(["run", str(study), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    if code == 0:
        assert (tmp_path / "out" / "report.json").is_file()
    else:
        assert code == 2 and err and str(study) in err[-1], err  # one line naming the study or its file
    assert digest(study) == before
