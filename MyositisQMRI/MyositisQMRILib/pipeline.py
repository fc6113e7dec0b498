"""Arguments of each core command the module runs, from the user's choices.

Pure functions from plain values (paths, strings, numbers) to `core_command` argument lists,
so the exact command lines are tested without Slicer. Flag names follow the command-line
contract in ARCHITECTURE.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .study import StudyInputs, link_series

T2_OUTPUTS = ("t2w.nii.gz", "ffmese.nii.gz", "b1.nii.gz")
FF_OUTPUTS = ("ff.nii.gz",)
SEGMENT_OUTPUTS = ("muscles.nii.gz", "labels.json", "muscles.seg.nrrd")


def _te(echo_times_ms: str | Sequence[float] | None) -> str | None:
    if echo_times_ms is None:
        return None
    if isinstance(echo_times_ms, str):
        text = echo_times_ms.replace(" ", "").strip(",")
        return text or None
    return ",".join(f"{t:g}" for t in echo_times_ms) or None


def t2_arguments(echo_inputs: Sequence[str | Path], out: str | Path, echo_times_ms=None, model: str = "epg",
                 fat_t2: str = "auto", mask: str | Path | None = None) -> list:
    """`t2 INPUT... --out DIR [--te-ms ...] --model M --fat-t2 X [--mask F]`."""
    if not echo_inputs:
        raise ValueError("no multi-echo spin-echo input chosen for the T2 map")
    return [*map(str, echo_inputs), ("--out", out), ("--te-ms", _te(echo_times_ms)), ("--model", model),
            ("--fat-t2", fat_t2 or "auto"), ("--mask", mask)]


def ff_arguments(out: str | Path, dicom: Sequence[str | Path] = (), water=None, fat=None, ff_map=None,
                 method: str = "auto", echo_times_ms=None, field_t: float | None = None) -> list:
    """`ff [DICOM...] [--water F --fat F | --ff-map F] --out DIR --method M ...`."""
    if not dicom and not ff_map and not (water and fat):
        raise ValueError("choose Dixon series, water and fat images, or a fat-fraction map")
    return [*map(str, dicom), ("--water", water), ("--fat", fat), ("--ff-map", ff_map), ("--out", out),
            ("--method", method), ("--te-ms", _te(echo_times_ms)),
            ("--field-t", None if not field_t else f"{field_t:g}")]


def segment_arguments(image: str | Path, out: str | Path, model: str | Path | None = None,
                      slice_range: tuple[int, int] | None = None) -> list:
    """`segment IMAGE --out DIR [--model F] [--slice-range FIRST LAST]`."""
    return [str(image), ("--out", out), ("--model", model or None),
            ("--slice-range", tuple(slice_range) if slice_range else None)]


def segment_slice_range(first: int, last: int, n_slices: int) -> tuple[int, int] | None:
    """The slices to segment from the panel's spin boxes (K index; last -1: the last slice).

    None when that is every slice. A range outside the volume raises ValueError.
    """
    last = n_slices - 1 if last < 0 else last
    if not 0 <= first <= last < n_slices:
        raise ValueError(f"slices {first} to {last} are not slices of the volume (0 to {n_slices - 1})")
    return None if (first, last) == (0, n_slices - 1) else (first, last)


def finetune_arguments(image: str | Path, labels: str | Path, out: str | Path,
                       model: str | Path | None = None) -> list:
    """`finetune --image I --labels L --out DIR [--model BASE]` on one corrected case."""
    return [("--image", image), ("--labels", labels), ("--out", out), ("--model", model or None)]


def federation_site_arguments(server: str, image: str | Path, labels: str | Path, name: str | None = None,
                               model: str | Path | None = None, root_certificate: str | Path | None = None) -> list:
    """`federate site --server HOST:PORT --image I --labels L [--name SITE] [--model M] [--root-certificate CA]`:
    this Slicer's corrected case joins a federation round (weights and counts leave, images stay)."""
    server = (server or "").strip()
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"the federation server address must be HOST:PORT, got {server!r}")
    return ["site", ("--server", server), ("--image", image), ("--labels", labels), ("--name", name or None),
            ("--model", model or None), ("--root-certificate", root_certificate or None)]


def report_arguments(seg: str | Path, out: str | Path, t2: str | Path | None = None, ff: str | Path | None = None,
                     previous: str | Path | None = None, scoring: str | Path | None = None,
                     reviewer_grades: str | Path | None = None, anatomy: str | Path | None = None,
                     source_dicom: str | Path | None = None) -> list:
    """`report --seg S [--t2 M] [--ff M] --out DIR ...`; `--review` keeps the reviewer's grades
    (overrides JSON), `--source-dicom` (the structural series) enables DICOM SEG/SR export."""
    if not t2 and not ff:
        raise ValueError("the report needs a T2 map or a fat-fraction map")
    return [("--seg", seg), ("--t2", t2), ("--ff", ff), ("--out", out), ("--anatomy", anatomy),
            ("--source-dicom", source_dicom), ("--previous", previous), ("--scoring", scoring),
            ("--review", reviewer_grades)]


def study_t2_inputs(inputs: StudyInputs, series_folder: str | Path) -> list[str]:
    """The chosen MESE series as one folder of its own (see `study.link_series`)."""
    return [str(link_series(inputs.mese, series_folder))] if inputs.mese else []


def study_ff_inputs(inputs: StudyInputs, series_folder: str | Path) -> list[str]:
    """Each chosen Dixon/FF series as a folder of its own; `ff` pairs them by kind and echo."""
    return [str(link_series(row, series_folder)) for row in inputs.dixon]


def phantom_arguments(folder: str | Path, seed: int = 7, size: str = "small", flavour: str = "classic") -> list[str]:
    """A `python -c` program writing the synthetic exam (DICOM under folder/dicom, truth under
    folder/truth) with the core phantom; the Sample Data loader runs it in the background."""
    program = ("import sys; from myositis_qmri.phantom import make_exam, write_exam; "
               "write_exam(make_exam(int(sys.argv[2]), sys.argv[3]), sys.argv[1], sys.argv[4])")
    return ["-c", program, str(folder), str(seed), size, flavour]


# The self-test's stages in order, as the module's steps name them (dependencies.STAGE_REQUIREMENTS).
SELF_TEST_STAGES = ("inspect", "t2", "ff", "segment", "report")


def offline_stages(stages, missing, needs_torch) -> tuple[int, str]:
    """How many of `stages` run with what is installed (no download), and the message for the rest.

    Installing packages needs the network, which a self-test must not: the stages from the first
    one lacking a package (`missing(stage)` -> pip names; `needs_torch(stage)` -> bool) on are
    skipped, and the message says which packages they need.
    """
    for index, stage in enumerate(stages):
        lacking = list(missing(stage)) + (["torch (PyTorch extension)"] if needs_torch(stage) else [])
        if lacking:
            return index, (f"Skipped from '{stage}' on: it needs {', '.join(lacking)}, which is not installed and "
                           "would be downloaded. Run the step once from the module (it offers the install), "
                           "then run the self-test again.")
    return len(stages), ""
