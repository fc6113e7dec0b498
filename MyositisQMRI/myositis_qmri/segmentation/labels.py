"""The thigh-muscle label schema: the single source of label values, names, colours and codes.

Values: right side 1-11, left side 12-22 (= right + 11). Muscle order follows the shared
thigh label maps (1 sartorius ... 11 biceps femoris short head), so `muscle_index` is the
value those maps carry on both legs.
"""
from __future__ import annotations

from dataclasses import dataclass

N_MUSCLES = 11
LEFT_OFFSET = N_MUSCLES


@dataclass(frozen=True)
class Code:
    """A coded concept (DICOM triplet): scheme designator, value, meaning."""

    scheme: str
    value: str
    meaning: str


@dataclass(frozen=True)
class Muscle:
    index: int                      # 1..11, the side-less muscle number
    key: str                        # machine name, e.g. "vastus_lateralis"
    name: str                       # display name
    abbreviation: str
    colour_rgb: tuple[int, int, int]
    code: Code | None               # SNOMED CT property type (the structure)
    group: str                      # anterior / medial / posterior compartment


@dataclass(frozen=True)
class MuscleLabel:
    value: int
    muscle: Muscle
    side: str                       # "right" or "left"

    @property
    def key(self) -> str:
        return f"{self.muscle.key}_{self.side[0].upper()}"

    @property
    def name(self) -> str:
        return f"{self.muscle.name} ({self.side})"

    @property
    def abbreviation(self) -> str:
        return f"{self.muscle.abbreviation}_{self.side[0].upper()}"

    @property
    def colour_rgb(self) -> tuple[int, int, int]:
        return self.muscle.colour_rgb


# Codes: SNOMED CT ("SCT") concepts for each muscle, as Slicer terminology and DICOM SEG use.
SIDE_CODES = {"right": Code("SCT", "24028007", "Right"), "left": Code("SCT", "7771000", "Left")}
CATEGORY_CODE = Code("SCT", "123037004", "Anatomical Structure")

MUSCLES: tuple[Muscle, ...] = (
    Muscle(1, "sartorius", "Sartorius", "SAR", (230, 159, 0), None, "anterior"),
    Muscle(2, "rectus_femoris", "Rectus femoris", "RF", (213, 94, 0), None, "anterior"),
    Muscle(3, "vastus_lateralis", "Vastus lateralis", "VL", (204, 121, 167), None, "anterior"),
    Muscle(4, "vastus_intermedius", "Vastus intermedius", "VI", (0, 114, 178), None, "anterior"),
    Muscle(5, "vastus_medialis", "Vastus medialis", "VM", (86, 180, 233), None, "anterior"),
    Muscle(6, "adductor_magnus", "Adductor magnus", "AM", (0, 158, 115), None, "medial"),
    Muscle(7, "gracilis", "Gracilis", "GR", (240, 228, 66), None, "medial"),
    Muscle(8, "biceps_femoris_long_head", "Biceps femoris long head", "BFL", (153, 79, 0), None, "posterior"),
    Muscle(9, "semitendinosus", "Semitendinosus", "ST", (120, 94, 240), None, "posterior"),
    Muscle(10, "semimembranosus", "Semimembranosus", "SM", (254, 97, 0), None, "posterior"),
    Muscle(11, "biceps_femoris_short_head", "Biceps femoris short head", "BFS", (220, 38, 127), None, "posterior"),
)

LABELS: tuple[MuscleLabel, ...] = tuple(
    MuscleLabel(m.index + (LEFT_OFFSET if side == "left" else 0), m, side)
    for side in ("right", "left") for m in MUSCLES
)
LABEL_BY_VALUE = {label.value: label for label in LABELS}
LABEL_BY_KEY = {label.key: label for label in LABELS}
MUSCLE_BY_KEY = {m.key: m for m in MUSCLES}


def label_value(muscle_index: int, side: str) -> int:
    """Label value of muscle 1..11 on "right"/"left"."""
    return muscle_index + (LEFT_OFFSET if side == "left" else 0)


def muscle_index(value: int) -> int:
    """Side-less muscle number 1..11 of a label value (0 stays 0)."""
    return 0 if value == 0 else (value - 1) % N_MUSCLES + 1


def side_of(value: int) -> str:
    return "left" if value > LEFT_OFFSET else "right"


# Muscles without a verified SNOMED CT concept get a private (99-prefixed, as DICOM allows)
# code so that Slicer terminology and DICOM SEG still carry a coded type.
PRIVATE_SCHEME = "99MYOQMRI"
TERMINOLOGY_CONTEXT = "MyositisQMRI thigh muscles"


def type_code(muscle: Muscle) -> Code:
    return muscle.code or Code(PRIVATE_SCHEME, muscle.key.upper(), muscle.name)


def terminology_entry(label: MuscleLabel) -> dict:
    """The segment terminology in slicerio's form (category, type, side modifier: scheme, value, meaning)."""
    code = type_code(label.muscle)
    side = SIDE_CODES[label.side]
    return {"contextName": TERMINOLOGY_CONTEXT,
            "category": [CATEGORY_CODE.scheme, CATEGORY_CODE.value, CATEGORY_CODE.meaning],
            "type": [code.scheme, code.value, code.meaning],
            "typeModifier": [side.scheme, side.value, side.meaning]}


def slicer_terminology() -> dict:
    """A Slicer terminology (.term.json, schema 1) listing every muscle with its side modifiers."""
    def coded(code: Code, **extra) -> dict:
        return {"CodingSchemeDesignator": code.scheme, "CodeValue": code.value, "CodeMeaning": code.meaning, **extra}

    types = []
    for muscle in MUSCLES:
        modifiers = [coded(SIDE_CODES[side], recommendedDisplayRGBValue=list(muscle.colour_rgb),
                           **{"3dSlicerLabel": f"{muscle.name} ({side})"}) for side in ("right", "left")]
        types.append(coded(type_code(muscle), recommendedDisplayRGBValue=list(muscle.colour_rgb),
                           **{"3dSlicerLabel": muscle.name, "Modifier": modifiers}))
    category = coded(CATEGORY_CODE, showAnatomy="false", Type=types)
    return {"SegmentationCategoryTypeContextName": TERMINOLOGY_CONTEXT,
            "@schema": "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/segment-context-schema.json#",
            "Category": [category]}
