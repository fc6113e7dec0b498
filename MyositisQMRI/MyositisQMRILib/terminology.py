"""Slicer terminology entries for the muscle segments, from the core's label schema.

Slicer stores a segment's terminology as one tag string:
`context~category~type~typeModifier~anatomicContext~region~regionModifier`, each code written
`scheme^value^meaning`. Laterality goes in the type modifier (SNOMED Right / Left), which
is how DICOM SEG export writes it.
"""
from __future__ import annotations

CONTEXT = "MyositisQMRI thigh muscles"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def _code(code) -> str:
    return "^".join((code.scheme, code.value, code.meaning)) if code else "^^"


def terminology_entry(label) -> str | None:
    """The tag string for a `labels.MuscleLabel`, or None while its muscle has no code."""
    from myositis_qmri.segmentation import labels

    if label.muscle.code is None:
        return None
    return "~".join((CONTEXT, _code(labels.CATEGORY_CODE), _code(label.muscle.code),
                     _code(labels.SIDE_CODES[label.side]), ANATOMIC_CONTEXT, "^^", "^^"))


def segment_properties(label) -> dict:
    """Name, colour (0-1 floats) and terminology of the segment for one label value."""
    return {"name": label.name, "colour": tuple(c / 255.0 for c in label.colour_rgb),
            "terminology": terminology_entry(label), "label_value": label.value}
