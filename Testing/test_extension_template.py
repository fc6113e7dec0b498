"""The extension's CMake files, catalog entry and README install steps follow Slicer's own
extension wizard templates (Utilities/Templates) at v5.6.0, v5.8.0 and v5.10.0.

What the templates set is recorded in Testing/slicer_api/slicer_api.json by
Testing/slicer_api/generate_slicer_api.py (extension_template), so this runs offline.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
TOP = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
MODULE = (ROOT / "MyositisQMRI" / "CMakeLists.txt").read_text(encoding="utf-8")
CATALOG = json.loads((ROOT / "Utilities" / "ExtensionsIndex" / "MyositisQMRI.json").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
TEMPLATES = {tag: info["extension_template"] for tag, info in json.loads(
    (ROOT / "Testing" / "slicer_api" / "slicer_api.json").read_text(encoding="utf-8"))["tags"].items()}


def cmake_variable(name: str) -> str:
    match = re.search(rf'^set\({name}\s+"?([^")]*)"?\)', TOP, re.M)
    return match.group(1) if match else ""


def test_the_three_templates_are_recorded():
    assert set(TEMPLATES) == {"v5.6.0", "v5.8.0", "v5.10.0"}


@pytest.mark.parametrize("tag", sorted(TEMPLATES))
def test_top_level_cmake_sets_what_the_template_sets(tag):
    template = TEMPLATES[tag]
    for variable in template["extension_variables"]:
        assert cmake_variable(variable), f"{variable} (set by the {tag} template) is missing"
    for include in template["includes"]:
        assert f"include(${{{include}}})" in TOP
    assert "add_subdirectory(MyositisQMRI)" in TOP
    ours = re.search(r"cmake_minimum_required\(VERSION ([\d.]+)\.\.\.([\d.]+)", TOP)
    low, high = template["cmake_minimum_required"].split("...")
    assert Version(ours.group(1)) <= Version(low), "a Slicer build tree of this tag would be refused"
    assert Version(ours.group(2)) >= Version(high), "older CMake policies than the template's"


@pytest.mark.parametrize("tag", sorted(TEMPLATES))
def test_module_cmake_calls_the_scripted_module_macro_like_the_template(tag):
    template = TEMPLATES[tag]
    call = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", MODULE, re.S).group(1)
    assert re.findall(r"^\s*([A-Z_]+)\b", call, re.M) == template["module_macro_arguments"]
    for name in template["module_calls"]:
        assert f"{name}(" in MODULE
    assert "Resources/UI/${MODULE_NAME}.ui" in MODULE and "Resources/Icons/${MODULE_NAME}.png" in MODULE


def test_catalog_entry_matches_the_schema_and_the_cmake_metadata():
    required = {key for template in TEMPLATES.values() for key in template["catalog_required"]}
    assert required and required <= set(CATALOG)
    schema = next(t["catalog_schema"] for t in TEMPLATES.values() if t["catalog_schema"])
    assert CATALOG["$schema"].split("/")[-1].rstrip("#") == schema
    assert CATALOG["category"] == cmake_variable("EXTENSION_CATEGORY")
    assert CATALOG["build_dependencies"] == cmake_variable("EXTENSION_DEPENDS").split(";")


def test_readme_install_steps_name_labels_that_exist_in_every_slicer():
    install = " ".join(README[README.index("### Install"):README.index("### Radiologist's workflow")].split())
    for label in ("Extension Wizard", "Select Extension", "Additional module paths", "Install from file"):
        assert label in install
        assert all(any(label in found for found in t["ui_labels"]) for t in TEMPLATES.values()), label
    icon = cmake_variable("EXTENSION_ICONURL").split("/main/")[-1]
    screenshot = cmake_variable("EXTENSION_SCREENSHOTURLS").split("/main/")[-1]
    assert (ROOT / icon).is_file() and (ROOT / screenshot).is_file()
