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
    code: Code | None               # SNOMED CT property type; None: none verified (see type_code)
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


# Codes, each copied from a source we could read (none is made up):
# - Laterality Right 24028007 / Left 7771000 and the region Thigh 68367000: Slicer's
#   SegmentationCategoryTypeModifier-DICOM-Master.json and AnatomicRegionAndModifier-DICOM-Master.json
#   (Slicer/Slicer Modules/Loadable/Terminologies/Resources), also pydicom's DICOM concept dictionary
#   (CID 244 laterality, CID 4031 common anatomic regions).
# - Category "Anatomical Structure" 123037004: Slicer's DICOM master list (CID 7150 entry) and
#   SlicerTotalSegmentator's totalsegmentator_snomed_mapping.csv, which codes single muscles exactly as
#   here (category Anatomical Structure, type = the muscle, type modifier = side). The DICOM standard's
#   CID 7150 (pydicom) lists the older SCT 91723000 for the same meaning; Slicer's code is used so
#   that Slicer matches the category.
SIDE_CODES = {"right": Code("SCT", "24028007", "Right"), "left": Code("SCT", "7771000", "Left")}
CATEGORY_CODE = Code("SCT", "123037004", "Anatomical Structure")
REGION_CODE = Code("SCT", "68367000", "Thigh")
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"   # the Slicer anatomic context that holds Thigh

# Muscle (property type) codes and where each was read:
SARTORIUS = Code("SCT", "12595009", "Sartorius muscle")
#   SlicerTotalSegmentator Resources/totalsegmentator_snomed_mapping.csv, rows sartorius_left/right.
RECTUS_FEMORIS = Code("SCT", "72226001", "Rectus femoris muscle")
#   A terminology server's expansion against SNOMED CT International 2024-10-01 (UPM-NTHC/
#   PH-RoadSafetyIG, SILPH List of Body Sites value set): "Rectus femoris muscle structure".
VASTUS_LATERALIS = Code("SCT", "1403006", "Vastus lateralis muscle")
#   HL7 FHIR R4 (4.0.1) ValueSet approach-site-codes: "Vastus lateralis muscle".
VASTUS_MEDIALIS = Code("SCT", "3478008", "Vastus medialis muscle")
#   HL7 FHIR R4 ValueSet approach-site-codes: "Structure of vastus medialis muscle".
GRACILIS = Code("SCT", "2577006", "Gracilis muscle")
#   HL7 FHIR R4 ValueSet approach-site-codes: "Structure of gracilis muscle".
VASTUS_INTERMEDIUS = Code("SCT", "181682001", "Entire vastus intermedius muscle")
#   A FHIR terminology server's cached SNOMED CT answer (Minsal-CL/R2BO input/txcache/snomed.cache):
#   "Entire vastus intermedius muscle". An "entire" concept, a subtype of the structure concept that
#   DICOM prefers; no source we could read gives that structure code.
# The adductor row covers the adductor group (magnus, longus and brevis together), as the real
# manual tracings we learn from and are judged on (OAI thighs) draw it: a model that knew only
# adductor magnus gave adductor longus, which it had never seen named, to the sartorius, vastus
# medialis or gracilis. Splitting the group needs real tracings of longus and brevis apart; until
# then the name ("Adductor group"), the private code (MUSCLE_ADD) and the report say so.
# Adductor group, biceps femoris long and short heads, semitendinosus and semimembranosus have
# SNOMED CT concepts, but no source we could read gives their codes with SNOMED's own wording
# (Slicer's and DICOM's lists stop at "Muscle of lower limb"; TotalSegmentator codes only the
# quadriceps, the sartorius and the medial and posterior compartments; Uberon's cross-references,
# adductor magnus 181688002 and semitendinosus 181685004, are marked unverified there). They keep
# the private code from `type_code` until a code can be copied from a SNOMED CT release or browser.

MUSCLES: tuple[Muscle, ...] = (
    Muscle(1, "sartorius", "Sartorius", "SAR", (230, 159, 0), SARTORIUS, "anterior"),
    Muscle(2, "rectus_femoris", "Rectus femoris", "RF", (213, 94, 0), RECTUS_FEMORIS, "anterior"),
    Muscle(3, "vastus_lateralis", "Vastus lateralis", "VL", (204, 121, 167), VASTUS_LATERALIS, "anterior"),
    Muscle(4, "vastus_intermedius", "Vastus intermedius", "VI", (0, 114, 178), VASTUS_INTERMEDIUS, "anterior"),
    Muscle(5, "vastus_medialis", "Vastus medialis", "VM", (86, 180, 233), VASTUS_MEDIALIS, "anterior"),
    Muscle(6, "adductors", "Adductor group", "ADD", (0, 158, 115), None, "medial"),
    Muscle(7, "gracilis", "Gracilis", "GR", (240, 228, 66), GRACILIS, "medial"),
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


@dataclass(frozen=True)
class GroupScheme:
    """Labels that trace muscle groups rather than single muscles (e.g. "vasti" for VL+VI+VM).

    `groups` maps each label value of the scheme to the schema's side-less muscle indices it
    covers; a value mapped to () is traced but holds no schema muscle (the femur), and counts as
    background. Values absent from `groups` are refused. Group labels carry no side: they are read
    on whichever leg they lie. `unlabelled` names schema muscles that such labels leave untraced
    (0), so that 0 means "background or one of these" rather than background alone.
    """

    name: str
    groups: dict          # value -> tuple of muscle indices 1..N_MUSCLES
    names: dict           # value -> display name
    unlabelled: tuple = ()   # schema muscles an unlabelled (0) voxel may still hold

    def muscle_groups(self) -> dict:
        """Only the groups that hold schema muscles: value -> muscle indices."""
        return {v: m for v, m in self.groups.items() if m}


# The OAI thigh tracings (Jason-TsangGL/UFATS-ITSA-RARE): right thigh, by hand, in groups.
OAI_GROUPS = GroupScheme(
    "oai-groups",
    {1: (2,), 2: (3, 4, 5), 3: (), 4: (7,), 5: (1,), 6: (6,), 7: (8, 11), 8: (9,), 9: (10,)},
    {1: "rectus femoris", 2: "vasti", 3: "femur", 4: "gracilis", 5: "sartorius", 6: "adductors",
     7: "biceps femoris", 8: "semitendinosus", 9: "semimembranosus"})
OAI_SARTORIUS_GRACILIS = (5, 4)   # their values in OAI_GROUPS

# Eleven muscles, 1..11 on both legs, side by position: the thigh_label_maps in ../shared/data and
# the IDEAL nnU-Net labels (Hirriririir). Their 6 is adductor magnus alone; adductor longus and
# brevis stay unlabelled although the schema's adductor group holds them.
THIGH11 = GroupScheme(
    "thigh11", {m.index: (m.index,) for m in MUSCLES},
    {m.index: ("adductor magnus" if m.key == "adductors" else m.name.lower()) for m in MUSCLES},
    unlabelled=(MUSCLE_BY_KEY["adductors"].index,))
GROUP_SCHEMES = {OAI_GROUPS.name: OAI_GROUPS, THIGH11.name: THIGH11}
LABEL_SCHEMES = ("fine", *GROUP_SCHEMES)   # "fine": the project's own values (1-11 right, 12-22 left)


def label_value(muscle_index: int, side: str) -> int:
    """Label value of muscle 1..11 on "right"/"left"."""
    return muscle_index + (LEFT_OFFSET if side == "left" else 0)


def muscle_index(value: int) -> int:
    """Side-less muscle number 1..11 of a label value (0 stays 0)."""
    return 0 if value == 0 else (value - 1) % N_MUSCLES + 1


def side_of(value: int) -> str:
    return "left" if value > LEFT_OFFSET else "right"


# Muscles without a verified SNOMED CT code get a private code (a 99-prefixed scheme, as DICOM
# PS3.16 allows for local codes) so that Slicer terminology and DICOM SEG still carry a coded type;
# DICOM writers declare the scheme in CodingSchemeIdentificationSequence.
PRIVATE_SCHEME = "99MYOQMRI"
PRIVATE_SCHEME_NAME = "MyositisQMRI local codes"
TERMINOLOGY_CONTEXT = "MyositisQMRI thigh muscles"


def type_code(muscle: Muscle) -> Code:
    """The property type of a muscle: its SNOMED CT code, else the private code (from the
    abbreviation, so it fits DICOM's 16-character Code Value)."""
    return muscle.code or Code(PRIVATE_SCHEME, f"MUSCLE_{muscle.abbreviation}", muscle.name)


def _triplet(code: Code) -> list[str]:
    return [code.scheme, code.value, code.meaning]


def terminology_entry(label: MuscleLabel) -> dict:
    """The segment terminology in slicerio's dict form: category, type, side as type modifier, and the
    thigh (with the same side) as anatomic region, each [scheme, value, meaning]."""
    side = SIDE_CODES[label.side]
    return {"contextName": TERMINOLOGY_CONTEXT,
            "category": _triplet(CATEGORY_CODE),
            "type": _triplet(type_code(label.muscle)),
            "typeModifier": _triplet(side),
            "anatomicContextName": ANATOMIC_CONTEXT,
            "anatomicRegion": _triplet(REGION_CODE),
            "anatomicRegionModifier": _triplet(side)}


def terminology_string(label: MuscleLabel) -> str:
    """Slicer's TerminologyEntry tag: context~category~type~typeModifier~anatomicContext~region~regionModifier,
    each code scheme^value^meaning (the layout slicerio and Slicer read and write)."""
    entry = terminology_entry(label)
    return "~".join((entry["contextName"], *("^".join(entry[k]) for k in ("category", "type", "typeModifier")),
                     entry["anatomicContextName"],
                     *("^".join(entry[k]) for k in ("anatomicRegion", "anatomicRegionModifier"))))


def slicer_terminology() -> dict:
    """A Slicer terminology (.term.json, dcmqi segment-context schema) listing every muscle with its
    side modifiers, laid out as Slicer's own term files (SegmentationCodes > Category > Type > Modifier)."""
    def coded(code: Code, **extra) -> dict:
        return {"CodingSchemeDesignator": code.scheme, "CodeValue": code.value, "CodeMeaning": code.meaning, **extra}

    types = []
    for muscle in MUSCLES:
        modifiers = [coded(SIDE_CODES[side], recommendedDisplayRGBValue=list(muscle.colour_rgb),
                           **{"3dSlicerLabel": f"{muscle.name} ({side})"}) for side in ("right", "left")]
        types.append(coded(type_code(muscle), recommendedDisplayRGBValue=list(muscle.colour_rgb),
                           **{"3dSlicerLabel": muscle.name, "Modifier": modifiers}))
    category = coded(CATEGORY_CODE, showAnatomy=True, Type=types)
    return {"SegmentationCategoryTypeContextName": TERMINOLOGY_CONTEXT,
            "@schema": "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/segment-context-schema.json#",
            "SegmentationCodes": {"Category": [category]}}
