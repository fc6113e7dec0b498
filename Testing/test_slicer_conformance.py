"""Every Slicer, MRML, Qt, CTK and VTK name the module uses exists in Slicer 5.6, 5.8 and 5.10.

The module cannot run on CI, so its calls are checked statically (ast) against
Testing/slicer_api/slicer_api.json, which Testing/slicer_api/generate_slicer_api.py reads from
Slicer's source at the three tags (with CTK's headers, the vtk wheels of the pinned VTK
releases and PyQt5 5.15 for Qt; see the generator). Checked, in MyositisQMRI.py and
MyositisQMRILib/*.py:

- chains on `slicer.` (namespace, util, modules, classes and their enum values), `qt.`, `ctk.`,
  `vtk.`, and the names imported from slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper,
  slicer.util, DICOMLib.DICOMUtils and SampleData;
- methods and attributes on values whose class can be inferred: nodes from
  AddNewNodeByClass/CreateNodeByClass/GetFirstNodeByClass/GetSingletonNode("vtkMRML..."),
  constructors (slicer.vtkX(), vtk.vtkX(), qt.QX()), slicer.mrmlScene, slicer.app, module
  logics, parameter-node attributes (from the parameterNodeWrapper class annotations), `.ui`
  widgets (from the .ui file), pointer return types from the headers, and function parameters
  whose every call site passes the same class;
- `self.` and `super().` members of the ScriptedLoadableModule subclasses, and the members used
  on the parameterNodeWrapper object.

A class reached through a declared return type may be a subclass at run time (VTK returns the
real type), so such a member is accepted when the class or any subclass in the data has it.
"""
from __future__ import annotations

import ast
import json
import re
import unittest
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "MyositisQMRI"
MODULE_FILES = [MODULE_DIR / "MyositisQMRI.py", *sorted((MODULE_DIR / "MyositisQMRILib").glob("*.py"))]
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MyositisQMRI.ui"
API_FILE = ROOT / "Testing" / "slicer_api" / "slicer_api.json"
TAGS = ("v5.6.0", "v5.8.0", "v5.10.0")

# PythonQt's own additions to every wrapped QObject (PythonQtInstanceWrapper / PythonQtClassWrapper).
PYTHONQT_QOBJECT = {"connect", "disconnect", "className", "delete", "help", "inherits", "findChild",
                    "findChildren", "setProperty", "property", "parent", "objectName", "setObjectName",
                    "blockSignals", "metaObject", "dynamicPropertyNames"}
# What slicer.util functions return (their docstrings; the data has no return types for Python).
UTIL_RETURNS = {"loadVolume": "vtkMRMLScalarVolumeNode", "loadLabelVolume": "vtkMRMLLabelMapVolumeNode",
                "loadSegmentation": "vtkMRMLSegmentationNode", "getNode": "vtkMRMLNode",
                "getFirstNodeByClassByName": "vtkMRMLNode", "loadUI": "@ui"}
# The module's naming convention for unannotated parameters whose call sites do not tell.
PARAMETER_NAMES = {"segmentation_node": "vtkMRMLSegmentationNode", "sequence_node": "vtkMRMLSequenceNode",
                   "reference_volume": "vtkMRMLVolumeNode", "source_volume": "vtkMRMLVolumeNode",
                   "volume_node": "vtkMRMLVolumeNode", "editor_widget": "qMRMLSegmentEditorWidget",
                   "segment": "vtkSegment"}
NODE_FACTORIES = {"AddNewNodeByClass": 0, "CreateNodeByClass": 0, "GetFirstNodeByClass": 0,
                  "GetSingletonNode": 1, "AddNewNodeByClassWithID": 0}
SLICER_SINGLETONS = {"mrmlScene": "vtkMRMLScene", "app": "qSlicerApplication", "dicomDatabase": "ctkDICOMDatabase"}


def load_api(tag: str) -> dict:
    """The names of one tag, undoing the generator's sharing of identical entries across tags."""
    data = json.loads(API_FILE.read_text(encoding="utf-8"))
    info = dict(data["tags"][tag])
    for key, variants in data["lists"].items():
        found = next((v["names"] for v in variants if tag in v["tags"]), None)
        info[key] = set(found) if found is not None else None
    classes = {}
    for name, variants in data["classes"].items():
        cls = next((v for v in variants if tag in v["tags"]), None)
        if cls is not None:
            methods = dict(m.partition(":")[::2] for m in cls.get("methods", []))
            classes[name] = {"base": cls.get("base", ""), "methods": methods,
                             "constants": set(cls.get("constants", [])), "properties": set(cls.get("properties", {}))}
    info["classes"] = classes
    return info


def ui_widgets(text: str) -> dict:
    """.ui widget name -> its class, and "@top" -> the top widget's class."""
    found = {name: cls for cls, name in re.findall(r'<widget class="(\w+)" name="(\w+)"', text)}
    top = re.search(r'<widget class="(\w+)"', text)
    found["@top"] = top.group(1) if top else ""
    return found


@dataclass
class Finding:
    file: str
    line: int
    text: str

    def __str__(self):
        return f"{self.file}:{self.line}: {self.text}"


@dataclass(frozen=True)
class Type:
    """An inferred value: a C++/Python class instance, a class object, or a marker."""

    name: str
    kind: str = "instance"     # instance | class | param | pyclass | module | ui
    exact: bool = True         # False: from a declared return type (a subclass at run time)


@dataclass
class Checker:
    api: dict
    ui: dict
    local_classes: dict = field(default_factory=dict)     # name -> ast.ClassDef (module's own)
    parameter_fields: dict = field(default_factory=dict)  # name -> class name or ""
    parameter_class: str = ""
    function_params: dict = field(default_factory=dict)   # function name -> {param: Type}
    findings: list = field(default_factory=list)
    checked: int = 0
    uncovered: set = field(default_factory=set)

    # --- the data ---

    def chain(self, cls: str):
        seen = []
        while cls and cls not in seen:
            seen.append(cls)
            cls = self.api["classes"].get(cls, {}).get("base", "")
        return seen

    def member(self, cls: str, name: str, exact: bool = True):
        """(found, returned class) for cls.name; found None when the chain leaves the data."""
        for klass in self.chain(cls):
            data = self.api["classes"].get(klass)
            if data is None:
                if klass.startswith("Q") and name in PYTHONQT_QOBJECT:
                    return True, ""
                self.uncovered.add(klass)
                return None, ""
            if name in data["methods"]:
                return True, data["methods"][name]
            if name in data["constants"] or name in data["properties"]:
                return True, ""
        if name in PYTHONQT_QOBJECT and any(k in ("QObject", "QWidget") or k.startswith("q") for k in self.chain(cls)):
            return True, ""
        if not exact:   # the real object may be a subclass
            for other, data in self.api["classes"].items():
                if cls in self.chain(other)[1:] and (name in data["methods"] or name in data["constants"]
                                                     or name in data["properties"]):
                    return True, data["methods"].get(name, "")
        return False, ""

    def known_class(self, name: str) -> bool:
        return name in self.api["class_names"] or name in self.api["classes"]

    # --- reporting ---

    def check(self, ok, node, text):
        if ok is None:
            return
        self.checked += 1
        if not ok:
            self.findings.append(Finding(self.file, getattr(node, "lineno", 0), text))

    # --- inference ---

    def type_of(self, node, env) -> Type | None:
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.BoolOp):
            return next((t for t in (self.type_of(v, env) for v in node.values) if t), None)
        if isinstance(node, ast.IfExp):
            return self.type_of(node.body, env) or self.type_of(node.orelse, env)
        if isinstance(node, ast.Attribute):
            return self.attribute_type(node, env)
        if isinstance(node, ast.Call):
            return self.call_type(node, env)
        return None

    def attribute_type(self, node: ast.Attribute, env) -> Type | None:
        base = self.type_of(node.value, env)
        if base is None:
            if isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name) \
                    and node.value.value.id == "self" and node.value.attr == "ui":
                cls = self.ui.get(node.attr)
                return Type(cls) if cls else None
            return env.get(ast.unparse(node))
        if base.kind == "module":
            if base.name == "slicer" and node.attr in SLICER_SINGLETONS:
                return Type(SLICER_SINGLETONS[node.attr])
            if base.name in ("slicer", "vtk", "qt", "ctk") and self.known_class(node.attr):
                return Type(node.attr, "class")
            if base.name == "qt" and node.attr[:1] == "Q":
                return Type(node.attr, "class")
            if base.name == "slicer" and node.attr == "modules":
                return Type("slicer.modules", "module")
            if base.name == "slicer.modules" and self.api["modules"].get(node.attr):
                return Type(node.attr, "slicermodule")
            if base.name == "slicer" and node.attr in ("util", "ScriptedLoadableModule", "parameterNodeWrapper"):
                return Type(f"slicer.{node.attr}", "module")
            return None
        if base.kind == "param":
            cls = self.parameter_fields.get(node.attr)
            return Type(cls) if cls else None
        return env.get(ast.unparse(node))

    def call_type(self, node: ast.Call, env) -> Type | None:
        func = node.func
        if isinstance(func, ast.Attribute):
            base = self.type_of(func.value, env)
            if base is not None and base.kind == "slicermodule" and func.attr == "logic":
                return Type(self.api["modules"][base.name])
            if base is not None and base.kind == "module" and base.name == "slicer.util" and func.attr in UTIL_RETURNS:
                returned = UTIL_RETURNS[func.attr]
                return Type(self.ui.get("@top", "")) if returned == "@ui" else Type(returned, exact=False)
            if func.attr in NODE_FACTORIES and len(node.args) > NODE_FACTORIES[func.attr]:
                arg = node.args[NODE_FACTORIES[func.attr]]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    return Type(arg.value)
            if func.attr == "getParameterNode":
                return Type(self.parameter_class, "param")
            if base is not None and base.kind == "instance":
                found, returned = self.member(base.name, func.attr, base.exact)
                return Type(returned, exact=False) if found and returned else None
        callee = self.type_of(func, env)
        if callee is not None and callee.kind == "class":
            return Type(callee.name)
        if isinstance(func, ast.Name) and func.id in self.local_classes:
            return Type(func.id, "pyclass")
        return None

    # --- scopes ---

    def environment(self, scope, outer, self_env):
        env = dict(outer)
        env.update(self_env)
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in scope.args.args + scope.args.kwonlyargs:
                if arg.annotation is not None:
                    text = ast.unparse(arg.annotation).strip("'\"").split(".")[-1]
                    if self.known_class(text):
                        env[arg.arg] = Type(text)
                known = self.function_params.get(scope.name, {}).get(arg.arg)
                if known is not None and arg.arg not in env:
                    env[arg.arg] = known
        for _ in range(2):
            for node in ast.walk(scope):
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target in targets:
                        pairs = [(target, node.value)]
                        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) \
                                and len(target.elts) == len(node.value.elts):
                            pairs = list(zip(target.elts, node.value.elts))
                        for name, expression in pairs:
                            value = self.type_of(expression, env)
                            if isinstance(name, (ast.Name, ast.Attribute)) and value is not None:
                                env[ast.unparse(name)] = value
                elif isinstance(node, ast.NamedExpr):
                    value = self.type_of(node.value, env)
                    if value is not None:
                        env[node.target.id] = value
        return env

    def visit_file(self, path: Path, tree: ast.Module, module_env: dict) -> None:
        self.file = path.name
        self.check_imports(tree)
        top_env = self.environment(ast.Module(body=[n for n in tree.body if not isinstance(
            n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))], type_ignores=[]), module_env, {})
        self.check_scope(tree, top_env, functions=False)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.check_scope(node, self.environment(node, top_env, {}))
            elif isinstance(node, ast.ClassDef):
                self_env = {"self": Type(node.name, "pyclass")}
                if node.name == self.parameter_class:
                    continue
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self_env.update({k: v for k, v in self.environment(item, top_env, {}).items()
                                         if k.startswith("self.")})
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.check_scope(item, self.environment(item, top_env, self_env))
                self.check_python_members(node)

    def check_scope(self, scope, env, functions=True) -> None:
        for node in ast.walk(scope):
            if not functions and isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.Attribute):
                self.check_attribute(node, env)
            if isinstance(node, ast.Call):
                self.record_call(node, env)

    def check_attribute(self, node: ast.Attribute, env) -> None:
        base = self.type_of(node.value, env)
        if base is None:
            return
        text = ast.unparse(node)
        if base.kind == "module":
            names = self.module_names(base.name)
            if names is not None:
                self.check(node.attr in names, node, f"{text}: '{node.attr}' is not in {base.name} at {self.tag}")
        elif base.kind in ("class", "instance"):
            found, _ = self.member(base.name, node.attr, base.exact)
            self.check(found, node, f"{text}: {base.name} has no '{node.attr}' at {self.tag}")
        elif base.kind == "param":
            allowed = set(self.parameter_fields) | set(self.api["parameter_node_wrapper_members"]) | {"parameterNode"}
            self.check(node.attr in allowed, node, f"{text}: not a parameter of {self.parameter_class} "
                       "nor a parameterNodeWrapper member")
        elif base.kind == "slicermodule":
            self.check(node.attr in ("logic", "widgetRepresentation", "name", "title", "path"), node,
                       f"{text}: unexpected module attribute")

    def module_names(self, name):
        if name == "slicer":
            return self.api["slicer"]
        if name == "slicer.modules":
            return set(self.api["modules"])
        if name == "vtk":
            return self.api.get("vtk")
        if name == "qt":
            return self.api.get("qt")
        if name == "ctk":
            return {n for n in self.api["class_names"] if n.startswith("ctk")}
        module = self.api["python_modules"].get(name)
        return set(module["names"]) if module else None

    def record_call(self, node: ast.Call, env) -> None:
        """Types of the arguments at call sites of the module's own functions (slicer_bridge.f(...))."""
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name is None:
            return
        for index, arg in enumerate(node.args):
            value = self.type_of(arg, env)
            self.call_sites.setdefault(name, {}).setdefault(index, []).append(value)

    def check_imports(self, tree) -> None:
        """from slicer / slicer.<module> / DICOMLib import X: X exists at this tag."""
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            for alias in node.names:
                if node.module == "slicer":
                    names = self.api["slicer"]
                elif node.module == "DICOMLib":
                    names = {name.split(".")[1] for name in self.api["python_modules"] if name.startswith("DICOMLib.")}
                elif node.module in self.api["python_modules"]:
                    names = set(self.api["python_modules"][node.module]["names"])
                else:
                    continue
                self.check(alias.name in names, node, f"from {node.module} import {alias.name}: missing at {self.tag}")

    def check_python_members(self, cls: ast.ClassDef) -> None:
        """self.X / super().X in a ScriptedLoadableModule subclass: its own or its bases' members."""
        own = {item.name for item in cls.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
        own |= {item.target.id for item in cls.body if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
        own |= {n.attr for n in ast.walk(cls) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                and n.value.id == "self" and isinstance(n.ctx, ast.Store)}
        bases = [ast.unparse(b).split(".")[-1] for b in cls.bases]
        inherited, covered = set(), bool(bases)
        for base in bases:
            members = self.python_class_members(base)
            if members is None:
                covered = False
            else:
                inherited |= members
        if not covered:
            return
        for node in ast.walk(cls):
            if not isinstance(node, ast.Attribute):
                continue
            is_self = isinstance(node.value, ast.Name) and node.value.id == "self"
            is_super = isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "super"
            if (is_self and node.attr not in own) or is_super:
                self.check(node.attr in inherited or (is_self and node.attr in own), node,
                           f"{ast.unparse(node)}: not in {cls.name} nor its bases {bases} at {self.tag}")

    def python_class_members(self, name: str):
        if name == "object":
            return set(dir(object))
        if name == "TestCase":
            return set(dir(unittest.TestCase))
        for module in self.api["python_modules"].values():
            cls = module["classes"].get(name)
            if cls is not None:
                members = set(cls["members"])
                for base in cls["bases"]:
                    inner = self.python_class_members(base.split(".")[-1])
                    if inner is None:
                        return None
                    members |= inner
                return members
        return None


def parameter_fields(tree: ast.Module, known) -> tuple[str, dict]:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any("parameterNodeWrapper" in ast.unparse(d) for d in node.decorator_list):
            fields = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    text = ast.unparse(item.annotation).split(".")[-1]
                    fields[item.target.id] = text if known(text) else ""
            return node.name, fields
    return "", {}


def run_checker(tag: str, sources: dict | None = None) -> Checker:
    """Check the module's files (or `sources`: name -> code) against one tag's data."""
    api = load_api(tag)
    sources = sources or {path.name: path.read_text(encoding="utf-8") for path in MODULE_FILES}
    trees = {name: ast.parse(code) for name, code in sources.items()}
    checker = Checker(api, ui_widgets(UI_FILE.read_text(encoding="utf-8")))
    checker.tag = tag
    for tree in trees.values():
        name, fields = parameter_fields(tree, checker.known_class)
        if name:
            checker.parameter_class, checker.parameter_fields = name, fields
        checker.local_classes.update({n.name: n for n in tree.body if isinstance(n, ast.ClassDef)})
    for _ in range(3):   # parameter types from call sites, then check again with them
        checker.findings, checker.checked, checker.call_sites = [], 0, {}
        for name, tree in trees.items():
            module_env = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name in ("slicer", "vtk", "qt", "ctk", "SampleData"):
                            module_env[alias.asname or alias.name] = Type(alias.name, "module")
                elif isinstance(node, ast.ImportFrom) and node.module in ("slicer", "DICOMLib"):
                    for alias in node.names:
                        if node.module == "slicer" and checker.known_class(alias.name):
                            module_env[alias.asname or alias.name] = Type(alias.name, "class")
                        elif node.module == "DICOMLib":
                            module_env[alias.asname or alias.name] = Type(f"DICOMLib.{alias.name}", "module")
            checker.visit_file(Path(name), tree, module_env)
        params = {}
        for tree in trees.values():
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    sites = checker.call_sites.get(node.name, {})
                    names = [a.arg for a in node.args.args if a.arg != "self"]
                    for index, arg in enumerate(names):
                        kinds = {(t.name, t.kind) for t in sites.get(index, []) if t is not None
                                 and t.kind in ("instance", "param")}
                        if len(kinds) == 1:   # every typed call site agrees
                            name, kind = kinds.pop()
                            params.setdefault(node.name, {})[arg] = Type(name, kind, exact=False)
                        elif arg in PARAMETER_NAMES:
                            params.setdefault(node.name, {})[arg] = Type(PARAMETER_NAMES[arg], exact=False)
        checker.function_params = params
    return checker


@pytest.mark.parametrize("tag", TAGS)
def test_every_slicer_call_of_the_module_exists(tag):
    checker = run_checker(tag)
    assert checker.checked > 300, checker.checked     # the inference keeps reaching the module's calls
    assert not checker.findings, "\n".join(map(str, checker.findings))


def test_the_data_covers_qt_ctk_and_vtk():
    data = json.loads(API_FILE.read_text(encoding="utf-8"))
    assert data["not_covered"] == []
    for tag in TAGS:
        api = load_api(tag)
        assert api["qt"] and api["vtk"] and "ctkPathLineEdit" in api["classes"]
        assert "vtkMRMLScene" in api["classes"] and "pip_install" in api["python_modules"]["slicer.util"]["names"]


MISSPELT = [
    ("slicer.util.pip_instal('x')", "pip_instal"),
    ("slicer.mrmlScene.AddNewNodeByClas('vtkMRMLTableNode')", "AddNewNodeByClas"),
    ("node = slicer.mrmlScene.AddNewNodeByClass('vtkMRMLTableNode')\nnode.AddColumnn()", "AddColumnn"),
    ("chart = slicer.mrmlScene.AddNewNodeByClass('vtkMRMLPlotChartNode')\nchart.SetXAxisTitel('x')", "SetXAxisTitel"),
    ("qt.QTimer.singleShoot(0, print)", "singleShoot"),
    ("vtk.vtkDoubleArray().InsertNextValu(1.0)", "InsertNextValu"),
    ("slicer.modules.plots.logic().ShowChartInLayot(None)", "ShowChartInLayot"),
    ("x = slicer.vtkMRMLPlotSeriesNode.PlotTypeBars", "PlotTypeBars"),
    ("slicer.app.temporaryPat", "temporaryPat"),
    ("seg = slicer.mrmlScene.AddNewNodeByClass('vtkMRMLSegmentationNode')\nseg.GetSegmentation().GetNthSegmnt(0)", "GetNthSegmnt"),
]


@pytest.mark.parametrize("snippet, word", MISSPELT)
def test_an_injected_misspelling_is_caught(snippet, word):
    code = "import slicer\nimport qt\nimport vtk\n\n\ndef probe():\n" + "".join(
        f"    {line}\n" for line in snippet.splitlines())
    checker = run_checker("v5.10.0", {"probe.py": code})
    assert any(word in finding.text for finding in checker.findings), (snippet, checker.findings)
    fixed = run_checker("v5.10.0", {"probe.py": code.replace(word, _fix(word))})
    assert not fixed.findings, fixed.findings


def _fix(word: str) -> str:
    return {"pip_instal": "pip_install", "AddNewNodeByClas": "AddNewNodeByClass", "AddColumnn": "AddColumn",
            "SetXAxisTitel": "SetXAxisTitle", "singleShoot": "singleShot", "InsertNextValu": "InsertNextValue",
            "ShowChartInLayot": "ShowChartInLayout", "PlotTypeBars": "PlotTypeBar", "temporaryPat": "temporaryPath",
            "GetNthSegmnt": "GetNthSegment"}[word]


def test_a_class_missing_from_an_older_slicer_is_caught():
    """A name that exists in 5.10 only fails the check against 5.6."""
    newer = sorted(load_api("v5.10.0")["class_names"] - load_api("v5.6.0")["class_names"])
    mrml = next(name for name in newer if name.startswith("vtkMRML"))
    code = f"import slicer\n\n\ndef probe():\n    slicer.mrmlScene.AddNewNodeByClass('{mrml}')\n    return slicer.{mrml}\n"
    assert not run_checker("v5.10.0", {"probe.py": code}).findings
    assert run_checker("v5.6.0", {"probe.py": code}).findings

