"""The Slicer module itself (MyositisQMRI.py and slicer_bridge), imported and run against the
stand-ins of Testing/slicer_standins.py, whose calls carry Slicer 5.6-5.10's signatures: the
report reads the selected map nodes, maps and fit-quality maps are updated in place, segmenting
again keeps the edited segmentation, segment collisions reach the user, the path fields stay
empty, the study comes from the DICOM database, the report is a table node placed under its
study, the core's lines reach the log pane, pip shows progress, and exports run in steps.
"""
from __future__ import annotations

import ast
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MyositisQMRI"))

import slicer_standins as sx  # noqa: E402
from MyositisQMRILib import dicom_database, jobs, pipeline, report_table, slicer_bridge, steps  # noqa: E402

MODULE_PY = sx.MODULE_DIR / "MyositisQMRI.py"
UI_FILE = sx.MODULE_DIR / "Resources" / "UI" / "MyositisQMRI.ui"


@pytest.fixture
def slicer(monkeypatch, tmp_path):
    return sx.install(monkeypatch, tmp_path)


@pytest.fixture
def module(slicer):
    import importlib

    return importlib.import_module("MyositisQMRI")


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    """The small phantom exam as DICOM, with its truth maps and labels."""
    from myositis_qmri.phantom import make_exam, write_exam

    root = tmp_path_factory.mktemp("native_exam")
    write_exam(make_exam(7, "small"), root, "classic")
    return root


def _logic(module, monkeypatch):
    logic = module.MyositisQMRILogic()
    logic.showErrors = False
    lines = []
    logic.logCallback = lines.append
    monkeypatch.setattr(slicer_bridge, "ensure_packages", lambda stage, parent_module="MyositisQMRI": True)
    monkeypatch.setattr(module.MyositisQMRILogic, "pythonExecutable", staticmethod(lambda: sys.executable))
    return logic, lines


# --- 3: the report reads the selected map nodes ---

def test_report_reads_the_selected_map_nodes_in_a_scene_whose_work_folder_is_gone(slicer, module, exam, tmp_path,
                                                                                   monkeypatch):
    truth = exam / "truth"
    t2 = slicer.util.loadVolume(str(truth / "water_t2_ms.nii.gz"), {"name": "my T2"})
    t2.image = t2.image + 5.0            # the node differs from any file: the report must read the node
    ff = slicer.util.loadVolume(str(truth / "ff_percent.nii.gz"), {"name": "my FF"})
    anatomy = slicer.util.loadVolume(str(truth / "water_t2_ms.nii.gz"), {"name": "anatomy"})
    sh = slicer.mrmlScene.sh
    study_item = sh.CreateStudyItem(sh.CreateSubjectItem(1, "Patient"), "Study")
    sh.SetItemParent(sh.GetItemByDataNode(anatomy), study_item)
    gone = tmp_path / "reopened" / "case-gone"    # the saved scene's temporary folder no longer exists
    p = sx.parameter_node(t2Map=t2, ffMap=ff, structuralVolume=anatomy, segmentation=object(), workFolder=str(gone))
    logic, lines = _logic(module, monkeypatch)
    monkeypatch.setattr(logic, "exportEditedLabels",
                        lambda p: Path(slicer.util.loadVolume(str(truth / "muscle_labels.nii.gz")) and
                                       truth / "muscle_labels.nii.gz"))
    logic.computeReport(p)
    sx.run_timers()
    assert logic.lastError is None, logic.lastError
    argv = logic.job.argv
    assert argv[argv.index("--t2") + 1] == str(gone / "report-inputs" / "t2.nii.gz")
    assert argv[argv.index("--ff") + 1] == str(gone / "report-inputs" / "ff.nii.gz")
    truth_table = json.loads((truth / "truth.json").read_text())["muscles"]
    rows = logic.reportRows(p)
    assert len(rows) == 22
    for row in rows:
        assert row.t2_ms == pytest.approx(truth_table[str(row.label_value)]["water_t2_ms"] + 5.0, abs=1e-3)
    # the report as a table node, one line per muscle, under the anatomy's study
    table = p.reportTable
    assert table.GetNumberOfRows() == 11 and table.locked and table.units["T2 (ms) R"] == "ms"
    assert sh.GetItemParent(sh.GetItemByDataNode(table)) == study_item
    assert any(" report " in line for line in lines), "the command line reached no log pane"
    # a recompute refills the same table node
    logic.computeReport(p)
    sx.run_timers()
    assert p.reportTable is table and len(slicer.util.getNodesByClass("vtkMRMLTableNode")) == 1


# --- 4: maps and fit-quality maps, visible and updated in place ---

def test_quality_maps_are_shown_kept_and_reused_and_recomputed_maps_update_the_same_node(slicer, tmp_path):
    folder = tmp_path / "t2"
    folder.mkdir()
    image = sitk.GetImageFromArray(np.ones((3, 4, 5), np.float32))
    for name in ("t2w.nii.gz", "b1.nii.gz", "residual.nii.gz"):
        sitk.WriteImage(image, str(folder / name))
    first = slicer_bridge.load_quality_maps(folder)
    assert [n.GetName() for n in first] == ["Quality: residual"]
    assert slicer.util.layers[-1]["foreground"] is first[0]          # visible, not hidden
    again = slicer_bridge.load_quality_maps(folder)
    assert again == first and len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")) == 1

    t2 = slicer_bridge.load_map(folder / "t2w.nii.gz", "t2")
    sitk.WriteImage(image * 2.0, str(folder / "t2w.nii.gz"))            # the fit ran again
    updated = slicer_bridge.load_map(folder / "t2w.nii.gz", "t2", existing=t2)
    assert updated is t2 and sitk.GetArrayFromImage(t2.image).max() == 2.0
    assert sx.vtkMRMLVolumeArchetypeStorageNode.reads[-1] == (t2, str(folder / "t2w.nii.gz"))
    # a map the user picked that this module did not make is never overwritten
    scanner = sx.volume_from_array(slicer.mrmlScene, np.zeros((3, 4, 5)), "scanner T2")
    assert slicer_bridge.load_map(folder / "t2w.nii.gz", "t2", existing=scanner) is not scanner


# --- 5: segmenting again keeps the edited segmentation ---

def test_segmenting_again_keeps_the_edited_segmentation(slicer, module, tmp_path, monkeypatch):
    anatomy = sx.volume_from_array(slicer.mrmlScene, np.zeros((4, 8, 8)), "anatomy")
    edited = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Thigh muscles")
    p = sx.parameter_node(structuralVolume=anatomy, segmentation=edited, workFolder=str(tmp_path / "case"))
    logic, _ = _logic(module, monkeypatch)
    started = []
    monkeypatch.setattr(logic, "startJob", lambda sub, args, onSuccess=None: started.append((sub, args, onSuccess)))
    previous = []
    logic.segment(p, onDone=previous.append)
    sx.run_timers()
    (sub, args, loaded), = started
    assert sub == "segment" and Path(args[0]) == tmp_path / "case" / "structural.nii.gz"
    (tmp_path / "case" / "segment").mkdir()
    (tmp_path / "case" / "segment" / "muscles.seg.nrrd").write_bytes(b"")   # what the core wrote
    loaded(None)                                                     # the job ended
    assert edited in slicer.mrmlScene.nodes and edited not in slicer.mrmlScene.removed
    assert edited.GetDisplayVisibility() == 0 and p.segmentation is not edited
    assert p.segmentation.GetName() == "Thigh muscles_1" and previous == [edited]


# --- 6: a second segment for one muscle is named in the UI, with an effect the editor shows ---

def test_segment_collisions_are_named_with_advice_the_embedded_editor_can_follow(slicer, module):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Thigh muscles")
    node.segmentation = sx.Segmentation([
        ("a", sx.Segment("Gracilis (left)", 1, {slicer_bridge.LABEL_TAG: "18"})),
        ("b", sx.Segment("Gracilis (left)", 2)),                     # added from the terminology
        ("c", sx.Segment("Sartorius (right)", 3, {slicer_bridge.LABEL_TAG: "1"}))])
    kept, collisions = slicer_bridge.label_segments(node)
    assert kept == [("a", 18), ("c", 1)] and collisions == [("Gracilis (left)", "Gracilis (left)", 18)]
    message = module.MyositisQMRILogic().segmentCollisions(sx.parameter_node(segmentation=node))
    assert "'Gracilis (left)' is a second segment" in message
    effects = [e for e in slicer_bridge.SEGMENT_EDITOR_EFFECTS if f"'{e}'" in message]
    assert effects == ["Logical operators"]                          # named, and shown by the embedded editor

    class Editor:                                                    # qMRMLSegmentEditorWidget
        def setEffectNameOrder(self, names):
            self.order = list(names)

    editor = Editor()
    editor.unorderedEffectsVisible = True
    for name in ("mrmlSegmentEditorNode", "setMRMLSegmentEditorNode", "setSegmentationNode", "setSourceVolumeNode"):
        setattr(editor, name, lambda *a: None)
    slicer.mrmlScene.GetSingletonNode = lambda tag, class_name: object()
    slicer_bridge.configure_segment_editor(editor, node, object())
    assert "Logical operators" in editor.order and editor.unorderedEffectsVisible is False


def test_the_widget_asks_before_measuring_without_the_colliding_segment():
    source = MODULE_PY.read_text()
    for handler in ("def onRecompute", "def onExport"):
        body = source.split(handler)[1].split("\n    def ")[0]
        assert "self._acceptSegmentCollisions()" in body
    body = source.split("def _acceptSegmentCollisions")[1].split("\n    def ")[0]
    assert "confirmOkCancelDisplay" in body and "self.logic.log(message)" in body


# --- 7: path fields stay empty ---

def test_path_fields_are_empty_by_default_and_never_show_a_dot(slicer):
    tree = ast.parse(MODULE_PY.read_text())
    parameters = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MyositisQMRIParameterNode")
    fields = {s.target.id: s for s in parameters.body if isinstance(s, ast.AnnAssign)}
    for name in ("dicomFolder", "modelFile", "exportFolder"):
        assert ast.unparse(fields[name].annotation) == "str" and ast.literal_eval(fields[name].value) == ""
    bound = {w.get("name") for w in ET.parse(UI_FILE).getroot().iter("widget")
             if w.get("class") == "ctkPathLineEdit"
             and any(p.get("name") == "SlicerParameterName" for p in w.iter("property"))}
    assert not bound, f"bound to pathlib.Path by the wrapper (shows '.'): {bound}"

    node = sx.parameter_node(dicomFolder=".", modelFile="/models/m.safetensors")   # a scene saved before
    widgets = {"dicomFolder": sx.ctkPathLineEdit(), "modelFile": sx.ctkPathLineEdit(), "exportFolder": sx.ctkPathLineEdit()}
    fields = slicer_bridge.PathFields(widgets, lambda: node)
    fields.show(node)
    assert [w.currentPath for w in widgets.values()] == ["", "/models/m.safetensors", ""]
    widgets["exportFolder"].currentPath = "/out"
    widgets["modelFile"].currentPath = ""                            # the user clears the field
    assert node.exportFolder == "/out" and node.modelFile == ""
    fields.show(node)
    assert widgets["modelFile"].currentPath == ""


# --- the study from Slicer's DICOM database ---

def test_study_from_the_dicom_database_orders_mese_echoes_by_echo_time(slicer, module, exam, tmp_path, monkeypatch):
    files = sorted((exam / "dicom").rglob("*.dcm"), reverse=True)   # the database lists them in any order
    database = sx.DicomDatabase(files)
    slicer.dicomDatabase = database
    tree = dicom_database.study_tree(database)
    (patient,) = tree
    (entry,) = patient.studies
    assert [s.description for s in entry.series][:2] == ["T1w TSE", "MESE 17 echoes"] or len(entry.series) == 7
    assert sum(s.n_files for s in entry.series) == len(files)
    p = sx.parameter_node(workFolder=str(tmp_path / "case"))
    logic, lines = _logic(module, monkeypatch)
    logic.useDatabaseStudy(p, entry.uid)
    sx.run_timers()
    assert logic.lastError is None, logic.lastError
    rows = logic.studyRows(p)
    mese = next(r for r in rows if r.classification == "mese")
    assert len(mese.echo_times_ms) == 17 and list(mese.echo_times_ms) == sorted(mese.echo_times_ms)
    assert set(mese.files) == set(database.filesForSeries(mese.series_uid))   # the database's own files
    assert p.dicomStudyUid == entry.uid
    with pytest.raises(ValueError, match="not in Slicer's DICOM database"):
        logic.useDatabaseStudy(p, "1.2.3.nothing")


# --- subject hierarchy, table node, log, pip progress, steps, offline self-test ---

def test_results_go_under_the_study_or_one_results_folder(slicer):
    scene, sh = slicer.mrmlScene, slicer.mrmlScene.sh
    anatomy = sx.volume_from_array(scene, np.zeros((2, 2, 2)), "anatomy")
    maps = [sx.volume_from_array(scene, np.zeros((2, 2, 2)), n) for n in ("T2", "FF")]
    assert slicer_bridge.place_under_study(maps, anatomy) == 2        # NIfTI-loaded anatomy: a results folder
    folder = sh.GetItemParent(sh.GetItemByDataNode(maps[0]))
    assert sh.GetItemName(folder) == slicer_bridge.RESULTS_FOLDER and sh.GetItemParent(folder) == 1
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "report")
    slicer_bridge.place_under_study([table], anatomy)
    assert sh.GetItemParent(sh.GetItemByDataNode(table)) == folder   # the same folder, not a second one
    study_item = sh.CreateStudyItem(sh.CreateSubjectItem(1, "Doe^Jane"), "MR thighs")
    series = sh.CreateFolderItem(study_item, "series")
    sh.SetItemParent(sh.GetItemByDataNode(anatomy), series)
    slicer_bridge.place_under_study(maps, anatomy)
    assert {sh.GetItemParent(sh.GetItemByDataNode(m)) for m in maps} == {study_item}
    assert slicer_bridge.place_under_study(maps, None) == 0


def test_report_table_columns_keep_numbers_and_reviewer_marks():
    from myositis_qmri.segmentation import labels

    def row(value, t2, fat):
        label = labels.LABEL_BY_VALUE[value]
        return report_table.MuscleRow(label.muscle.key, label.muscle.name, label.muscle.abbreviation, label.side,
                                      value, t2, 10.0, 50.0, report_table.Grade(1, "automatic", 1), fat)

    rows = [row(1, 40.0, report_table.Grade(2, "reviewer", 1)), row(12, None, report_table.Grade(0, "automatic", 0))]
    columns = {c.name: c for c in report_table.table_columns(rows)}
    assert columns["T2 (ms) R"].values == (40.0,) and np.isnan(columns["T2 (ms) L"].values[0])
    assert columns["T2 (ms) R"].numeric and columns["T2 (ms) R"].unit == "ms"
    assert columns["Fat R"].values == ("2 30-60 % (reviewer; auto 1)",) and not columns["Fat R"].numeric
    assert list(columns) == [c[0] for c in report_table.COLUMNS]


def test_pip_progress_from_its_output_and_cancel(slicer, monkeypatch):
    progress = jobs.PipProgress(["monai", "slicerio"])
    for line in ("Collecting monai", "  Downloading monai-1.4.whl (2 MB)", "Collecting slicerio", "Collecting tqdm"):
        assert progress.feed(line)
    assert progress.fraction == pytest.approx(0.5) and progress.text == "Collecting tqdm"
    assert not progress.feed("Requirement already satisfied: numpy")
    progress.feed("Installing collected packages: tqdm, slicerio, monai")
    assert progress.fraction == 0.9

    script = ("import sys, time; print('Collecting monai'); sys.stdout.flush(); time.sleep(0.2); "
              "print('Installing collected packages: monai'); print('Successfully installed monai-1.4')")
    monkeypatch.setattr(jobs, "pip_install_command", lambda reqs, python=None: [sys.executable, "-c", script])
    dialogs, lines = [], []
    make = slicer.util.createProgressDialog
    monkeypatch.setattr(slicer.util, "createProgressDialog", lambda **kw: dialogs.append(make(**kw)) or dialogs[-1])
    sx.ProgressDialog.cancel_after = None
    slicer_bridge.install_with_progress(["monai"], log=lines.append)
    assert dialogs[0].values[-1] == 100 and dialogs[0].closed and "Successfully installed monai-1.4" in lines
    monkeypatch.setattr(jobs, "pip_install_command",
                        lambda reqs, python=None: [sys.executable, "-c", "import time; time.sleep(30)"])
    sx.ProgressDialog.cancel_after = 2
    try:
        with pytest.raises(RuntimeError, match="cancelled"):
            slicer_bridge.install_with_progress(["monai"])
    finally:
        sx.ProgressDialog.cancel_after = None


def test_step_queue_runs_one_step_per_tick_and_stops_at_a_failure_or_cancel():
    done, ran = [], []
    queue = steps.StepQueue([("a", lambda: ran.append("a") or 1), ("b", lambda: ran.append("b") or 2)], done.append)
    assert queue.description == "a" and queue.run_next() and ran == ["a"] and queue.fraction == 0.5
    assert queue.run_next() and not queue.run_next() and done == [[1, 2]] and not queue.running

    failing = steps.StepQueue([("x", lambda: 1 / 0), ("y", lambda: ran.append("y"))], done.append)
    assert not failing.run_next() and isinstance(failing.error, ZeroDivisionError) and "y" not in ran
    with pytest.raises(ZeroDivisionError):
        steps.StepQueue([("x", lambda: 1 / 0)]).run_all()
    cancelled = steps.StepQueue([("x", lambda: ran.append("x")), ("z", lambda: ran.append("z"))], done.append)
    cancelled.run_next()
    cancelled.cancel()
    assert not cancelled.run_next() and "z" not in ran and len(done) == 1


def test_echoes_are_written_one_step_each(slicer, tmp_path):
    class Sequence:           # vtkMRMLSequenceNode
        def GetNumberOfDataNodes(self):
            return 3

        def GetNthDataNode(self, index):
            node = sx.ScalarVolumeNode()
            node.image = sitk.GetImageFromArray(np.full((2, 3, 4), float(index), np.float32))
            return node

    echo_steps = slicer_bridge.echo_export_steps(Sequence(), tmp_path, "mese")
    assert [d for d, _ in echo_steps] == ["Writing echo 1 of 3", "Writing echo 2 of 3", "Writing echo 3 of 3"]
    assert not list(tmp_path.glob("*.nii.gz"))                       # nothing written before the steps run
    paths = steps.StepQueue(echo_steps).run_all()
    assert [sitk.GetArrayFromImage(sitk.ReadImage(str(p))).max() for p in paths] == [0.0, 1.0, 2.0]
    assert not [n for n in slicer.mrmlScene.nodes if n.IsA("vtkMRMLScalarVolumeNode")]   # temporary nodes removed


def test_the_self_test_skips_what_would_need_a_download_with_a_message():
    missing = {"inspect": [], "t2": [], "ff": [], "segment": ["monai"], "report": ["highdicom"]}
    runnable, message = pipeline.offline_stages(pipeline.SELF_TEST_STAGES, missing.get, lambda s: s == "segment")
    assert runnable == 3 and "'segment'" in message and "monai" in message and "torch" in message
    assert pipeline.offline_stages(pipeline.SELF_TEST_STAGES, lambda s: [], lambda s: False) == (5, "")
    source = MODULE_PY.read_text().split("def test_MyositisQMRI_pipeline")[1]
    assert "ensure_packages" not in source and "offline_stages" in source
