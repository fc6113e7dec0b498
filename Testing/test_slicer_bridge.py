"""slicer_bridge against stand-ins for the Slicer and VTK calls it makes, with the real signatures.

The stand-ins follow the C++ declarations the calls resolve to in Slicer 5.6-5.10
(vtkSegment::GetTag(tag, value&) -> bool; vtkMRMLColorNode names reset unless marked initialised
before 5.10; GetSegmentCenterRAS None for an empty segment), so a call written against an
imagined API fails here instead of in Slicer.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MyositisQMRI"))

from MyositisQMRILib import slicer_bridge  # noqa: E402
from slicer_standins import Segmentation  # noqa: E402  (the segmentation stand-in with Slicer's signatures)


class Mutable:
    """vtk.mutable: the holder VTK's Python wrapping fills for a C++ reference argument."""

    def __init__(self, value):
        self.value = value

    def __str__(self):
        return str(self.value)


class Segment:
    def __init__(self, name, label_value, tags):
        self.name, self.label_value, self.tags = name, label_value, dict(tags)

    def GetTag(self, tag, value):        # bool GetTag(std::string tag, std::string& value)
        if tag not in self.tags:
            return False
        value.value = self.tags[tag]
        return True

    def GetLabelValue(self):
        return self.label_value

    def GetName(self):
        return self.name


class SegmentationNode:
    def __init__(self, segments, centres=None):
        self.segmentation, self.centres = Segmentation(segments), centres or {}

    def GetSegmentation(self):
        return self.segmentation

    def GetSegmentCenterRAS(self, segment_id):
        return self.centres.get(segment_id)    # nullptr (None) for an empty segment


class StringArray:
    def __init__(self):
        self.values = []

    def InsertNextValue(self, value):
        self.values.append(value)

    def GetValue(self, index):
        return self.values[index]


class ColorTable:
    """Before Slicer 5.10 (new_api False), names count only once SetNamesInitialised(True) is called."""

    def __init__(self, new_api):
        self.names, self.initialised = {}, False
        if new_api:
            self.SetColorDefined = lambda index, defined: None
        else:
            self.SetNamesInitialised = lambda flag: setattr(self, "initialised", bool(flag))

    def SetTypeToUser(self):
        pass

    def SetNumberOfColors(self, n):
        self.size = n

    def SetColor(self, index, name, r, g, b, a):
        assert 0 <= index < self.size
        self.names[index] = name

    def names_as_read(self):
        """What ExportSegmentsToLabelmapNode matches segment names against."""
        if hasattr(self, "SetColorDefined") or self.initialised:
            return self.names
        return {i: f"R={i} G={i} B={i}" for i in self.names}


class VolumeNode(types.SimpleNamespace):
    def __init__(self, name):
        super().__init__(name=name, transform_id=None)

    def GetName(self):
        return self.name

    def Copy(self, other):
        self.pixels = other.pixels      # vtkMRMLNode::Copy: content, not the scene's transform

    def SetAndObserveTransformNodeID(self, transform_id):
        self.transform_id = transform_id


class EchoSequence:
    """A sequence of echoes, shown through a proxy node under a transform; its index is TE in ms
    unless told otherwise."""

    def __init__(self, times_ms, transform_id=None, index_name="EchoTime", index_unit="ms"):
        self.echoes = [types.SimpleNamespace(pixels=f"echo {t}") for t in times_ms]
        self.times_ms, self.proxy = times_ms, types.SimpleNamespace(GetTransformNodeID=lambda: transform_id)
        self.index_name, self.index_unit = index_name, index_unit

    def GetIndexName(self):
        return self.index_name

    def GetIndexUnit(self):
        return self.index_unit

    def GetNumberOfDataNodes(self):
        return len(self.echoes)

    def GetNthDataNode(self, i):
        return self.echoes[i]

    def GetNthIndexValue(self, i):
        return str(self.times_ms[i])


@pytest.fixture
def fake_slicer(monkeypatch):
    scene = types.SimpleNamespace(nodes=[], removed=[], exported=[], jumps=[], new_api=True)

    def add_node(class_name, name=""):
        node = ColorTable(scene.new_api) if class_name == "vtkMRMLColorTableNode" else VolumeNode(name)
        scene.nodes.append(node)
        return node

    def export_segments(segmentation_node, ids, labelmap, reference, extent, colour_table):
        names = colour_table.names_as_read()
        segmentation = segmentation_node.GetSegmentation()
        labelmap.values, labelmap.segment_ids = {}, list(ids.values)
        for i, segment_id in enumerate(ids.values):
            name = segmentation.GetSegment(segment_id).GetName()
            labelmap.values[name] = next((v for v, n in names.items() if n == name), 100 + i)
        return True

    slicer = types.SimpleNamespace(
        mrmlScene=types.SimpleNamespace(AddNewNodeByClass=add_node, RemoveNode=scene.removed.append),
        modules=types.SimpleNamespace(
            segmentations=types.SimpleNamespace(logic=lambda: types.SimpleNamespace(
                ExportSegmentsToLabelmapNode=export_segments)),
            sequences=types.SimpleNamespace(logic=lambda: types.SimpleNamespace(
                GetFirstBrowserNodeForSequenceNode=lambda sequence: types.SimpleNamespace(
                    GetProxyNode=lambda node: node.proxy))),
            markups=types.SimpleNamespace(logic=lambda: types.SimpleNamespace(
                JumpSlicesToLocation=lambda x, y, z, centred: scene.jumps.append((x, y, z))))),
        vtkSegmentation=types.SimpleNamespace(EXTENT_REFERENCE_GEOMETRY=1),
        util=types.SimpleNamespace(
            exportNode=lambda node, path, properties={}, world=False:
                scene.exported.append((node, path, dict(properties), world)) or True,
            saveNode=lambda node, path, properties={}: pytest.fail("saveNode would repoint the node's storage")))
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    monkeypatch.setitem(sys.modules, "vtk", types.SimpleNamespace(mutable=Mutable, vtkStringArray=StringArray))
    return scene


def _muscles(*extra):
    return SegmentationNode([
        ("seg_a", Segment("Sartorius (right)", 1, {slicer_bridge.LABEL_TAG: "1"})),
        ("seg_b", Segment("Gracilis (left)", 1, {slicer_bridge.LABEL_TAG: "18"})),
        ("seg_c", Segment("Drawn by hand", 5, {})), *extra], centres={"seg_b": (10.0, -20.0, 30.0)})


def test_label_tags_are_read_through_the_reference_argument(fake_slicer):
    node = _muscles()
    segments = [node.GetSegmentation().GetNthSegment(i) for i in range(3)]
    assert [slicer_bridge.label_tag(s) for s in segments] == ["1", "18", ""]
    assert slicer_bridge.segment_id_for_label(node, 18) == "seg_b"
    assert slicer_bridge.segment_id_for_label(node, 5) == "seg_c"     # untagged: its own label value
    assert slicer_bridge.segment_id_for_label(node, 7) is None


@pytest.mark.parametrize("new_api", [False, True], ids=["slicer-5.6-5.8", "slicer-5.10"])
def test_exported_label_map_keeps_the_schema_values(fake_slicer, tmp_path, new_api):
    fake_slicer.new_api = new_api
    path = slicer_bridge.export_label_map(_muscles(), object(), tmp_path / "edited.nii.gz")
    labelmap, written, properties, world = fake_slicer.exported[0]
    # world: the label map lands where Slicer shows it, as the exported structural volume does
    assert written == str(path) and properties == {} and world
    assert labelmap.values == {"Sartorius (right)": 1, "Gracilis (left)": 18}   # the untagged one is left out
    assert labelmap in fake_slicer.removed    # temporary nodes leave the scene


def test_volumes_reach_the_core_in_world_coordinates(fake_slicer, tmp_path):
    volume = types.SimpleNamespace(GetName=lambda: "T1w")
    path = slicer_bridge.export_volume(volume, tmp_path, "structural")
    assert fake_slicer.exported == [(volume, str(tmp_path / "structural.nii.gz"), {}, True)]
    assert path == tmp_path / "structural.nii.gz"


def test_echoes_keep_the_transform_of_the_series_shown(fake_slicer, tmp_path):
    paths = slicer_bridge.export_echo_volumes(EchoSequence([10.0, 20.0], "vtkMRMLLinearTransformNode1"),
                                              tmp_path, "mese")
    assert [p.name for p in paths] == ["mese_echo01.nii.gz", "mese_echo02.nii.gz"]
    written = [(node.pixels, node.transform_id, world) for node, _, _, world in fake_slicer.exported]
    assert written == [("echo 10.0", "vtkMRMLLinearTransformNode1", True), ("echo 20.0", "vtkMRMLLinearTransformNode1", True)]
    assert fake_slicer.removed == [node for node, *_ in fake_slicer.exported]


@pytest.mark.parametrize("index_name, index_unit, values, expected_ms", [
    ("EchoTime", "ms", [10, 20, 30], [10.0, 20.0, 30.0]),
    ("echo time", "s", [0.01, 0.02], [10.0, 20.0]),          # seconds, as BIDS writes EchoTime
    ("TE", "", [11, 22], [11.0, 22.0]),                       # DICOM's EchoTime is ms; importers leave the unit blank
    ("frame", "", [0, 1, 2], []),                             # Slicer's DICOM image-sequence import
    ("instance number", "", [1, 2, 3], []),
    ("time", "s", [0.5, 1.0], []),                            # acquisition time, not echo time
    ("EchoTime", "mm", [10, 20], []),                         # a unit that is not time
    ("EchoTime", "ms", [20, 10], []),                         # echoes out of order
    ("EchoTime", "ms", [0, 10], []),
])
def test_echo_times_come_from_the_index_only_when_it_is_echo_time(index_name, index_unit, values, expected_ms):
    sequence = EchoSequence(values, index_name=index_name, index_unit=index_unit)
    assert slicer_bridge.echo_times_from_index(sequence) == pytest.approx(expected_ms)


def test_muscles_added_from_the_terminology_join_the_export_once(fake_slicer, tmp_path):
    added = [("seg_d", Segment("Semitendinosus (left)", 2, {})), ("seg_e", Segment("Gracilis (left)", 3, {}))]
    node = _muscles(*added)
    assert slicer_bridge.segment_id_for_label(node, 20) == "seg_d"
    slicer_bridge.export_label_map(node, object(), tmp_path / "edited.nii.gz")
    labelmap = fake_slicer.exported[0][0]
    # seg_e names a muscle that seg_b already is: left out, rather than given a value outside the schema
    assert labelmap.segment_ids == ["seg_a", "seg_b", "seg_d"]
    assert labelmap.values == {"Sartorius (right)": 1, "Gracilis (left)": 18, "Semitendinosus (left)": 20}


def test_jump_to_an_erased_muscle_does_nothing(fake_slicer):
    node = _muscles()
    assert slicer_bridge.jump_to_label(node, 18) and fake_slicer.jumps == [(10.0, -20.0, 30.0)]
    assert not slicer_bridge.jump_to_label(node, 1)      # segment exists but is empty
    assert not slicer_bridge.jump_to_label(node, 9)
    assert len(fake_slicer.jumps) == 1


def test_parameter_widgets_are_the_ones_naming_a_parameter():
    class Widget:
        def __init__(self, parameter):
            self.parameter = parameter

        def property(self, name):
            return self.parameter if name == "SlicerParameterName" else None

    ui = type("", (), {})()
    ui.modelPathLineEdit, ui.segmentButton, ui.layout = Widget("modelFile"), Widget(None), object()
    assert slicer_bridge.parameter_widgets(ui) == {"modelFile": ui.modelPathLineEdit}


def test_packages_install_without_a_dialog_under_testing_and_keep_the_installed_torch(monkeypatch, tmp_path):
    from importlib import metadata

    from MyositisQMRILib import dependencies
    installs, asked = [], []
    slicer = types.SimpleNamespace(
        app=types.SimpleNamespace(testingEnabled=lambda: True, temporaryPath=str(tmp_path)),
        util=types.SimpleNamespace(confirmOkCancelDisplay=lambda *a, **k: asked.append(a) or True,
                                   pip_install=lambda *a: pytest.fail("pip_install freezes Slicer; install_with_progress")))
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    monkeypatch.setattr(dependencies, "stage_plan", lambda stage: dependencies.StagePlan(
        ("monai>=1.3", "slicerio>=1.0"), False, ()))
    monkeypatch.setattr(slicer_bridge, "install_with_progress",
                        lambda requirements, constraints_file=None, log=None: installs.append((requirements, constraints_file)))
    assert slicer_bridge.ensure_packages("segment")
    assert asked == [] and len(installs) == 1
    assert list(installs[0][0]) == ["monai>=1.3", "slicerio>=1.0"]
    assert f"torch=={metadata.version('torch')}" in open(installs[0][1]).read().split()


def test_segment_editor_gets_the_scene_singleton_node_again_after_a_scene_close(monkeypatch):
    class EditorNode:
        def UnRegister(self, owner):
            pass

        def SetSingletonTag(self, tag):
            self.tag = tag

    scene = types.SimpleNamespace(singletons={})
    scene.GetSingletonNode = lambda tag, class_name: scene.singletons.get(tag)
    scene.CreateNodeByClass = lambda class_name: EditorNode()
    scene.AddNode = lambda node: scene.singletons.setdefault(node.tag, node)
    monkeypatch.setitem(sys.modules, "slicer", types.SimpleNamespace(mrmlScene=scene))

    class EditorWidget:      # qMRMLSegmentEditorWidget keeps its node by a weak pointer
        node = None

        def mrmlSegmentEditorNode(self):
            return self.node

        def setMRMLSegmentEditorNode(self, node):
            self.node = node
    editor = EditorWidget()
    slicer_bridge.select_segment_editor_node(editor)
    first = editor.node
    assert first is not None and first.tag == slicer_bridge.SEGMENT_EDITOR_SINGLETON
    slicer_bridge.select_segment_editor_node(editor)
    assert editor.node is first and len(scene.singletons) == 1
    scene.singletons.clear()           # scene closed: the node is gone, the weak pointer is empty
    editor.node = None
    slicer_bridge.select_segment_editor_node(editor)
    assert editor.node is not None and editor.node is not first


def test_table_choice_boxes_leave_the_mouse_wheel_to_the_panel(monkeypatch):
    class QComboBox:
        def setFocusPolicy(self, policy):
            self.policy = policy

        def wheelEvent(self, event):
            event.changed_choice = True

    qt = types.ModuleType("qt")
    qt.QComboBox, qt.Qt = QComboBox, types.SimpleNamespace(StrongFocus=11)
    monkeypatch.setitem(sys.modules, "qt", qt)
    box = slicer_bridge.choice_box()
    event = types.SimpleNamespace(ignored=False, changed_choice=False)
    event.ignore = lambda: setattr(event, "ignored", True)
    box.wheelEvent(event)
    assert isinstance(box, QComboBox) and box.policy == 11
    assert event.ignored and not event.changed_choice
