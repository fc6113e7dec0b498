"""Stand-ins for the Slicer, MRML, Qt, CTK and VTK calls of the MyositisQMRI module, with the
signatures of Slicer 5.6-5.10 (Libs/MRML/Core/*.h, Base/Python/slicer/util.py, CTK's
ctkDICOMDatabase.h and ctkPathLineEdit.h), so that the module file itself is imported and run by
pytest: a call written against an imagined API fails here (unknown attribute or argument)
instead of inside Slicer.

Volumes hold real voxels: `util.loadVolume` reads a file with SimpleITK and `util.exportNode`
writes it back, so the core's commands run on what the "scene" holds. Timers do not tick by
themselves: `run_timers(logic)` plays Qt's event loop until no timer is active.
"""
from __future__ import annotations

import itertools
import sys
import time
import types
from pathlib import Path

import numpy as np
import SimpleITK as sitk

MODULE_DIR = Path(__file__).resolve().parents[1] / "MyositisQMRI"


# --- VTK ---

class mutable:   # noqa: N801 (vtk.mutable)
    def __init__(self, value):
        self.value = value

    def __str__(self):
        return str(self.value)


class _Array:
    def __init__(self):
        self.name, self.values = "", []

    def SetName(self, name):
        self.name = name

    def GetName(self):
        return self.name

    def InsertNextValue(self, value):
        self.values.append(value)
        return len(self.values) - 1

    def GetValue(self, index):
        return self.values[index]

    def GetNumberOfTuples(self):
        return len(self.values)


class vtkStringArray(_Array):   # noqa: N801
    pass


class vtkDoubleArray(_Array):   # noqa: N801
    def InsertNextValue(self, value):
        return super().InsertNextValue(float(value))


class ImageData:
    def __init__(self, array):
        self.array = array

    def GetDimensions(self):   # (I, J, K) = x, y, z; the array is z, y, x
        return tuple(reversed(self.array.shape))


# --- MRML ---

_ids = itertools.count(1)


class Node:
    class_name = "vtkMRMLNode"

    def __init__(self, name=""):
        self.id = f"{self.class_name}{next(_ids)}"
        self.name, self.attributes, self.scene = name, {}, None

    def GetID(self):
        return self.id

    def GetName(self):
        return self.name

    def SetName(self, name):
        self.name = name

    def GetClassName(self):
        return self.class_name

    def IsA(self, class_name):
        return any(getattr(c, "class_name", None) == class_name for c in type(self).__mro__)

    def SetAttribute(self, name, value):
        self.attributes[name] = value

    def GetAttribute(self, name):          # const char* GetAttribute(const char*): None when unset
        return self.attributes.get(name)

    def StartModify(self):
        return 0

    def EndModify(self, previous):
        return 0


class DisplayNode:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if name in ("SetAndObserveColorNodeID", "AutoWindowLevelOff", "SetWindowLevelMinMax", "ApplyThresholdOn",
                    "SetLowerThreshold", "SetUpperThreshold"):
            return lambda *args: self.calls.append((name, args))
        raise AttributeError(name)


class ScalarVolumeNode(Node):
    class_name = "vtkMRMLScalarVolumeNode"

    def __init__(self, name=""):
        super().__init__(name)
        self.image, self.transform_id, self.display, self.visible = None, None, DisplayNode(), 1

    def GetImageData(self):
        return None if self.image is None else ImageData(sitk.GetArrayViewFromImage(self.image))

    def GetDisplayNode(self):
        return self.display

    def Copy(self, other):                 # content, not the scene's transform or ID
        self.image = other.image

    def SetAndObserveTransformNodeID(self, transform_id):
        self.transform_id = transform_id

    def GetTransformNodeID(self):
        return self.transform_id

    def SetDisplayVisibility(self, visible):
        self.visible = int(visible)


class LabelMapVolumeNode(ScalarVolumeNode):
    class_name = "vtkMRMLLabelMapVolumeNode"


class SegmentationNode(Node):
    class_name = "vtkMRMLSegmentationNode"

    def __init__(self, name=""):
        super().__init__(name)
        self.visible, self.segmentation = 1, None

    def SetDisplayVisibility(self, visible):
        self.visible = int(visible)

    def GetDisplayVisibility(self):
        return self.visible

    def GetSegmentation(self):
        return self.segmentation

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume):
        self.reference = volume

    def CreateDefaultDisplayNodes(self):
        pass

    def CreateClosedSurfaceRepresentation(self):
        return True


class TableNode(Node):
    class_name = "vtkMRMLTableNode"

    def __init__(self, name=""):
        super().__init__(name)
        self.columns, self.units, self.locked = [], {}, False

    def AddColumn(self, column=None):
        self.columns.append(column)
        return column

    def RemoveAllColumns(self):
        self.columns, self.units = [], {}
        return True

    def SetColumnUnitLabel(self, columnName, unitLabel):
        self.units[columnName] = unitLabel

    def SetLocked(self, locked):
        self.locked = bool(locked)

    def GetNumberOfColumns(self):
        return len(self.columns)

    def GetNumberOfRows(self):
        return max((c.GetNumberOfTuples() for c in self.columns), default=0)

    def column(self, name):
        return next(c.values for c in self.columns if c.GetName() == name)


class ColorTableNode(Node):
    class_name = "vtkMRMLColorTableNode"


NODE_CLASSES = {c.class_name: c for c in (ScalarVolumeNode, LabelMapVolumeNode, SegmentationNode, TableNode,
                                          ColorTableNode)}


class vtkMRMLVolumeArchetypeStorageNode:   # noqa: N801
    """Reads a file into an existing volume node (vtkMRMLStorageNode::ReadData(refNode, temporaryFile))."""

    reads = []

    def SetFileName(self, fileName):
        self.file_name = fileName

    def ReadData(self, refNode, temporaryFile=False):
        refNode.image = sitk.ReadImage(self.file_name)
        vtkMRMLVolumeArchetypeStorageNode.reads.append((refNode, self.file_name))
        return 1


class SubjectHierarchy:
    """vtkMRMLSubjectHierarchyNode: items with a parent, a level and maybe a data node."""

    def __init__(self):
        self.parent, self.level, self.name, self.data = {1: 0}, {1: "Scene"}, {1: "Scene"}, {}
        self._next = itertools.count(2)

    def _new(self, parent, name, level):
        item = next(self._next)
        self.parent[item], self.level[item], self.name[item] = parent, level, name
        return item

    def add_node(self, node, parent=1):
        item = self._new(parent, node.GetName(), "")
        self.data[item] = node
        return item

    def GetSceneItemID(self):
        return 1

    def GetItemByDataNode(self, dataNode):
        return next((i for i, n in self.data.items() if n is dataNode), 0)

    def GetItemParent(self, itemID):
        return self.parent.get(itemID, 0)

    def SetItemParent(self, itemID, parentItemID, enableCircularCheck=True):
        self.parent[itemID] = parentItemID

    def GetItemLevel(self, itemID):
        return self.level.get(itemID, "")

    def GetItemName(self, itemID):
        return self.name.get(itemID, "")

    def GetItemAncestorAtLevel(self, itemID, level):
        item = self.parent.get(itemID, 0)
        while item:
            if self.level[item] == level:
                return item
            item = self.parent.get(item, 0)
        return 0

    def GetItemChildWithName(self, parentItemID, name, recursive=False):
        return next((i for i, p in self.parent.items() if p == parentItemID and self.name[i] == name), 0)

    def CreateSubjectItem(self, parentItemID, name):
        return self._new(parentItemID, name, "Patient")

    def CreateStudyItem(self, parentItemID, name):
        return self._new(parentItemID, name, "Study")

    def CreateFolderItem(self, parentItemID, name):
        return self._new(parentItemID, name, "Folder")

    def children(self, item):
        return [i for i, p in self.parent.items() if p == item]


class Scene:
    def __init__(self):
        self.nodes, self.removed, self.sh = [], [], SubjectHierarchy()

    def AddNewNodeByClass(self, className, nodeBaseName=""):
        node = NODE_CLASSES[className](nodeBaseName)
        return self.AddNode(node)

    def AddNode(self, node):
        node.scene = self
        self.nodes.append(node)
        self.sh.add_node(node)
        return node

    def RemoveNode(self, node):
        if node in self.nodes:
            self.nodes.remove(node)
            self.removed.append(node)

    def GetNodeByID(self, id):
        return next((n for n in self.nodes if n.GetID() == id), None)

    def GenerateUniqueName(self, baseName):
        names = {n.GetName() for n in self.nodes}
        return baseName if baseName not in names else next(
            f"{baseName}_{i}" for i in itertools.count(1) if f"{baseName}_{i}" not in names)

    def GetFirstNodeByClass(self, className):
        return next((n for n in self.nodes if n.IsA(className)), None)


# --- Qt and CTK ---

class QTimer:
    """Ticks only when `run_timers` plays the event loop."""

    active = []

    def __init__(self):
        self.interval, self.slot = 0, None

    def setInterval(self, msec):
        self.interval = msec

    def connect(self, signal, slot):
        assert signal == "timeout()"
        self.slot = slot

    def start(self):
        if self not in QTimer.active:
            QTimer.active.append(self)

    def stop(self):
        if self in QTimer.active:
            QTimer.active.remove(self)

    def isActive(self):
        return self in QTimer.active

    @staticmethod
    def singleShot(msec, slot):
        slot()


def run_timers(timeout_s=600.0):
    """Qt's event loop for the stand-ins: fire active timers until none is left."""
    deadline = time.monotonic() + timeout_s
    while QTimer.active:
        for timer in list(QTimer.active):
            if timer in QTimer.active:
                timer.slot()
        if time.monotonic() > deadline:
            raise TimeoutError("timers still active")
        time.sleep(0.01)


class ctkPathLineEdit:   # noqa: N801
    """Q_PROPERTY(QString currentPath READ currentPath WRITE setCurrentPath); signal currentPathChanged(const QString&)."""

    def __init__(self):
        self._path, self._slots = "", []

    def connect(self, signal, slot):
        assert signal == "currentPathChanged(QString)", signal
        self._slots.append(slot)

    @property
    def currentPath(self):
        return self._path

    @currentPath.setter
    def currentPath(self, path):
        if path != self._path:
            self._path = path
            for slot in self._slots:
                slot(path)


class DicomDatabase:
    """ctkDICOMDatabase's query calls over DICOM files indexed with pydicom (insertion order kept,
    so filesForSeries lists files as they were added, not by echo time)."""

    def __init__(self, files):
        import pydicom

        self.isOpen = True
        self._patients, self._studies, self._series, self._files = {}, {}, {}, {}
        for path in files:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            patient = self._patients.setdefault(str(ds.PatientID), {
                "uid": str(len(self._patients) + 1), "PatientsName": str(ds.PatientName), "PatientID": str(ds.PatientID),
                "studies": []})
            if ds.StudyInstanceUID not in self._studies:
                patient["studies"].append(ds.StudyInstanceUID)
                self._studies[ds.StudyInstanceUID] = {"StudyDate": str(ds.get("StudyDate", "")),
                                                      "StudyDescription": str(ds.get("StudyDescription", "")),
                                                      "series": []}
            if ds.SeriesInstanceUID not in self._series:
                self._studies[ds.StudyInstanceUID]["series"].append(ds.SeriesInstanceUID)
                self._series[ds.SeriesInstanceUID] = {"SeriesDescription": str(ds.get("SeriesDescription", "")),
                                                      "SeriesNumber": str(ds.get("SeriesNumber", "")),
                                                      "Modality": str(ds.Modality)}
            self._files.setdefault(ds.SeriesInstanceUID, []).append(str(path))

    def _patient(self, patientUID):
        return next(p for p in self._patients.values() if p["uid"] == patientUID)

    def patients(self):
        return [p["uid"] for p in self._patients.values()]

    def studiesForPatient(self, patientUID):
        return list(self._patient(patientUID)["studies"])

    def seriesForStudy(self, studyUID):
        return list(self._studies[studyUID]["series"])

    def filesForSeries(self, seriesUID, hits=-1):
        files = self._files.get(seriesUID, [])
        return list(files if hits < 0 else files[:hits])

    def displayedNameForPatient(self, patientUID):
        return self._patient(patientUID)["PatientsName"].replace("^", " ")

    def fieldForPatient(self, field, patientUID):
        return self._patient(patientUID).get(field, "")

    def fieldForStudy(self, field, studyInstanceUID):
        return self._studies[studyInstanceUID].get(field, "")

    def fieldForSeries(self, field, seriesInstanceUID):
        return self._series[seriesInstanceUID].get(field, "")


# --- slicer.util ---

class Util(types.SimpleNamespace):
    def __init__(self, scene):
        super().__init__(scene=scene, layers=[], messages=[], exported=[], confirm=True)

    def loadVolume(self, filename, properties={}, returnNode=False):
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", properties.get("name", Path(filename).name))
        node.image = sitk.ReadImage(str(filename))
        return node

    def exportNode(self, node, filename, properties={}, world=False):
        assert world, "the core must get world coordinates"
        sitk.WriteImage(node.image, str(filename))
        self.exported.append((node, str(filename)))
        return True

    def saveNode(self, node, filename, properties={}):
        raise AssertionError("saveNode would repoint the node's storage")

    def setSliceViewerLayers(self, background="keep-current", foreground="keep-current", label="keep-current",
                             foregroundOpacity=None, labelOpacity=None, fit=False, rotateToVolumePlane=False):
        self.layers.append({"background": background, "foreground": foreground})

    def getNodesByClass(self, className, scene=None):
        return [n for n in self.scene.nodes if n.IsA(className)]

    def loadSegmentation(self, filename, properties={}, returnNode=False):
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", Path(filename).name)
        node.file = str(filename)
        node.segmentation = Segmentation([])
        return node

    def errorDisplay(self, text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
        self.messages.append(("error", text))

    def warningDisplay(self, text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
        self.messages.append(("warning", text))

    def confirmOkCancelDisplay(self, text, windowTitle=None, parent=None, **kwargs):
        self.messages.append(("confirm", text))
        return self.confirm

    def createProgressDialog(self, parent=None, value=0, maximum=100, labelText="", windowTitle="Processing...",
                             **kwargs):
        return ProgressDialog(value, maximum, labelText)

    def mainWindow(self):
        return None


class ProgressDialog:
    """qt.QProgressDialog as PythonQt shows it: value, labelText and wasCanceled are properties."""

    cancel_after = None   # tests set a number of value updates after which the user presses Cancel

    def __init__(self, value, maximum, labelText):
        self._value, self.maximum, self.labelText, self.values, self.closed = value, maximum, labelText, [], False

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value):
        self._value = value
        self.values.append(value)

    @property
    def wasCanceled(self):
        return ProgressDialog.cancel_after is not None and len(self.values) >= ProgressDialog.cancel_after

    def close(self):
        self.closed = True


class Segment:
    def __init__(self, name, label_value, tags=None):
        self.name, self.label_value, self.tags = name, label_value, dict(tags or {})

    def GetTag(self, tag, value):          # bool GetTag(std::string tag, std::string& value)
        if tag not in self.tags:
            return False
        value.value = self.tags[tag]
        return True

    def SetTag(self, tag, value):
        self.tags[tag] = value

    def GetLabelValue(self):
        return self.label_value

    def GetName(self):
        return self.name

    def SetName(self, name):
        self.name = name

    def SetColor(self, r, g, b):
        self.colour = (r, g, b)

    @staticmethod
    def GetTerminologyEntryTagName():
        return "TerminologyEntry"


class Segmentation:
    def __init__(self, segments):
        self.segments = list(segments)

    def GetNumberOfSegments(self):
        return len(self.segments)

    def GetNthSegment(self, index):
        return self.segments[index][1]

    def GetNthSegmentID(self, index):
        return self.segments[index][0]

    def GetSegment(self, segmentId):
        return dict(self.segments)[segmentId]


def install(monkeypatch, tmp_path):
    """Put stand-in `slicer`, `qt`, `ctk`, `vtk` and Slicer's Python packages into sys.modules;
    returns the stand-in slicer module (its mrmlScene, util, ...)."""
    scene = Scene()
    util = Util(scene)
    QTimer.active = []
    vtkMRMLVolumeArchetypeStorageNode.reads = []

    slicer = types.ModuleType("slicer")
    slicer.mrmlScene = scene
    slicer.util = util
    slicer.dicomDatabase = None
    slicer.app = types.SimpleNamespace(temporaryPath=str(tmp_path / "slicer-temp"), testingEnabled=lambda: True,
                                       processEvents=lambda: None)
    slicer.vtkMRMLVolumeArchetypeStorageNode = vtkMRMLVolumeArchetypeStorageNode
    slicer.vtkMRMLSubjectHierarchyNode = types.SimpleNamespace(GetSubjectHierarchyNode=lambda s: s.sh)
    slicer.vtkMRMLSubjectHierarchyConstants = types.SimpleNamespace(GetDICOMLevelStudy=lambda: "Study",
                                                                     GetDICOMLevelPatient=lambda: "Patient")
    slicer.vtkSegmentation = types.SimpleNamespace(EXTENT_REFERENCE_GEOMETRY=1)
    for name in ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLSequenceNode", "vtkMRMLTableNode"):
        setattr(slicer, name, type(name, (), {}))
    legends = []
    slicer.modules = types.SimpleNamespace(
        colors=types.SimpleNamespace(logic=lambda: types.SimpleNamespace(
            AddDefaultColorLegendDisplayNode=lambda node: legends.append(node) or types.SimpleNamespace(
                SetTitleText=lambda text: None, SetVisibility=lambda visible: None))),
        sequences=types.SimpleNamespace(logic=lambda: types.SimpleNamespace(
            GetFirstBrowserNodeForSequenceNode=lambda sequence: None)))
    slicer.legends = legends

    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleTest"):
        setattr(slm, name, type(name, (), {"__init__": lambda self, *a: None}))
    slm.ScriptedLoadableModuleLogic = type("ScriptedLoadableModuleLogic", (), {"__init__": lambda self: None})
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.Choice = lambda choices: ("Choice", tuple(choices))
    pnw.WithinRange = lambda low, high: ("WithinRange", low, high)
    slicer_util_module = types.ModuleType("slicer.util")
    slicer_util_module.VTKObservationMixin = type("VTKObservationMixin", (), {})

    qt = types.ModuleType("qt")
    qt.QTimer = QTimer
    qt.QDateTime = types.SimpleNamespace(currentMSecsSinceEpoch=lambda: int(time.time() * 1000))
    qt.QUrl = types.SimpleNamespace(fromLocalFile=lambda path: path)
    qt.QDesktopServices = types.SimpleNamespace(openUrl=lambda url: True)
    vtk = types.ModuleType("vtk")
    vtk.mutable, vtk.vtkStringArray, vtk.vtkDoubleArray = mutable, vtkStringArray, vtkDoubleArray
    vtk.vtkCommand = types.SimpleNamespace(ModifiedEvent=33)

    for name, module in (("slicer", slicer), ("slicer.ScriptedLoadableModule", slm),
                         ("slicer.parameterNodeWrapper", pnw), ("slicer.util", slicer_util_module), ("qt", qt),
                         ("vtk", vtk)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    monkeypatch.delitem(sys.modules, "MyositisQMRI", raising=False)
    return slicer


def parameter_node(**values):
    """The module's parameters with their defaults, as @parameterNodeWrapper gives them."""
    defaults = dict(dicomFolder="", dicomStudyUid="", meseSequence=None, structuralVolume=None, waterVolume=None,
                    fatVolume=None, ffMapVolume=None, echoTimesMs="", t2Model="epg", fatT2="auto", ffMethod="auto",
                    fieldStrengthT=0.0, t2Map=None, ffMap=None, b1Map=None, segmentation=None, modelFile="",
                    segmentFirstSlice=0, segmentLastSlice=-1, chartMeasure="T2", exportFolder="",
                    exportToDicomDatabase=False, workFolder="", studyJson="", reportJson="", reviewerGradesJson="",
                    reportTable=None)
    defaults.update(values)
    return types.SimpleNamespace(**defaults)


def volume_from_array(scene, array, name, spacing=(1.0, 1.0, 1.0)):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    image = sitk.GetImageFromArray(np.asarray(array))
    image.SetSpacing(spacing)
    node.image = image
    return node
