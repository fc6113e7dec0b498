"""Slicer terminology entries for the muscle segments, from the core's label schema.

Slicer stores a segment's terminology as one tag string:
`context~category~type~typeModifier~anatomicContext~region~regionModifier`, each code written
`scheme^value^meaning`. Laterality goes in the type modifier (SNOMED Right / Left) and the
anatomic region is the thigh of that side, which is how DICOM SEG export writes it.
"""
from __future__ import annotations


def terminology_entry(label) -> str:
    """The tag string for a `labels.MuscleLabel`, from the label schema (SNOMED CT where verified,
    the schema's private code otherwise)."""
    from myositis_qmri.segmentation import labels

    return labels.terminology_string(label)


def segment_properties(label) -> dict:
    """Name, colour (0-1 floats) and terminology of the segment for one label value."""
    return {"name": label.name, "colour": tuple(c / 255.0 for c in label.colour_rgb),
            "terminology": terminology_entry(label), "label_value": label.value}
