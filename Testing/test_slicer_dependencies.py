"""The Slicer module's dependency contract (MyositisQMRILib/dependencies.py).

pyproject.toml's base dependencies and stage extras are the one source; the module reads the
generated Resources/dependencies.json, checks version floors, never installs or upgrades what
Slicer ships, and constrains pip to the installed versions of Slicer's packages. Slicer's
bundled versions per release come from Testing/slicer_api/slicer_api.json (generated from
Slicer's SuperBuild at v5.6.0, v5.8.0, v5.10.0).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MyositisQMRI"))

from MyositisQMRILib import dependencies, slicer_bridge  # noqa: E402

SLICER_API = json.loads((ROOT / "Testing" / "slicer_api" / "slicer_api.json").read_text(encoding="utf-8"))
TAGS = ("v5.6.0", "v5.8.0", "v5.10.0")


def _generator():
    spec = importlib.util.spec_from_file_location("generate_dependencies", ROOT / "Utilities" / "generate_dependencies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh_slicer(tag: str, extra: dict | None = None):
    """version_of for a fresh Slicer `tag`: only its bundled packages (plus SimpleITK), and `extra`."""
    versions = {canonicalize_name(name): version for name, version in SLICER_API["tags"][tag]["python_packages"].items()}
    versions["simpleitk"] = "2.3.1"
    versions.update({canonicalize_name(name): version for name, version in (extra or {}).items()})
    return lambda name: versions.get(canonicalize_name(name))


def python_of(tag: str) -> tuple[int, int]:
    return tuple(int(part) for part in SLICER_API["tags"][tag]["python_version"].split(".")[:2])


def test_generated_contract_matches_pyproject():
    generator = _generator()
    assert dependencies.CONTRACT_FILE.read_text(encoding="utf-8") == generator.render(), \
        "MyositisQMRI/Resources/dependencies.json is stale: run python Utilities/generate_dependencies.py"
    contract = dependencies.load_contract()
    assert {"maps", "segment", "report"} <= set(contract.extras)
    assert "pydicom>=2.4.3" in contract.dependencies      # fits beside Slicer 5.6's pydicom 2.4.3
    assert generator.main(["--check"]) == 0


def test_every_stage_the_module_starts_has_a_known_extra():
    import ast
    tree = ast.parse((ROOT / "MyositisQMRI" / "MyositisQMRI.py").read_text(encoding="utf-8"))
    started = {node.args[0].value for node in ast.walk(tree)
               if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("startJob", "ensure_packages")
               and node.args and isinstance(node.args[0], ast.Constant)}
    assert {"inspect", "t2", "ff", "segment", "report"} <= started
    contract = dependencies.load_contract()
    for stage in started | set(dependencies.STAGE_EXTRAS):
        assert stage in dependencies.STAGE_EXTRAS, f"startJob('{stage}') has no entry in STAGE_EXTRAS"
        assert set(dependencies.STAGE_EXTRAS[stage]) <= set(contract.extras)


def test_every_third_party_import_of_the_core_is_in_the_contract():
    """Each package the core imports is provided by a base or extra requirement (torch included)."""
    import ast
    from importlib import metadata
    requirements = dependencies.load_contract().requirements(["all"], python=(3, 9))
    provided = {canonicalize_name(r.name) for r in requirements}
    provided |= {canonicalize_name(extra) for r in requirements for extra in r.extras}   # dask[distributed]
    providers = metadata.packages_distributions()
    core = ROOT / "MyositisQMRI" / "myositis_qmri"
    missing = set()
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("myositis_qmri", "tomllib"):
                    continue
                distributions = {canonicalize_name(d) for d in providers.get(top, [top])}
                if not distributions & provided:
                    missing.add(f"{top} ({path.relative_to(core)})")
    assert not missing, f"imported by the core but in no pyproject requirement: {sorted(missing)}"


@pytest.mark.parametrize("tag", TAGS)
def test_compute_maps_on_a_fresh_slicer_installs_pymaxflow_for_ff(tag):
    """Issue 24 item 2: Dixon / multi-echo FF needs PyMaxflow, so 'ff' must bring the maps extra."""
    plan = dependencies.stage_plan("ff", version_of=fresh_slicer(tag), python=python_of(tag))
    assert "PyMaxflow>=1.3" in plan.install and "threadpoolctl>=3.1" in plan.install
    assert not plan.problems and not plan.needs_torch
    t2 = dependencies.stage_plan("t2", version_of=fresh_slicer(tag), python=python_of(tag))
    assert "PyMaxflow>=1.3" in t2.install
    # nothing Slicer ships is ever asked of pip
    bundled = {canonicalize_name(n) for n in SLICER_API["tags"][tag]["python_packages"]} | {"simpleitk"}
    for stage in dependencies.STAGE_EXTRAS:
        for line in dependencies.stage_plan(stage, version_of=fresh_slicer(tag), python=python_of(tag)).install:
            assert canonicalize_name(Requirement(line).name) not in bundled | {"torch"}, (stage, line)


def test_report_needs_tomli_only_on_python_39_and_never_torch():
    on_56 = dependencies.stage_plan("report", version_of=fresh_slicer("v5.6.0"), python=python_of("v5.6.0"))
    on_510 = dependencies.stage_plan("report", version_of=fresh_slicer("v5.10.0"), python=python_of("v5.10.0"))
    assert python_of("v5.6.0") == (3, 9) and python_of("v5.10.0") == (3, 12)
    assert "tomli>=1.1" in on_56.install and not any(line.startswith("tomli") for line in on_510.install)
    assert "highdicom>=0.22" in on_510.install and not on_510.needs_torch
    assert dependencies.stage_plan("segment", version_of=fresh_slicer("v5.10.0")).needs_torch


def test_version_floors_are_checked_not_only_imports():
    old_highdicom = fresh_slicer("v5.10.0", {"highdicom": "0.21.1", "nibabel": "5.2.1", "tqdm": "4.66.0",
                                             "matplotlib": "3.9.0", "scikit-image": "0.24.0",
                                             "pylibjpeg": "2.0.0", "pylibjpeg-libjpeg": "2.1.0",
                                             "pylibjpeg-openjpeg": "2.3.0"})
    assert dependencies.stage_plan("report", version_of=old_highdicom, python=(3, 12)).install == ("highdicom>=0.22",)
    # a bundled package below a floor is reported, never upgraded
    old_pydicom = fresh_slicer("v5.10.0", {"pydicom": "2.3.1"})
    plan = dependencies.stage_plan("inspect", version_of=old_pydicom, python=(3, 12))
    assert not any(line.startswith("pydicom") for line in plan.install)
    assert plan.problems and "pydicom 2.3.1" in plan.problems[0] and ">=2.4.3" in plan.problems[0]
    # a bundled package without pip metadata but importable counts as present
    no_metadata = fresh_slicer("v5.10.0", {"simpleitk": None})
    assert not dependencies.stage_plan("inspect", version_of=no_metadata, importable=lambda name: name == "SimpleITK",
                                       python=(3, 12)).problems
    assert dependencies.stage_plan("inspect", version_of=no_metadata, importable=lambda name: False,
                                   python=(3, 12)).problems


def test_this_venv_satisfies_every_stage():
    for stage in dependencies.STAGE_EXTRAS:
        plan = dependencies.stage_plan(stage)
        assert plan.install == () and plan.problems == () and not plan.needs_torch, (stage, plan)


def test_contract_from_installed_metadata_splits_extras(tmp_path, monkeypatch):
    """When the core is pip-installed, its Requires-Dist lines give the same contract."""
    contract = dependencies.load_contract()
    lines = [f"Metadata-Version: 2.1\nName: {contract.name}-probe\nVersion: 0.1.0"]
    lines += [f"Requires-Dist: {line}" for line in contract.dependencies]
    for extra, requirements in contract.extras.items():
        lines.append(f"Provides-Extra: {extra}")
        for line in requirements:
            requirement = Requirement(line.replace(contract.name, f"{contract.name}-probe"))
            marker = f"({requirement.marker}) and extra == \"{extra}\"" if requirement.marker else f"extra == \"{extra}\""
            requirement.marker = None
            lines.append(f"Requires-Dist: {requirement}; {marker}")
    info = tmp_path / f"{contract.name.replace('-', '_')}_probe-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = dependencies.contract_from_metadata(f"{contract.name}-probe")
    assert probe.dependencies == contract.dependencies
    for extra in ("maps", "segment", "report"):
        assert [Requirement(line).name for line in probe.extras[extra]] == \
            [Requirement(line).name for line in contract.extras[extra]]
    def pins(requirements):
        return sorted(dependencies.pip_requirement(r) for r in requirements)

    for python in ((3, 9), (3, 12)):
        assert pins(probe.requirements(["all"], python)) == pins(contract.requirements(["all"], python))


def test_slicer_bundled_set_covers_every_package_slicer_ships():
    shipped = set()
    for tag in TAGS:
        shipped |= {canonicalize_name(name) for name in SLICER_API["tags"][tag]["python_packages"]}
    assert shipped | {"simpleitk", "vtk"} <= dependencies.SLICER_BUNDLED, \
        sorted(shipped - dependencies.SLICER_BUNDLED)


def _stand_in_slicer(tmp_path, installs, errors):
    return types.SimpleNamespace(
        app=types.SimpleNamespace(testingEnabled=lambda: True, temporaryPath=str(tmp_path)),
        util=types.SimpleNamespace(confirmOkCancelDisplay=lambda *a, **k: True, errorDisplay=errors.append,
                                   pip_install=installs.append, WaitCursor=contextlib.nullcontext))


@pytest.mark.parametrize("tag", TAGS)
def test_pip_command_line_pins_slicers_pydicom_so_highdicom_resolves_to_0_22(tag, tmp_path, monkeypatch):
    """The exact argument list ensure_packages hands to `pip install`: the report extra, constrained to Slicer's own versions
    (pydicom 2.4.x, numpy, pillow, ...) and torch, so pip picks highdicom 0.22.0 (0.23+ needs
    pydicom >= 3.0.1) instead of upgrading Slicer's pydicom."""
    installs, errors = [], []
    version_of = fresh_slicer(tag, {"torch": "2.4.1"})
    monkeypatch.setitem(sys.modules, "slicer", _stand_in_slicer(tmp_path, installs, errors))
    # What the progress-dialog install hands to `pip install` (install_with_progress runs it as a job).
    monkeypatch.setattr(slicer_bridge, "install_with_progress", lambda requirements, constraints_file=None, log=None:
                        installs.append(dependencies.pip_install_arguments(requirements, constraints_file)))
    monkeypatch.setattr(dependencies, "installed_version", version_of)
    monkeypatch.setattr(dependencies, "stage_plan", lambda stage, _plan=dependencies.stage_plan: _plan(
        stage, version_of=version_of, python=python_of(tag)))
    assert slicer_bridge.ensure_packages("report") and errors == []
    (arguments,) = installs
    assert arguments[0] == "--constraint"
    expected = ["pylibjpeg>=1.4", "pylibjpeg-libjpeg>=1.3", "pylibjpeg-openjpeg>=1.3", "nibabel>=5.0", "tqdm>=4.60",
                "highdicom>=0.22", "matplotlib>=3.7", "scikit-image>=0.21"]
    assert arguments[2:] == expected + (["tomli>=1.1"] if python_of(tag) < (3, 11) else [])
    pins = Path(arguments[1]).read_text(encoding="utf-8").split()
    bundled = SLICER_API["tags"][tag]["python_packages"]
    assert f"pydicom=={bundled['pydicom']}" in pins and bundled["pydicom"].startswith("2.4.")
    assert f"numpy=={bundled['numpy']}" in pins and "torch==2.4.1" in pins
    assert not any(pin.startswith("highdicom") for pin in pins)


def test_a_bundled_package_below_a_floor_stops_the_step_with_a_message(tmp_path, monkeypatch):
    installs, errors = [], []
    version_of = fresh_slicer("v5.6.0", {"pydicom": "2.2.2"})
    monkeypatch.setitem(sys.modules, "slicer", _stand_in_slicer(tmp_path, installs, errors))
    monkeypatch.setattr(dependencies, "stage_plan", lambda stage, _plan=dependencies.stage_plan: _plan(
        stage, version_of=version_of, python=(3, 9)))
    assert not slicer_bridge.ensure_packages("ff")
    assert installs == [] and "pydicom 2.2.2" in errors[0]
