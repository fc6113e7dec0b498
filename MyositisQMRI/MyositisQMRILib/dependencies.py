"""Which Python packages a step of the core needs inside Slicer, which are missing or too old,
and the pip command line that installs them without touching Slicer's own packages.

pyproject.toml is the one contract: its base dependencies (every step) and one extra per stage
(`[maps]`, `[segment]`, `[report]`, ...). Inside Slicer the core is not pip-installed, so the
module reads Resources/dependencies.json, generated from pyproject.toml by
Utilities/generate_dependencies.py (a test fails while it is stale); only when that file is
absent does it read an installed `myositis-qmri` distribution's metadata (an editable install's
metadata keeps the extras of its last `pip install`, so the generated file comes first).

Versions are checked against the floors, not only imports. Slicer's own packages (pydicom,
numpy, scipy, SimpleITK, vtk, requests, ...) are never installed or upgraded: one below a floor
is reported instead, and every pip run is constrained to the versions installed, so that pip
beside Slicer's pydicom 2.4 picks highdicom 0.22.0 rather than upgrading pydicom to 3.
torch comes from the SlicerPyTorch extension (it picks the CUDA build) and is constrained too.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion

PROJECT = "myositis-qmri"
CONTRACT_FILE = Path(__file__).resolve().parent.parent / "Resources" / "dependencies.json"

# Core subcommand -> the pyproject extras it needs beyond the base dependencies.
STAGE_EXTRAS: Dict[str, Tuple[str, ...]] = {
    "inspect": (), "t2": ("maps",), "ff": ("maps",), "segment": ("segment",),
    "finetune": ("segment",), "train": ("segment",), "report": ("report",),
    "run": ("maps", "segment", "report"), "demo": ("maps", "segment", "report"), "batch": ("batch",),
    "federate": ("segment", "federate")}

# Distributions Slicer 5.6-5.10 ship (SuperBuild/External_python-*.cmake, SimpleITK, VTK; the
# per-tag lists with versions are in Testing/slicer_api/slicer_api.json, which a test compares
# with this set). Never installed or upgraded by the module.
SLICER_BUNDLED = frozenset({
    "certifi", "cffi", "chardet", "charset-normalizer", "couchdb", "cryptography", "deprecated",
    "dicomweb-client", "gitdb", "gitpython", "idna", "numpy", "packaging", "pillow", "pip",
    "pycparser", "pydicom", "pygithub", "pyjwt", "pynacl", "pyparsing", "python-dateutil",
    "requests", "retrying", "scipy", "setuptools", "simpleitk", "six", "smmap",
    "typing-extensions", "urllib3", "vtk", "wheel", "wrapt"})
# Import names of the bundled packages a Slicer build may install without pip metadata.
BUNDLED_IMPORT_NAMES = {"simpleitk": "SimpleITK", "vtk": "vtk", "numpy": "numpy", "scipy": "scipy",
                        "pydicom": "pydicom"}
TORCH = "torch"


@dataclass(frozen=True)
class Contract:
    """pyproject's base dependencies and extras, as requirement strings."""

    name: str
    dependencies: Tuple[str, ...]
    extras: Dict[str, Tuple[str, ...]]

    def requirements(self, extras: Iterable[str], python: Sequence[int]) -> List[Requirement]:
        """Base plus `extras` (self-references such as myositis-qmri[maps] expanded), markers
        evaluated for this Python; unknown extras raise KeyError."""
        found: Dict[str, Requirement] = {}
        self._collect("", self.dependencies, python, found, set())
        for extra in extras:
            self._collect(extra, self.extras[extra], python, found, {extra})
        return list(found.values())

    def _collect(self, extra, lines, python, found, seen) -> None:
        environment = dict(default_environment(), extra=extra,
                           python_version=".".join(str(part) for part in python[:2]),
                           python_full_version=".".join(str(part) for part in python[:2]) + ".0")
        for line in lines:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            if canonicalize_name(requirement.name) == canonicalize_name(self.name):
                for inner in sorted(requirement.extras - seen):
                    self._collect(inner, self.extras[inner], python, found, seen | {inner})
                continue
            found.setdefault(canonicalize_name(requirement.name), requirement)


def load_contract(path: Path = CONTRACT_FILE) -> Contract:
    """The generated copy of pyproject's contract beside the module, else the installed metadata."""
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        return Contract(data["name"], tuple(data["dependencies"]),
                        {extra: tuple(lines) for extra, lines in data["optional-dependencies"].items()})
    return contract_from_metadata()


def contract_from_metadata(distribution: str = PROJECT) -> Contract:
    """The contract of an installed core: Requires-Dist lines split by their `extra ==` marker."""
    meta = metadata.metadata(distribution)
    extras: Dict[str, List[str]] = {canonicalize_name(extra): [] for extra in meta.get_all("Provides-Extra") or []}
    base = []
    for line in metadata.requires(distribution) or []:
        extra = re.search(r"\bextra\s*==\s*[\"']([^\"']+)[\"']", line.partition(";")[2])
        (extras.setdefault(canonicalize_name(extra.group(1)), []) if extra else base).append(line)
    return Contract(meta["Name"], tuple(base), {extra: tuple(lines) for extra, lines in extras.items()})


def installed_version(distribution: str) -> Optional[str]:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def is_importable(import_name: str) -> bool:
    try:
        return importlib.util.find_spec(import_name) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class StagePlan:
    """What a step needs: pip requirements to install, whether torch must come from SlicerPyTorch,
    and problems pip must not fix (a Slicer-bundled package missing or below a floor)."""

    install: Tuple[str, ...]
    needs_torch: bool
    problems: Tuple[str, ...]


def pip_requirement(requirement: Requirement) -> str:
    """The requirement as pip takes it on a command line: name, extras and floor, no marker."""
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{requirement.name}{extras}{requirement.specifier}"


def satisfies(requirement: Requirement, version: str) -> bool:
    try:
        return requirement.specifier.contains(version, prereleases=True)
    except InvalidVersion:   # an unparsable local build version: trust it
        return True


def stage_plan(stage: str, version_of: Optional[Callable[[str], Optional[str]]] = None,
               importable: Optional[Callable[[str], bool]] = None,
               python: Sequence[int] = tuple(sys.version_info[:2]),
               contract: Optional[Contract] = None) -> StagePlan:
    """Compare a stage's requirements ("t2", "segment", ...; an unknown stage gets the base
    dependencies) with what is installed on this Python (version_of: distribution -> installed
    version or None; importable: import name -> bool; both default to this interpreter's)."""
    contract = contract or load_contract()
    version_of = version_of or installed_version
    importable = importable or is_importable
    install, problems, needs_torch = [], [], False
    for requirement in contract.requirements(STAGE_EXTRAS.get(stage, ()), python):
        name = canonicalize_name(requirement.name)
        version = version_of(requirement.name)
        if name == TORCH:
            needs_torch = version is None
            if version is not None and not satisfies(requirement, version):
                problems.append(f"torch {version} is older than this step needs ({requirement.specifier}); "
                                "update it with the PyTorch extension (PyTorch Utils module).")
        elif name in SLICER_BUNDLED:
            if version is None and not importable(BUNDLED_IMPORT_NAMES.get(name, requirement.name)):
                problems.append(f"Slicer's own Python package {requirement.name} is missing; reinstall Slicer.")
            elif version is not None and not satisfies(requirement, version):
                problems.append(f"Slicer ships {requirement.name} {version}, but this step needs "
                                f"{requirement.name}{requirement.specifier}; it is not upgraded inside "
                                "Slicer: use a newer Slicer.")
        elif version is None or not satisfies(requirement, version):
            install.append(pip_requirement(requirement))
    return StagePlan(tuple(install), needs_torch, tuple(problems))


def missing_requirements(stage: str, **kwargs) -> List[str]:
    """pip requirements ("PyMaxflow>=1.3", ...) still missing or too old for a stage, without torch."""
    return list(stage_plan(stage, **kwargs).install)


def needs_torch(stage: str, **kwargs) -> bool:
    return stage_plan(stage, **kwargs).needs_torch


def constraints(version_of: Optional[Callable[[str], Optional[str]]] = None) -> List[str]:
    """"name==version" for every installed Slicer-bundled package and torch: pip may not move them."""
    version_of = version_of or installed_version
    pins = []
    for name in sorted(SLICER_BUNDLED | {TORCH}):
        version = version_of(name)
        if version is not None:
            pins.append(f"{name}=={version}")
    return pins


def write_constraints(folder: Path, version_of: Optional[Callable[[str], Optional[str]]] = None) -> Path:
    """The constraints file for pip (see constraints()), written into `folder`."""
    path = Path(folder) / "myositis-qmri-constraints.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(constraints(version_of)) + "\n", encoding="utf-8")
    return path


def pip_install_arguments(requirements: Sequence[str], constraints_file: Path) -> List[str]:
    """The list slicer.util.pip_install receives (a list, so paths with spaces need no quoting)."""
    return ["--constraint", str(constraints_file), *requirements]
