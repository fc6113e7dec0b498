#!/usr/bin/env python3
"""Write slicer_api.json: the Slicer, MRML, CTK, VTK and Qt names available in Slicer 5.6, 5.8, 5.10.

Why: the module cannot run on CI, so Testing/test_slicer_conformance.py checks every attribute
chain it uses on `slicer.`, MRML nodes, `qt.`, `ctk.` and `vtk.` against this list instead. The
list is data read from the sources, not typed by hand:

- Slicer (git tags v5.6.0, v5.8.0, v5.10.0 of github.com/Slicer/Slicer): the `slicer` namespace
  (Base/Python/slicer submodules, names set with setattr/assignment on `slicer` in Python code,
  every exported C++ class), `slicer.util`, `slicer.ScriptedLoadableModule`,
  `slicer.parameterNodeWrapper` (and the methods it adds to a wrapped class), DICOMLib.DICOMUtils,
  SampleData, the loadable modules and the logic class each creates, and for every exported
  C++ class its base class, public methods (with a pointer return type where there is one),
  vtkSet/Get/Boolean macro accessors, public enum values and Q_PROPERTY names; the bundled Python
  packages (SuperBuild/External_python-*.cmake), the Python, VTK and CTK versions.
- CTK (github.com/commontk/CTK at the commit each Slicer tag pins): the same header parse for
  the ctk classes the module names.
- VTK: Slicer's VTK fork at the pinned commits was not in the fetched snapshot, so the VTK
  classes come from the official `vtk` wheels of the same release (9.2.6 for the
  9.2.20230607 snapshot of 5.6/5.8, 9.5.2 for 5.10), introspected with dir() (--vtk-9.2 /
  --vtk-9.5 name folders where each wheel is unpacked).
- Qt: Slicer 5.6-5.10 wrap Qt 5.15 with PythonQt; qtbase is too large to fetch here, so Qt
  classes come from PyQt5 5.15 (--pyqt5 names its folder), introspected with dir(); Qt
  properties are added from the metaObject. PythonQt-only names (for example
  QWidget.findChildren variants) are not covered.

Only classes reachable from what the module uses (and their bases and pointer return types)
keep their methods, to keep the file small; every class name is listed, so a class that does
not exist is still caught. Rerun after the module starts using new classes:

    python Testing/slicer_api/generate_slicer_api.py --slicer /path/to/Slicer.git \
        --ctk /path/to/CTK.git --vtk-9.2 /tmp/vtk-9.2.6 --vtk-9.5 /tmp/vtk-9.5.2 --pyqt5 /tmp/pyqt5
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUTPUT = HERE / "slicer_api.json"
TAGS = ("v5.6.0", "v5.8.0", "v5.10.0")
MODULE_FILES = [ROOT / "MyositisQMRI" / "MyositisQMRI.py", *sorted((ROOT / "MyositisQMRI" / "MyositisQMRILib").glob("*.py"))]
UI_FILE = ROOT / "MyositisQMRI" / "Resources" / "UI" / "MyositisQMRI.ui"
PYTHON_MODULES = {"slicer.util": "Base/Python/slicer/util.py",
                  "slicer.ScriptedLoadableModule": "Base/Python/slicer/ScriptedLoadableModule.py",
                  "DICOMLib.DICOMUtils": "Modules/Scripted/DICOMLib/DICOMUtils.py",
                  "SampleData": "Modules/Scripted/SampleData/SampleData.py"}
# A base class is optional: classes of static helpers (vtkMRMLSubjectHierarchyConstants) have none.
CLASS_RE = re.compile(r"\bclass\s+(?:\w+_EXPORT\s+)([A-Za-z_]\w*)\s*(?:final\s*)?(?::\s*public\s+([\w:]+)[^{;]*)?\{")
ACCESS_RE = re.compile(r"^\s*(public|protected|private)\s*(?:slots|Q_SLOTS)?\s*:|^\s*(signals|Q_SIGNALS)\s*:", re.M)
MACRO_RE = re.compile(r"\b(vtk\w*?(Set|Get)\w*Macro|vtkBooleanMacro|vtkMRMLCopyContent\w*Macro)\s*\(\s*(\w+)(?:\s*,\s*(\w+))?")
METHOD_RE = re.compile(r"(?:\b((?:vtk|q|ctk|Q)\w+)\s*\*\s*)?\b([A-Za-z_]\w*)\s*\(")
ENUM_RE = re.compile(r"\benum\s+(?:class\s+)?(?:\w+\s*)?(?::\s*\w+\s*)?\{([^}]*)\}")
PROPERTY_RE = re.compile(r"Q_PROPERTY\s*\(\s*[\w:<>*\s]+?\s+\*?(\w+)\s+READ\s+(\w+)(?:\s+WRITE\s+(\w+))?")
NOT_METHODS = {"if", "for", "while", "switch", "return", "sizeof", "static_cast", "dynamic_cast", "const_cast",
               "reinterpret_cast", "operator", "Q_PROPERTY", "Q_OBJECT", "Q_DECLARE_PRIVATE", "Q_DISABLE_COPY",
               "Q_ENUMS", "Q_ENUM", "Q_FLAGS", "Q_INVOKABLE", "QT_DEPRECATED", "VTK_LEGACY", "defined"}


_READERS: dict = {}


def git_show(repo: Path, rev: str, path: str) -> str:
    """One file at one revision, through a `git cat-file --batch` kept open per repository."""
    reader = _READERS.get(repo)
    if reader is None:
        reader = _READERS[repo] = subprocess.Popen(["git", "--git-dir", str(repo), "cat-file", "--batch"],
                                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    reader.stdin.write(f"{rev}:{path}\n".encode())
    reader.stdin.flush()
    header = reader.stdout.readline().decode().split()
    if len(header) < 3 or header[1] == "missing":
        raise FileNotFoundError(f"{rev}:{path}")
    content = reader.stdout.read(int(header[2]) + 1)[:-1]
    return content.decode("utf-8", errors="replace")


def git_files(repo: Path, rev: str, *prefixes: str) -> list[str]:
    out = subprocess.run(["git", "--git-dir", str(repo), "ls-tree", "-r", "--name-only", rev, *prefixes],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def class_body(text: str, start: int) -> str:
    """The text between the class's braces (start: index of its opening brace)."""
    depth, i = 0, start
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
        i += 1
    return text[start + 1:]


def public_parts(body: str, default: str) -> str:
    """The public (and public slots) sections of a class body, with nested braces emptied
    (enum bodies kept)."""
    enums: list[str] = []

    def keep_enum(match):
        enums.append(match.group(0))
        return f" @ENUM{len(enums) - 1}@ "

    flat = ENUM_RE.sub(keep_enum, body)
    flat = re.sub(r"\{[^{}]*\}", "{}", flat)
    while re.search(r"\{[^{}]+\}", flat):
        flat = re.sub(r"\{[^{}]*\}", "{}", flat)
    parts, access, last = [], default, 0
    for match in ACCESS_RE.finditer(flat):
        if access == "public":
            parts.append(flat[last:match.start()])
        access, last = (match.group(1) or "signals"), match.end()
    if access == "public":
        parts.append(flat[last:])
    public = re.sub(r"@ENUM(\d+)@", lambda m: enums[int(m.group(1))], "\n".join(parts))
    return public, body


def parse_header(text: str) -> dict:
    """{class: {"base", "methods": {name: pointer return class or ""}, "constants", "properties"}}."""
    text = strip_comments(text)
    classes = {}
    for match in CLASS_RE.finditer(text):
        name, base = match.group(1), (match.group(2) or "").split("::")[-1]
        body = class_body(text, match.end() - 1)
        public, full = public_parts(body, "private")
        methods: dict[str, str] = {}
        for macro in MACRO_RE.finditer(public):
            kind, accessor, field = macro.group(1), macro.group(2), macro.group(3)
            if kind == "vtkBooleanMacro":
                methods[field + "On"] = methods[field + "Off"] = ""
            elif kind.startswith("vtkMRMLCopyContent"):
                methods.update(CopyContent="", HasCopyContent="")
            else:
                returned = macro.group(4) or ""
                methods[accessor + field] = returned if "Object" in kind and accessor == "Get" else ""
            if "SetGet" in kind or "SetClamp" in kind:
                methods["Set" + field] = methods.setdefault("Get" + field, "")
        for method in METHOD_RE.finditer(re.sub(r"\b\w+Macro\s*\([^)]*\)", " ", public)):
            returned, name_ = method.group(1) or "", method.group(2)
            if name_ in NOT_METHODS or name_.isupper() or name_ == name:
                continue
            if returned and returned == name_:
                returned = ""
            if not methods.get(name_):
                methods[name_] = returned
        constants = []
        for enum in ENUM_RE.finditer(public):
            for item in enum.group(1).split(","):
                item = item.split("=")[0].strip()
                if re.fullmatch(r"[A-Za-z_]\w*", item):
                    constants.append(item)
        properties = {}
        for prop in PROPERTY_RE.finditer(full):
            properties[prop.group(1)] = [prop.group(2)] + ([prop.group(3)] if prop.group(3) else [])
        if re.search(r"\bvtkTypeMacro\s*\(", public):
            methods.update({m: "" for m in ("IsA", "SafeDownCast", "NewInstance", "GetClassName", "IsTypeOf")})
        if re.search(r"static\s+\w+\s*\*\s*New\s*\(", public):
            methods["New"] = name
        classes[name] = {"base": base, "methods": methods, "constants": sorted(set(constants)),
                         "properties": properties}
    return classes


def parse_decorators(text: str) -> dict:
    """Methods PythonQt decorators add: static_<Class>_<name>(...) and <name>(<Class>* self, ...)."""
    text = strip_comments(text)
    added: dict[str, set] = {}
    for cls, name in re.findall(r"\bstatic_((?:q|vtk|ctk|Q)[A-Za-z0-9]+)_(\w+)\s*\(", text):
        added.setdefault(cls, set()).add(name)
    for name, cls in re.findall(r"\b(?!static_)([a-z]\w*)\s*\(\s*((?:q|vtk|ctk|Q)\w+)\s*\*\s*\w+", text):
        added.setdefault(cls, set()).add(name)
    return added


def python_names(text: str) -> dict:
    """Top-level names of a Python module and the methods (own and inherited names) of its classes."""
    tree = ast.parse(text)
    names, classes = set(), {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        if isinstance(node, ast.ClassDef):
            members = {item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
            for item in ast.walk(node):
                if (isinstance(item, ast.Attribute) and isinstance(item.value, ast.Name) and item.value.id == "self"
                        and isinstance(item.ctx, ast.Store)):
                    members.add(item.attr)
            classes[node.name] = {"bases": [ast.unparse(b) for b in node.bases], "members": sorted(members)}
    return {"names": sorted(names), "classes": classes}


def slicer_namespace(repo: Path, tag: str, class_names: set[str]) -> list[str]:
    names = set(class_names)
    for path in git_files(repo, tag, "Base/Python/slicer"):
        rel = path[len("Base/Python/slicer/"):]
        top = rel.split("/")[0]
        if top.endswith(".py"):
            names.add(top[:-3])
        elif "/" in rel:
            names.add(top)
    names.discard("__init__")
    init = git_show(repo, tag, "Base/Python/slicer/__init__.py")
    names.update(python_names(init)["names"])
    names.update(name.split(".")[1] for name in re.findall(r"_createModule\(\s*\"(slicer\.\w+)\"", init))
    for path in git_files(repo, tag, "Base", "Modules", "Libs", "Applications"):
        if not path.endswith(".py"):
            continue
        text = git_show(repo, tag, path)
        names.update(re.findall(r"setattr\(\s*slicer\s*,\s*[\"'](\w+)[\"']", text))
        names.update(re.findall(r"^\s*slicer\.(\w+)\s*=", text, re.M))
    return sorted(names)


def module_logics(repo: Path, tag: str) -> dict:
    """slicer.modules.<lower name> -> the logic class that module's createLogic() returns."""
    modules = {}
    for path in git_files(repo, tag, "Modules/Loadable", "Modules/Scripted", "Modules/CLI"):
        parts = path.split("/")
        if len(parts) < 4:
            continue
        name = parts[2]
        modules.setdefault(name.lower(), "")
        if re.fullmatch(rf"qSlicer{name}Module\.cxx", parts[-1]):
            found = re.search(r"createLogic\(\)\s*\{[^}]*?(vtk\w+)::New\(\)", git_show(repo, tag, path), re.S)
            if found:
                modules[name.lower()] = found.group(1)
    return modules


def bundled_packages(repo: Path, tag: str) -> dict:
    packages = {}
    for path in git_files(repo, tag, "SuperBuild"):
        if re.search(r"SuperBuild/External_python-[\w-]+\.cmake$", path):
            for name, version in re.findall(r"^\s*([A-Za-z0-9_.-]+)(?:\[[\w,]+\])?==([^\s;\\]+)",
                                            git_show(repo, tag, path), re.M):
                packages[name] = version
    return packages


def extension_template(repo: Path, tag: str) -> dict:
    """What Slicer's extension wizard templates (Utilities/Templates) set and call, and the
    ExtensionsIndex catalog schema's required keys, for the README's install check."""
    top = git_show(repo, tag, "Utilities/Templates/Extensions/Default/CMakeLists.txt")
    module = git_show(repo, tag, "Utilities/Templates/Modules/Scripted/CMakeLists.txt")
    macro = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", module, re.S).group(1)
    schemas = sorted(p for p in git_files(repo, tag, "Schemas") if "extension-catalog-entry-schema" in p)
    required = json.loads(git_show(repo, tag, schemas[-1]))["required"] if schemas else []
    labels = {"Select Extension": "Modules/Scripted/ExtensionWizard/ExtensionWizard.py",
              "Additional module paths": "Base/QTGUI/Resources/UI/qSlicerSettingsModulesPanel.ui",
              "Install from file...": "Base/QTGUI/Resources/UI/qSlicerExtensionsToolsWidget.ui",
              "Extension Wizard": "Modules/Scripted/ExtensionWizard/ExtensionWizard.py"}
    return {"ui_labels": sorted(label for label, path in labels.items() if label in git_show(repo, tag, path)),
            "cmake_minimum_required": re.search(r"cmake_minimum_required\(VERSION ([^ )]+)", top).group(1),
            "extension_variables": re.findall(r"set\((EXTENSION_\w+)", top),
            "includes": re.findall(r"include\(\$\{(\w+)\}\)", top),
            "module_macro_arguments": re.findall(r"^\s*([A-Z_]+)\b", macro, re.M),
            "module_calls": re.findall(r"^\s*(slicer_\w+|slicerMacro\w+)\(", module, re.M),
            "catalog_schema": schemas[-1].rsplit("/", 1)[-1] if schemas else "",
            "catalog_required": required}


def slicer_tag(repo: Path, tag: str, ctk_repo: Path | None) -> dict:
    headers = [p for p in git_files(repo, tag, "Libs", "Base", "Modules") if p.endswith(".h") and "/Testing/" not in p]
    classes, decorated = {}, {}
    for path in headers:
        text = git_show(repo, tag, path)
        classes.update(parse_header(text))
        if path.endswith("Decorators.h"):
            for cls, names in parse_decorators(text).items():
                decorated.setdefault(cls, set()).update(names)
    for cls, names in decorated.items():
        if cls in classes:
            classes[cls]["methods"].update({name: "" for name in names if name not in classes[cls]["methods"]})
    cmake = git_show(repo, tag, "CMakeLists.txt")
    ctk_commit = re.search(r"Slicer_\$\{proj\}_GIT_TAG\s*\"([0-9a-f]{40})\"",
                           git_show(repo, tag, "SuperBuild/External_CTK.cmake"))
    info = {"python_version": re.search(r"set\(Slicer_REQUIRED_PYTHON_VERSION \"([\d.]+)\"", cmake).group(1),
            "python_packages": bundled_packages(repo, tag),
            "ctk_commit": ctk_commit.group(1) if ctk_commit else "",
            "modules": module_logics(repo, tag),
            "python_modules": {name: python_names(git_show(repo, tag, path)) for name, path in PYTHON_MODULES.items()}}
    wrapper = git_show(repo, tag, "Base/Python/slicer/parameterNodeWrapper/wrapper.py")
    init = git_show(repo, tag, "Base/Python/slicer/parameterNodeWrapper/__init__.py")
    exported = set(python_names(init)["names"])
    for module in re.findall(r"^from \.(\w+) import \*", init, re.M):
        exported.update(python_names(git_show(repo, tag, f"Base/Python/slicer/parameterNodeWrapper/{module}.py"))["names"])
    info["python_modules"]["slicer.parameterNodeWrapper"] = {"names": sorted(exported), "classes": {}}
    info["parameter_node_wrapper_members"] = sorted(
        set(re.findall(r"(?:checkedSetAttr|setattr)\(classtype,\s*\"(\w+)\"", wrapper))
        | set(re.findall(r"^\s+self\.(\w+)\s*=", wrapper[wrapper.index("def _initMethod"):].split("\ndef ")[0], re.M)))
    if ctk_repo is not None and info["ctk_commit"]:
        for path in git_files(ctk_repo, info["ctk_commit"], "Libs"):
            if path.endswith(".h") and "/Testing/" not in path and re.search(r"/ctk\w+\.h$", path):
                for name, data in parse_header(git_show(ctk_repo, info["ctk_commit"], path)).items():
                    if name.startswith("ctk"):
                        classes[name] = data
    info["extension_template"] = extension_template(repo, tag)
    info["classes"] = classes
    info["slicer"] = slicer_namespace(repo, tag, {n for n in classes if not n.startswith("ctk")})
    return info


INTROSPECT = r"""
import json, sys
kind, wanted = sys.argv[1], json.loads(sys.stdin.read())
if kind == "vtk":
    import vtk as module
else:
    from PyQt5 import QtCore, QtGui, QtWidgets
    class module:
        pass
    for part in (QtCore, QtGui, QtWidgets):
        for name in dir(part):
            setattr(module, name, getattr(part, name))
out = {"names": sorted(n for n in dir(module) if not n.startswith("_")), "classes": {}}
todo = list(wanted)
while todo:
    name = todo.pop()
    if name in out["classes"] or not hasattr(module, name):
        continue
    cls = getattr(module, name)
    if not isinstance(cls, type):
        continue
    base = next((b.__name__ for b in cls.__mro__[1:] if hasattr(module, b.__name__)), "")
    own = {n: "" for n in vars(cls) if not n.startswith("_")}
    if kind == "qt" and hasattr(cls, "staticMetaObject"):
        meta = cls.staticMetaObject
        for i in range(meta.propertyOffset(), meta.propertyCount()):
            own[meta.property(i).name()] = ""
    out["classes"][name] = {"base": base, "methods": own, "constants": [], "properties": {}}
    if base:
        todo.append(base)
print(json.dumps(out))
"""


def introspect(kind: str, folder: Path, wanted: list[str]) -> dict:
    result = subprocess.run([sys.executable, "-c", INTROSPECT, kind], input=json.dumps(wanted), text=True,
                            capture_output=True, check=True, env={"PYTHONPATH": str(folder), "QT_QPA_PLATFORM": "offscreen"})
    return json.loads(result.stdout)


def module_class_names() -> tuple[set[str], set[str], set[str]]:
    """The vtk, Qt and other class names the module's code and .ui file mention."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in MODULE_FILES)
    ui = UI_FILE.read_text(encoding="utf-8") if UI_FILE.exists() else ""
    vtk_names = set(re.findall(r"\bvtk\.(vtk\w+)", text)) | {"vtkObject", "vtkImageData", "vtkDoubleArray",
                                                            "vtkStringArray", "vtkIntArray", "vtkMatrix4x4"}
    qt_names = set(re.findall(r"\bqt\.(Q\w+)", text)) | set(re.findall(r'class="(Q\w+)"', ui)) | {"QWidget", "QObject", "QApplication", "QSettings"}
    other = set(re.findall(r"\b((?:vtkMRML|vtkSlicer|vtkSegment|qMRML|qSlicer|ctk)\w+)", text + ui))
    return vtk_names, qt_names, other


def reachable(classes: dict, roots: set[str]) -> set[str]:
    keep, todo = set(), [r for r in roots if r in classes]
    while todo:
        name = todo.pop()
        if name in keep or name not in classes:
            continue
        keep.add(name)
        data = classes[name]
        todo.append(data["base"])
        todo.extend(r for r in data["methods"].values() if r)
    return keep


def compact(cls: dict) -> dict:
    """A class with its methods as a sorted list, "Name" or "Name:ReturnedClass"."""
    out = dict(cls, methods=sorted(f"{n}:{r}" if r else n for n, r in cls["methods"].items()))
    return {key: value for key, value in out.items() if value or key == "base"}


def shared_across_tags(data: dict) -> dict:
    """Store each class and each large list once with the tags that have it (the tags mostly agree).
    Testing/test_slicer_conformance.py's load_api() undoes this."""
    classes: dict = {}
    lists: dict = {}
    for tag, info in data["tags"].items():
        for name, cls in info.pop("classes").items():
            variants = classes.setdefault(name, [])
            entry = compact(cls)
            match = next((v for v in variants if {k: x for k, x in v.items() if k != "tags"} == entry), None)
            if match is None:
                variants.append(dict(entry, tags=[tag]))
            else:
                match["tags"].append(tag)
        for key in ("class_names", "slicer"):
            variants = lists.setdefault(key, [])
            match = next((v for v in variants if v["names"] == info[key]), None)
            if match is None:
                variants.append({"names": info.pop(key), "tags": [tag]})
            else:
                info.pop(key)
                match["tags"].append(tag)
        for key in ("vtk", "qt"):
            if key in info:
                variants = lists.setdefault(key, [])
                match = next((v for v in variants if v["names"] == info[key]["names"]), None)
                names = info[key].pop("names")
                if match is None:
                    variants.append({"names": names, "tags": [tag]})
                else:
                    match["tags"].append(tag)
    return dict(data, classes=classes, lists=lists)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slicer", type=Path, required=True, help="Slicer git directory (with the v5.x tags)")
    parser.add_argument("--ctk", type=Path, help="CTK git directory")
    parser.add_argument("--vtk-9.2", dest="vtk92", type=Path, help="folder with the vtk 9.2 wheel unpacked")
    parser.add_argument("--vtk-9.5", dest="vtk95", type=Path, help="folder with the vtk 9.5 wheel unpacked")
    parser.add_argument("--pyqt5", type=Path, help="folder with PyQt5 5.15 installed (pip --target)")
    args = parser.parse_args(argv)
    vtk_names, qt_names, other = module_class_names()
    data = {"generated_by": "Testing/slicer_api/generate_slicer_api.py; do not edit", "tags": {},
            "not_covered": []}
    roots_extra = {"vtkMRMLScene", "vtkMRMLNode", "qSlicerApplication", "vtkSegmentation", "vtkSegment",
                   "qMRMLSegmentEditorWidget", "ctkDICOMDatabase"}
    vtk_sources = {"v5.6.0": ("9.2.6", args.vtk92), "v5.8.0": ("9.2.6", args.vtk92), "v5.10.0": ("9.5.2", args.vtk95)}
    qt = introspect("qt", args.pyqt5, sorted(qt_names)) if args.pyqt5 else None
    if qt is None:
        data["not_covered"].append("qt: no PyQt5 folder given")
    for tag in TAGS:
        print(f"reading Slicer {tag}", file=sys.stderr)
        info = slicer_tag(args.slicer, tag, args.ctk)
        classes = info.pop("classes")
        roots = other | roots_extra | {logic for logic in info["modules"].values() if logic}
        keep = reachable(classes, roots)
        info["class_names"] = sorted(classes)
        info["classes"] = {name: classes[name] for name in sorted(keep)}
        version, folder = vtk_sources[tag]
        wanted = sorted(vtk_names | {c["base"] for c in info["classes"].values() if c["base"].startswith("vtk")}
                        | {r for c in info["classes"].values() for r in c["methods"].values() if r.startswith("vtk")})
        if folder:
            vtk = introspect("vtk", folder, wanted)
            info["vtk"] = {"version": version, "names": vtk["names"]}
            for name, cls in vtk["classes"].items():
                info["classes"].setdefault(name, cls)
        else:
            data["not_covered"].append(f"vtk for {tag}: no wheel folder given")
        if qt is not None:
            info["qt"] = {"version": "5.15 (PyQt5)", "names": qt["names"]}
            for name, cls in qt["classes"].items():
                info["classes"].setdefault(name, cls)
        if not info["ctk_commit"] or args.ctk is None:
            data["not_covered"].append(f"ctk for {tag}")
        data["tags"][tag] = info
    OUTPUT.write_text(json.dumps(shared_across_tags(data), indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size // 1024} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
