"""Which Python packages the core needs inside Slicer, and which are missing.

torch comes from the SlicerPyTorch extension (it picks the right CUDA build); the rest are
installed with pip on first use after the user agrees. Checks use importlib's spec lookup,
so nothing heavy is imported just to find out.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import Callable

# import name -> pip requirement, per pipeline stage (torch is handled apart).
REQUIREMENTS = {
    "common": {"numpy": "numpy", "scipy": "scipy", "SimpleITK": "SimpleITK", "pydicom": "pydicom",
               "nibabel": "nibabel", "nrrd": "pynrrd", "tqdm": "tqdm"},
    "maps": {"skimage": "scikit-image"},
    "segment": {"safetensors": "safetensors", "monai": "monai", "slicerio": "slicerio",
                "maxflow": "PyMaxflow"},
    "report": {"highdicom": "highdicom", "matplotlib": "matplotlib"},
    "federate": {"flwr": "flwr>=1.18,<1.24"},     # the last Flower releases that run on Python 3.9
}
# Standard-library modules the core uses that older Pythons (Slicer 5.6-5.8 ship 3.9) lack:
# import name -> (pip backport, first Python that has the module).
BACKPORTS = {"report": {"tomli": ("tomli", (3, 11))}}   # tomllib: the report's grading rules
TORCH_STAGES = ("segment", "finetune", "federate")
STAGE_REQUIREMENTS = {"inspect": ("common",), "t2": ("common", "maps"), "ff": ("common", "maps"),
                      "segment": ("common", "segment"), "finetune": ("common", "segment"),
                      "report": ("common", "report", "segment"), "federate": ("common", "segment", "federate")}


def is_installed(import_name: str, finder: Callable[[str], object] = importlib.util.find_spec) -> bool:
    try:
        return finder(import_name) is not None
    except (ImportError, ValueError):
        return False


def missing_requirements(stage: str, finder: Callable[[str], object] = importlib.util.find_spec,
                         python: tuple[int, ...] = tuple(sys.version_info[:2])) -> list[str]:
    """pip requirements still missing for a stage ("t2", "segment", ...) on this Python, without torch."""
    needed: dict[str, str] = {}
    for group in STAGE_REQUIREMENTS.get(stage, ("common",)):
        needed.update(REQUIREMENTS[group])
        needed.update({name: pip for name, (pip, since) in BACKPORTS.get(group, {}).items() if python < since})
    return [pip for name, pip in needed.items() if not is_installed(name, finder)]


def needs_torch(stage: str, finder: Callable[[str], object] = importlib.util.find_spec) -> bool:
    return stage in TORCH_STAGES and not is_installed("torch", finder)
