"""Label schema codes: SNOMED CT where a source gives one, the private scheme otherwise, and the same
codes in labels.json, muscles.seg.nrrd (read back with slicerio) and the shipped Slicer terminology."""
import json
import re
from pathlib import Path

import numpy as np
import slicerio
from pydicom.sr.codedict import codes

from myositis_qmri.segmentation import labels as schema
from myositis_qmri.segmentation.export import write_segmentation
from myositis_qmri.volume import Volume

PROJECT = Path(__file__).resolve().parents[1]
TERM_FILE = PROJECT / "MyositisQMRI" / "Resources" / "Terminology" / "MyositisQMRI_thigh_muscles.term.json"

# The SNOMED CT codes as copied from their sources (see the comments in labels.py); written out here
# again so that an accidental edit of the schema shows up.
SCT_MUSCLES = {"sartorius": "12595009", "rectus_femoris": "72226001", "vastus_lateralis": "1403006",
               "vastus_medialis": "3478008", "gracilis": "2577006", "vastus_intermedius": "181682001"}
PRIVATE_MUSCLES = {"adductors", "biceps_femoris_long_head", "semitendinosus",
                   "semimembranosus", "biceps_femoris_short_head"}


def test_every_muscle_has_a_snomed_code_from_the_table_or_the_private_scheme():
    assert set(SCT_MUSCLES) | PRIVATE_MUSCLES == set(schema.MUSCLE_BY_KEY)
    for muscle in schema.MUSCLES:
        code = schema.type_code(muscle)
        if muscle.key in SCT_MUSCLES:
            assert (code.scheme, code.value) == ("SCT", SCT_MUSCLES[muscle.key])
            assert muscle.name.lower() in code.meaning.lower()
        else:
            assert muscle.code is None
            assert (code.scheme, code.value) == (schema.PRIVATE_SCHEME, f"MUSCLE_{muscle.abbreviation}")
        assert len(code.value) <= 16         # DICOM Code Value is SH
    assert len({schema.type_code(m).value for m in schema.MUSCLES}) == schema.N_MUSCLES


def test_side_region_and_category_codes_agree_with_dicom():
    # pydicom's concept dictionary is generated from DICOM PS3.16, independent of labels.py.
    for side, concept in (("right", codes.SCT.Right), ("left", codes.SCT.Left)):
        assert (schema.SIDE_CODES[side].value, schema.SIDE_CODES[side].meaning) == (concept.value, concept.meaning)
    assert (schema.REGION_CODE.value, schema.REGION_CODE.meaning) == (codes.SCT.Thigh.value, codes.SCT.Thigh.meaning)
    assert schema.CATEGORY_CODE.scheme == "SCT" and schema.CATEGORY_CODE.meaning == "Anatomical Structure"


def _all_labels_volume() -> Volume:
    array = np.zeros((2, 12, 23), np.int16)
    for value in range(1, 23):
        array[:, 2:10, value] = value
    return Volume(array, (1.5, 1.5, 4.0), (-10.0, 20.0, 30.0))


def test_seg_nrrd_and_labels_json_carry_the_terminology(tmp_path):
    paths = write_segmentation(_all_labels_volume(), tmp_path)
    segmentation = slicerio.read_segmentation(str(paths["seg_nrrd"]))
    by_value = {s["labelValue"]: s for s in segmentation["segments"]}
    assert len(by_value) == 22
    for value, label in schema.LABEL_BY_VALUE.items():
        terminology = by_value[value]["terminology"]
        code = schema.type_code(label.muscle)
        side = schema.SIDE_CODES[label.side]
        assert terminology["category"] == ["SCT", "123037004", "Anatomical Structure"]
        assert terminology["type"] == [code.scheme, code.value, code.meaning]
        assert terminology["typeModifier"] == ["SCT", side.value, side.meaning]
        assert terminology["anatomicRegion"] == ["SCT", "68367000", "Thigh"]
        assert terminology["anatomicRegionModifier"] == ["SCT", side.value, side.meaning]
    assert by_value[3]["terminology"]["type"] == ["SCT", "1403006", "Vastus lateralis muscle"]
    assert by_value[14]["terminology"]["typeModifier"][1] == "7771000"        # vastus lateralis, left
    # The raw header holds Slicer's tag string, seven '~'-separated parts, exactly as labels.py builds it.
    header = paths["seg_nrrd"].read_bytes().split(b"\n\n", 1)[0].decode("latin-1")
    tags = dict(re.findall(r"Segment(\d+)_Tags:=(.*)", header))
    values = dict(re.findall(r"Segment(\d+)_LabelValue:=(\d+)", header))
    assert len(tags) == len(values) == 22
    for index, tag in tags.items():
        entry = next(part for part in tag.split("|") if part.startswith("TerminologyEntry:"))
        label = schema.LABEL_BY_VALUE[int(values[index])]
        assert entry == "TerminologyEntry:" + schema.terminology_string(label)
        assert len(entry.split("~")) == 7
    rows = {row["value"]: row for row in json.loads(paths["labels_json"].read_text())["labels"]}
    assert rows[1]["terminology"]["type"][1] == "12595009" and rows[1]["snomed_ct"] is True
    assert rows[9]["terminology"]["type"][0] == schema.PRIVATE_SCHEME and rows[9]["snomed_ct"] is False


def test_shipped_slicer_terminology_is_the_schema():
    shipped = json.loads(TERM_FILE.read_text())
    assert shipped == schema.slicer_terminology()
    # Slicer's loader looks the categories up under SegmentationCodes.
    types = shipped["SegmentationCodes"]["Category"][0]["Type"]
    assert {t["CodeValue"] for t in types if t["CodingSchemeDesignator"] == "SCT"} == set(SCT_MUSCLES.values())
    assert all([m["CodeValue"] for m in t["Modifier"]] == ["24028007", "7771000"] for t in types)
