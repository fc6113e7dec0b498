"""Write a muscle label map as Slicer and other tools read it.

`write_segmentation` writes muscles.nii.gz (int16 labels), labels.json (the schema from
labels.py) and muscles.seg.nrrd (slicerio: segment names, colours, terminology), atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io import write_text_atomic, write_volume
from ..io.atomic import atomic_path
from ..volume import Volume
from . import labels as schema


SIDECAR_KEYS = ("source", "model", "model_version", "model_file", "model_sha256", "resolution_mm",
                "test_time_augmentation", "thigh_muscle_fraction", "slice_range", "outline_confidence")


def labels_digest(array) -> str:
    """sha256 of a label map's voxels (int16, z-y-x order): tells the masks the network drew from
    masks edited since, for which its outline confidence no longer holds."""
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(np.rint(array).astype("<i2")).tobytes()).hexdigest()


def labels_json() -> dict:
    return {"labels": [{"value": l.value, "key": l.key, "name": l.name, "abbreviation": l.abbreviation,
                        "side": l.side, "muscle_index": l.muscle.index, "group": l.muscle.group,
                        "colour_rgb": list(l.colour_rgb), "terminology": schema.terminology_entry(l),
                        "snomed_ct": l.muscle.code is not None}
                       for l in schema.LABELS]}


def _ijk_to_lps(volume: Volume) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = volume.geometry.direction_matrix() * np.asarray(volume.spacing_mm)
    matrix[:3, 3] = volume.origin_mm
    return matrix


def write_seg_nrrd(labels: Volume, path: str | Path) -> Path:
    import slicerio
    path = Path(path)
    segments = [{"labelValue": l.value, "id": l.key, "name": l.name,
                 "color": [c / 255.0 for c in l.colour_rgb], "terminology": schema.terminology_entry(l)}
                for l in schema.LABELS]
    segmentation = {"voxels": np.ascontiguousarray(labels.array.transpose(2, 1, 0)).astype(np.int16),
                    "ijkToLPS": _ijk_to_lps(labels), "encoding": "gzip",
                    "containedRepresentationNames": ["Binary labelmap"], "segments": segments}
    with atomic_path(path) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation)
    return path


def write_segmentation(labels: Volume, out_dir: str | Path) -> dict:
    """muscles.nii.gz, labels.json and muscles.seg.nrrd in out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"labels": out_dir / "muscles.nii.gz", "labels_json": out_dir / "labels.json",
             "seg_nrrd": out_dir / "muscles.seg.nrrd"}
    write_volume(labels, paths["labels"], dtype=np.int16)
    provenance = {key: labels.metadata[key] for key in SIDECAR_KEYS if key in (labels.metadata or {})}
    if "outline_confidence" in provenance:
        provenance["labels_sha256"] = labels_digest(labels.array)
    if provenance:
        # Read back into the label map's metadata (NIfTI sidecar), so that `report` on an edited
        # mask still knows the resolution the network worked at (report.stats erodes by it).
        paths["sidecar"] = out_dir / "muscles.json"
        write_text_atomic(paths["sidecar"], json.dumps(provenance, indent=1))
    write_text_atomic(paths["labels_json"], json.dumps(labels_json(), indent=1))
    write_seg_nrrd(labels, paths["seg_nrrd"])
    return paths
