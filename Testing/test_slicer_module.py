"""Static checks of the Slicer module, which cannot run without Slicer on CI.

- every module file compiles;
- MyositisQMRI/CMakeLists.txt lists every Python file and resource that is on disk;
- the .ui file is valid XML whose SlicerParameterName properties match the parameter class;
- the widget only touches .ui widgets that exist;
- the core package and the Slicer-free helpers never import slicer, qt, ctk or vtk.
"""
from __future__ import annotations

import ast
import fnmatch
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "MyositisQMRI"
MODULE_PY = MODULE_DIR / "MyositisQMRI.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MyositisQMRI.ui"
CMAKE = MODULE_DIR / "CMakeLists.txt"
SLICER_MODULES = {"slicer", "qt", "ctk", "vtk", "__main__", "SampleData", "DICOMLib", "PyTorchUtils"}


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts and ".egg-info" not in str(p))


def _cmake_text() -> str:
    return re.sub(r"#[^\n]*", "", CMAKE.read_text())


def _cmake_set(name: str) -> list[str]:
    match = re.search(rf"set\(\s*{name}\s+(.*?)\)", _cmake_text(), re.S)
    assert match, f"{name} is not set in {CMAKE}"
    return [item.replace("${MODULE_NAME}", "MyositisQMRI") for item in match.group(1).split()]


def _cmake_globs(variable: str) -> list[str]:
    match = re.search(rf"file\(\s*GLOB(?:_RECURSE)?\s+{variable}\s+(.*?)\)", _cmake_text(), re.S)
    assert match, f"{variable} is not globbed in {CMAKE}"
    return [item.replace("${CMAKE_CURRENT_SOURCE_DIR}/", "") for item in match.group(1).split()
            if item.startswith("${CMAKE_CURRENT_SOURCE_DIR}/")]


def _parameter_fields() -> tuple[set[str], set[str]]:
    tree = ast.parse(MODULE_PY.read_text())
    fields, hidden = set(), set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            fields |= {stmt.target.id for stmt in node.body if isinstance(stmt, ast.AnnAssign)}
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "HIDDEN_PARAMETERS":
            hidden = set(ast.literal_eval(node.value))
    return fields, hidden


def _ui_tree() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


@pytest.mark.parametrize("path", [MODULE_PY, *_python_files(MODULE_DIR / "MyositisQMRILib")], ids=lambda p: p.name)
def test_module_files_compile(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


def test_cmake_scripts_match_python_files_on_disk():
    explicit = set(_cmake_set("MODULE_PYTHON_SCRIPTS"))
    globbed = set()
    for pattern in _cmake_globs("MODULE_CORE_SCRIPTS"):
        folder, suffix = pattern.split("/*")
        globbed |= {str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / folder).rglob("*" + suffix)
                    if "__pycache__" not in p.parts}
    on_disk = {str(p.relative_to(MODULE_DIR)) for p in _python_files(MODULE_DIR)}
    listed = explicit | globbed
    assert not (explicit - on_disk), f"CMake lists missing files: {sorted(explicit - on_disk)}"
    assert listed == on_disk, (
        f"Python files not in MyositisQMRI/CMakeLists.txt SCRIPTS: {sorted(on_disk - listed)}; "
        "add them to MODULE_PYTHON_SCRIPTS (the core package myositis_qmri is globbed)")
    assert "myositis_qmri/cli.py" in globbed, "the core package must be part of SCRIPTS"


def test_cmake_resources_match_files_on_disk():
    explicit = set(_cmake_set("MODULE_PYTHON_RESOURCES"))
    assert all((MODULE_DIR / r).is_file() for r in explicit), [r for r in explicit if not (MODULE_DIR / r).is_file()]
    patterns = _cmake_globs("MODULE_DATA_RESOURCES")
    for sub in ("UI", "Icons", "Terminology", "Models"):
        for path in (MODULE_DIR / "Resources" / sub).glob("*"):
            if path.is_file() and not path.name.startswith("."):
                rel = str(path.relative_to(MODULE_DIR))
                assert rel in explicit or any(fnmatch.fnmatch(rel, p) for p in patterns), \
                    f"{rel} is not in RESOURCES of MyositisQMRI/CMakeLists.txt"
    assert "Resources/UI/MyositisQMRI.ui" in explicit
    assert "Resources/Icons/MyositisQMRI.png" in explicit


def test_extension_cmake_metadata():
    text = (ROOT / "CMakeLists.txt").read_text()
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', text), f"EXTENSION_{key} missing"
    assert 'set(EXTENSION_CATEGORY "Quantification")' in text
    assert re.search(r'set\(EXTENSION_DEPENDS "[^"]*PyTorch', text)
    assert "add_subdirectory(MyositisQMRI)" in text
    assert (ROOT / "Resources" / "MyositisQMRI.png").is_file()


def test_icons_are_png_128():
    from PIL import Image

    for path in (MODULE_DIR / "Resources/Icons/MyositisQMRI.png", ROOT / "Resources/MyositisQMRI.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (128, 128)


def test_ui_parameter_names_match_parameter_class():
    fields, hidden = _parameter_fields()
    assert fields, "no @parameterNodeWrapper class found"
    assert hidden <= fields
    names = [p.find("string").text for p in _ui_tree().iter("property") if p.get("name") == "SlicerParameterName"]
    assert len(names) == len(set(names)), "a parameter is bound to two widgets"
    assert set(names) == fields - hidden, (
        f"in .ui but not in the class: {sorted(set(names) - fields)}; "
        f"in the class but bound to no widget: {sorted(fields - hidden - set(names))}")


def test_ui_widgets_used_by_the_widget_exist():
    ui_names = {w.get("name") for w in _ui_tree().iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text()))
    assert used <= ui_names, f"widgets missing from the .ui file: {sorted(used - ui_names)}"
    for combo in (w for w in _ui_tree().iter("widget") if w.get("class") == "qMRMLNodeComboBox"):
        receivers = {c.findtext("receiver") for c in _ui_tree().iter("connection")
                     if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
        assert combo.get("name") in receivers, f"{combo.get('name')} never gets the MRML scene"


def test_every_chart_choice_has_a_measure():
    tree = ast.parse(MODULE_PY.read_text())
    measures = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                    and getattr(node.targets[0], "id", None) == "CHART_MEASURES")
    choice = next(node for node in ast.walk(tree) if isinstance(node, ast.AnnAssign)
                  and getattr(node.target, "id", None) == "chartMeasure")
    choices = ast.literal_eval(next(call.args[0] for call in ast.walk(choice.annotation)
                                    if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Choice"))
    assert choices == list(measures)


def test_module_follows_slicer_template():
    tree = ast.parse(MODULE_PY.read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    bases = {name: {getattr(b, "id", None) for b in node.bases} for name, node in classes.items()}
    assert "ScriptedLoadableModule" in bases["MyositisQMRI"]
    assert {"ScriptedLoadableModuleWidget", "VTKObservationMixin"} <= bases["MyositisQMRIWidget"]
    assert "ScriptedLoadableModuleLogic" in bases["MyositisQMRILogic"]
    assert "ScriptedLoadableModuleTest" in bases["MyositisQMRITest"]
    assert '"Quantification"' in MODULE_PY.read_text()
    assert "registerCustomSampleDataSource" in MODULE_PY.read_text()


def _imported_roots(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    roots = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_never_imports_slicer_qt_ctk_vtk():
    offenders = {str(p.relative_to(ROOT)): sorted(_imported_roots(p, False) & SLICER_MODULES)
                 for p in _python_files(MODULE_DIR / "myositis_qmri")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"core modules importing Slicer: {offenders}"


def test_helpers_import_slicer_only_lazily():
    lib = MODULE_DIR / "MyositisQMRILib"
    for path in _python_files(lib):
        assert not (_imported_roots(path, True) & SLICER_MODULES), f"{path.name} imports Slicer at module level"
        if path.name != "slicer_bridge.py":
            assert not (_imported_roots(path, False) & SLICER_MODULES), f"{path.name} must stay Slicer-free"


def test_terminology_file_the_module_loads_exists_and_names_its_context():
    import json
    tree = ast.parse(MODULE_PY.read_text())
    assign = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "TERMINOLOGY_FILE")
    parts = [a.value for a in assign.value.args if isinstance(a, ast.Constant)]
    path = MODULE_DIR.joinpath(*parts)
    context = json.loads(path.read_text())["SegmentationCategoryTypeContextName"]
    assert f'loadMuscleTerminology(), "{context}"' in MODULE_PY.read_text()   # the self-test checks the name
    assert "loadMuscleTerminology" in MODULE_PY.read_text().split("class MyositisQMRIParameterNode")[0]
