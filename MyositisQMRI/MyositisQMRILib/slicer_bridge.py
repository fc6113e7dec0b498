"""Slicer-side glue: files <-> MRML nodes, colour maps, segments, plots, view jumps.

Imports slicer lazily inside each function, so the rest of MyositisQMRILib stays importable
by pytest. Nothing here computes on voxels; the core does that in a background process.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

# Map display: (file in the core's output folder, node name, colour table, window min, max, unit).
MAP_DISPLAY = {
    "t2": ("t2w.nii.gz", "Water T2 (ms)", "vtkMRMLColorTableNodeFileInferno.txt", 0.0, 80.0, "ms"),
    "ff": ("ff.nii.gz", "Fat fraction (%)", "vtkMRMLColorTableNodeFileViridis.txt", 0.0, 100.0, "%"),
    "b1": ("b1.nii.gz", "B1 (relative)", "vtkMRMLColorTableNodeFileViridis.txt", 0.5, 1.5, ""),
    "ffmese": ("ffmese.nii.gz", "FF from MESE (%)", "vtkMRMLColorTableNodeFileViridis.txt", 0.0, 100.0, "%"),
}
# Fit-quality maps the core may write next to the maps, shown greyscale on request.
QUALITY_PATTERNS = ("*residual*.nii.gz", "*quality*.nii.gz", "*r2*.nii.gz", "*rmse*.nii.gz")
MAP_ROLE_ATTRIBUTE = "MyositisQMRI.map"   # node attribute: which map of this module a volume is
PARAMETER_NAME_PROPERTY = "SlicerParameterName"   # as slicer.parameterNodeWrapper reads it
LABEL_TAG = "MyositisQMRI.label"   # segment tag holding the schema label value (right 1-11, left 12-22)
SEGMENT_EDITOR_SINGLETON = "MyositisQMRI"   # singleton tag of the embedded editor's parameter node
RESULTS_FOLDER = "MyositisQMRI results"   # subject-hierarchy folder for results of a volume outside any study
# "Logical operators" merges a second segment of one muscle into the first (Add), as the
# collision message advises; the embedded editor hides every effect not listed here.
SEGMENT_EDITOR_EFFECTS = ("Paint", "Erase", "Scissors", "Islands", "Smoothing", "Fill between slices",
                          "Logical operators")


def load_map(path: str | Path, kind: str, anatomy=None, existing=None):
    """Load a map as a colour-mapped volume over `anatomy`, with a colour bar.

    `existing`, a map this module loaded before for the same kind (its MAP_ROLE_ATTRIBUTE says
    so), is updated in place: the same node takes the new image data, so a recompute does not add
    a second "Water T2" and whatever the user set on the node (name, window, subject hierarchy
    place) stays. A node the user chose that is not such a map is never overwritten.
    """
    import slicer

    _, name, colour_id, low, high, unit = MAP_DISPLAY[kind]
    if is_map_of_kind(existing, kind):
        node = reload_volume(existing, path)
    else:
        node = slicer.util.loadVolume(str(path), {"name": name, "show": False})
        node.SetAttribute(MAP_ROLE_ATTRIBUTE, kind)
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(colour_id)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(low, high)
        # Background voxels (0) stay transparent so the anatomy shows through.
        display.ApplyThresholdOn()
        display.SetLowerThreshold(1e-3)
        display.SetUpperThreshold(1e9)
        node.SetAttribute("MyositisQMRI.unit", unit)
    show_colour_legend(node, f"{name}")
    slicer.util.setSliceViewerLayers(background=anatomy if anatomy is not None else "keep-current",
                                     foreground=node, foregroundOpacity=0.6, fit=anatomy is None)
    return node


def is_map_of_kind(node, kind: str) -> bool:
    """True for a volume this module loaded as map `kind` ("t2", "quality:residual", ...)."""
    return node is not None and node.GetAttribute(MAP_ROLE_ATTRIBUTE) == kind


def reload_volume(node, path: str | Path):
    """Read a volume file into an existing volume node (new image data and geometry, same node,
    same display), through a storage node that stays out of the scene."""
    import slicer

    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise RuntimeError(f"Slicer could not read {path} into '{node.GetName()}'")
    return node


def show_colour_legend(node, title: str) -> None:
    """Colour bar in the slice views (Slicer >= 4.13 colour legend display node)."""
    import slicer

    colors = slicer.modules.colors.logic()
    if not hasattr(colors, "AddDefaultColorLegendDisplayNode"):
        return
    legend = colors.AddDefaultColorLegendDisplayNode(node)
    legend.SetTitleText(title)
    legend.SetVisibility(True)


def quality_map_files(folder: str | Path) -> list[Path]:
    """The fit-quality maps a map folder holds (residual, ...), without the maps themselves."""
    files, names = [], {v[0] for v in MAP_DISPLAY.values()}
    for pattern in QUALITY_PATTERNS:
        for path in sorted(Path(folder).glob(pattern)):
            if path not in files and path.name not in names:
                files.append(path)
    return files


def quality_role(path: Path) -> str:
    return "quality:" + path.name.split(".")[0]


def find_map_node(kind: str):
    """The volume this module loaded as map `kind`, if it is still in the scene."""
    import slicer

    return next((n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode") if is_map_of_kind(n, kind)), None)


def load_quality_maps(folder: str | Path, anatomy=None, show: bool = True) -> list:
    """Load the fit-quality maps of a map folder as greyscale volumes the user can see and select;
    a map loaded before is updated in place (pressing again, or recomputing, adds no duplicate).
    With `show`, the first is put in the foreground over `anatomy`."""
    import slicer

    nodes = []
    for path in quality_map_files(folder):
        role = quality_role(path)
        node = find_map_node(role)
        if node is not None:
            reload_volume(node, path)
        else:
            node = slicer.util.loadVolume(str(path), {"name": "Quality: " + path.name.split(".")[0], "show": False})
            node.SetAttribute(MAP_ROLE_ATTRIBUTE, role)
        nodes.append(node)
    if nodes and show:
        slicer.util.setSliceViewerLayers(background=anatomy if anatomy is not None else "keep-current",
                                         foreground=nodes[0], foregroundOpacity=0.6, fit=anatomy is None)
    return nodes


def export_volume(node, folder: str | Path, name: str) -> Path:
    """Write a scalar volume node to NIfTI for the core (Slicer writes LPS-correct headers)."""
    import slicer

    path = Path(folder) / f"{name}.nii.gz"
    if not _write_node(node, path):
        raise RuntimeError(f"could not write {node.GetName()} to {path}")
    return path


def _write_node(node, path: Path) -> bool:
    """Write a node to a file without pointing its storage node there (a later "Save scene" must
    still save the user's data where it was), as slicer.util.exportNode does (Slicer >= 5.6).
    The file holds world coordinates: a volume the user placed under a (registration) transform
    reaches the core where Slicer shows it, and the results come back aligned with it."""
    import slicer

    if hasattr(slicer.util, "exportNode"):
        # A fresh properties dict: exportNode stores the file format in the one it is given.
        return bool(slicer.util.exportNode(node, str(path), {}, world=True))
    return bool(slicer.util.saveNode(node, str(path)))


def _proxy_transform_id(sequence_node) -> str | None:
    """The transform the user put the echoes under: it sits on the browser's proxy node, not on
    the sequence's data nodes."""
    import slicer

    browser = slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(sequence_node)
    proxy = browser.GetProxyNode(sequence_node) if browser else None
    return proxy.GetTransformNodeID() if proxy else None


def export_echo_volumes(node, folder: str | Path, name: str) -> list[Path]:
    """A multi-echo sequence node to one NIfTI per echo, in the sequence's order (its echo times:
    `echo_times_from_index`). The module runs `echo_export_steps` one per timer tick instead."""
    return [write() for _, write in echo_export_steps(node, folder, name)]


def echo_export_steps(node, folder: str | Path, name: str) -> list:
    """(description, write) per echo of a sequence; each write exports one echo and returns its
    path, so that a long series is written between UI events (steps.StepQueue)."""
    transform_id = _proxy_transform_id(node)
    count = node.GetNumberOfDataNodes()
    return [(f"Writing echo {i + 1} of {count}",
             functools.partial(_export_echo, node, i, transform_id, Path(folder), name)) for i in range(count)]


def _export_echo(node, index: int, transform_id, folder: Path, name: str) -> Path:
    import slicer

    echo = node.GetNthDataNode(index)
    stem = f"{name}_echo{index + 1:02d}"
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{name}_echo{index + 1}")
    storage.Copy(echo)
    storage.SetAndObserveTransformNodeID(transform_id)
    try:
        return export_volume(storage, folder, stem)
    finally:
        slicer.mrmlScene.RemoveNode(storage)


# Index units that echo times come in, as the factor to ms. An empty unit counts as ms because
# DICOM's EchoTime (0018,0081) is in ms and importers that name the index after it leave it blank.
_ECHO_TIME_UNITS_TO_MS = {"ms": 1.0, "msec": 1.0, "": 1.0, "s": 1000.0, "sec": 1000.0}


def echo_times_from_index(node) -> list[float]:
    """The echo times (ms) of a sequence whose index is echo time, else [].

    A sequence indexed by frame, instance number or acquisition time (Slicer's DICOM image-sequence
    import does this) must not lend its index values as echo times: 0, 1, 2 "ms" would fit a
    wrong T2 without complaint.
    """
    index_name = (node.GetIndexName() or "").replace("_", " ").strip().lower()
    scale = _ECHO_TIME_UNITS_TO_MS.get((node.GetIndexUnit() or "").strip().lower())
    if scale is None or not ("echo" in index_name or index_name == "te"):
        return []
    try:
        times = [float(node.GetNthIndexValue(i)) * scale for i in range(node.GetNumberOfDataNodes())]
    except ValueError:
        return []
    increasing = all(b > a for a, b in zip(times, times[1:]))
    return times if times and times[0] > 0 and increasing else []


def load_segmentation(folder: str | Path, reference_volume=None, name: str = "Thigh muscles"):
    """The core's muscles.seg.nrrd (or muscles.nii.gz) as a segmentation with named, coloured,
    coded segments from the label schema."""
    import slicer
    from myositis_qmri.segmentation import labels

    from .terminology import terminology_entry

    folder = Path(folder)
    seg_nrrd, label_map = folder / "muscles.seg.nrrd", folder / "muscles.nii.gz"
    if seg_nrrd.exists():
        node = slicer.util.loadSegmentation(str(seg_nrrd))
    else:
        labelmap_node = slicer.util.loadLabelVolume(str(label_map), {"show": False})
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap_node, node)
        slicer.mrmlScene.RemoveNode(labelmap_node)
    node.SetName(name)
    if reference_volume is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    segmentation = node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        label = labels.LABEL_BY_VALUE.get(segment.GetLabelValue()) or labels.LABEL_BY_KEY.get(segment.GetName())
        if label is None:
            continue
        segment.SetName(label.name)
        segment.SetColor(*(c / 255.0 for c in label.colour_rgb))
        segment.SetTag(LABEL_TAG, str(label.value))
        entry = terminology_entry(label)
        if entry:
            segment.SetTag(segment.GetTerminologyEntryTagName(), entry)
    node.CreateDefaultDisplayNodes()
    node.CreateClosedSurfaceRepresentation()
    return node


def load_new_segmentation(folder: str | Path, reference_volume=None, previous=None):
    """A fresh segmentation beside `previous`, which is hidden, never removed: segmenting again
    must not throw away what the reviewer corrected (both stay in the Data module; the new one
    gets a name of its own, "Thigh muscles_1" and so on)."""
    import slicer

    name = slicer.mrmlScene.GenerateUniqueName("Thigh muscles") if previous is not None else "Thigh muscles"
    node = load_segmentation(folder, reference_volume, name=name)
    if previous is not None:
        previous.SetDisplayVisibility(False)
    return node


def label_tag(segment) -> str:
    """The schema label value a segment carries in its MyositisQMRI.label tag ('' if none).
    vtkSegment::GetTag(tag, value&) returns a bool and fills its second argument."""
    import vtk

    value = vtk.mutable("")
    return str(value) if segment.GetTag(LABEL_TAG, value) else ""


def schema_value(segment) -> int | None:
    """The schema label value of a segment: its tag, else its name when the reviewer added it from
    the muscle terminology (named "Sartorius (right)" and so on); None for any other segment."""
    tag = label_tag(segment)
    return int(tag) if tag else _value_by_name(segment)


def _value_by_name(segment) -> int | None:
    from myositis_qmri.segmentation import labels

    label = next((label for label in labels.LABELS if label.name == segment.GetName()), None)
    return label.value if label else None


def segment_id_for_label(segmentation_node, label_value: int) -> str | None:
    """The segment showing a schema label: by tag, by name, or (neither, as a label map loaded by
    hand gives) by its own label value."""
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        # Schema values start at 1, so only a segment without one falls back to its layer value.
        if (schema_value(segment) or segment.GetLabelValue()) == label_value:
            return segmentation.GetNthSegmentID(index)
    return None


def label_segments(segmentation_node) -> tuple[list, list]:
    """(kept, collisions) of a segmentation: kept is [(segment ID, schema value)] for the first
    segment of each muscle; collisions is [(second segment's name, first segment's name, value)]
    for every further segment of a muscle already kept. A label map holds one value per voxel and
    the colour table one name per value, so a second segment cannot be exported beside the first."""
    segmentation = segmentation_node.GetSegmentation()
    kept, first_name, collisions = [], {}, []
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        value = schema_value(segment)
        if value is None:
            continue
        if value in first_name:
            collisions.append((segment.GetName(), first_name[value], value))
            continue
        first_name[value] = segment.GetName()
        kept.append((segmentation.GetNthSegmentID(index), value))
    return kept, collisions


def collision_message(collisions) -> str:
    """What the user reads when two segments show one muscle: which ones, and how to merge them
    with an effect the embedded Segment Editor shows (SEGMENT_EDITOR_EFFECTS)."""
    if not collisions:
        return ""
    lines = [f"'{second}' is a second segment for the muscle of '{first}'." for second, first, _ in collisions]
    return ("\n".join(lines) + "\n\nOnly the first segment of each muscle is measured. To keep both, select "
            "the first segment in the Segment Editor below, choose the 'Logical operators' effect, operation "
            "'Add', pick the second segment as the modifier segment, Apply, then delete the second segment.")


def export_label_map(segmentation_node, reference_volume, path: str | Path) -> Path:
    """The (edited) segmentation as a label map whose values follow the label schema."""
    import slicer
    import vtk

    segmentation = segmentation_node.GetSegmentation()
    kept, collisions = label_segments(segmentation_node)
    if collisions:
        logging.warning("MyositisQMRI: %s", collision_message(collisions))
    ids, values = vtk.vtkStringArray(), [value for _, value in kept]
    for segment_id, _ in kept:
        ids.InsertNextValue(segment_id)
    color_table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode")
    color_table.SetTypeToUser()
    if not hasattr(color_table, "SetColorDefined"):
        # Before Slicer 5.10 a table whose names are not marked initialised renames every entry
        # "R=.. G=.. B=.." on first lookup, so no segment would match its entry by name.
        color_table.SetNamesInitialised(True)
    color_table.SetNumberOfColors(max(values, default=0) + 1)
    color_table.SetColor(0, "Background", 0, 0, 0, 0)
    for i, value in enumerate(values):
        color_table.SetColor(value, segmentation.GetSegment(ids.GetValue(i)).GetName(), 1, 1, 1, 1)
    labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    try:
        # Slicer matches colour-table entries to segments by name, so each segment keeps its schema value.
        slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_volume,
            slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, color_table)
        if not _write_node(labelmap, Path(path)):
            raise RuntimeError(f"could not write the label map to {path}")
    finally:
        slicer.mrmlScene.RemoveNode(labelmap)
        slicer.mrmlScene.RemoveNode(color_table)
    return Path(path)


def study_item_of(source_node):
    """The subject-hierarchy item that `source_node` (the study's structural volume or echoes)
    sits under: its DICOM study when it came from the DICOM database, else a "MyositisQMRI
    results" folder next to it; 0 (Slicer's invalid item) without a source node."""
    import slicer

    if source_node is None:
        return 0
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    item = sh.GetItemByDataNode(source_node)
    if not item:
        return 0
    study = sh.GetItemAncestorAtLevel(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy())
    if study:
        return study
    parent = sh.GetItemParent(item) or sh.GetSceneItemID()
    return sh.GetItemChildWithName(parent, RESULTS_FOLDER) or sh.CreateFolderItem(parent, RESULTS_FOLDER)


def place_under_study(nodes, source_node) -> int:
    """Move result nodes (maps, segmentation, report table) under the patient and study of the
    source volume in the subject hierarchy (Data module), so they travel with the study (DICOM
    export, closing a patient). Returns how many were moved."""
    import slicer

    parent = study_item_of(source_node)
    if not parent:
        return 0
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    moved = 0
    for node in nodes:
        item = sh.GetItemByDataNode(node) if node is not None else 0
        if item and item != parent and sh.GetItemParent(item) != parent:
            sh.SetItemParent(item, parent)
            moved += 1
    return moved


def update_report_table(rows, node=None, name: str = "Myositis report"):
    """The report as a vtkMRMLTableNode (Data module, table view, copy and paste, saved with the
    scene): one line per muscle, right and left side by side (report_table.table_columns). The
    same node is refilled on every recompute; it is locked, since grades change in the panel."""
    import slicer
    import vtk

    from .report_table import table_columns

    if node is None:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    wasModifying = node.StartModify()
    node.RemoveAllColumns()
    for column in table_columns(rows):
        array = vtk.vtkDoubleArray() if column.numeric else vtk.vtkStringArray()
        array.SetName(column.name)
        for value in column.values:
            array.InsertNextValue(value)
        node.AddColumn(array)
        if column.unit:
            node.SetColumnUnitLabel(column.name, column.unit)
    node.SetLocked(True)
    node.EndModify(wasModifying)
    return node


def show_table(node) -> None:
    """Show a table node in the table view of the "Four-Up Table" layout (its cells can be
    selected and copied from there)."""
    import slicer

    layout_manager = slicer.app.layoutManager()
    if layout_manager is not None:
        layout_manager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
    slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(node.GetID())
    slicer.app.applicationLogic().PropagateTableSelection()


def parameter_widgets(ui) -> dict:
    """Parameter name -> widget for every .ui widget with a SlicerParameterName property
    (ui as slicer.util.childWidgetVariables gives it), for connectParametersToGui."""
    return {widget.property(PARAMETER_NAME_PROPERTY): widget for widget in vars(ui).values()
            if hasattr(widget, "property") and widget.property(PARAMETER_NAME_PROPERTY)}


def path_text(value) -> str:
    """A path parameter as its field shows it: "" for unset ("." is how pathlib.Path("") reads,
    and what scenes saved with the former Path parameters hold)."""
    text = "" if value is None else str(value)
    return "" if text in ("", ".") else text


class PathFields:
    """ctkPathLineEdit fields bound to str parameters by hand.

    Slicer's parameterNodeWrapper binds a ctkPathLineEdit only to a pathlib.Path, which turns an
    empty field into Path("") and writes "." back into it; a str parameter keeps it empty. `fields`
    maps a parameter name to its widget; `parameter_node()` gives the node of the moment.
    """

    def __init__(self, fields: dict, parameter_node):
        self.fields, self.parameter_node = dict(fields), parameter_node
        for name, widget in self.fields.items():
            widget.connect("currentPathChanged(QString)", functools.partial(self._changed, name))

    def _changed(self, name: str, path: str) -> None:
        node = self.parameter_node()
        if node is not None and path_text(getattr(node, name)) != path_text(path):
            setattr(node, name, path_text(path))

    def show(self, node) -> None:
        """Put the node's values into the fields (after loading a scene, or a change in code)."""
        if node is None:
            return
        for name, widget in self.fields.items():
            text = path_text(getattr(node, name))
            if widget.currentPath != text:
                widget.currentPath = text


def fill_database_tree(tree, patients) -> None:
    """The DICOM database's patients, studies and series (dicom_database.study_tree) in a QTreeWidget;
    every study and series item holds its study's UID (Qt.UserRole) for `selected_study_uid`."""
    import qt

    tree.clear()
    for patient in patients:
        patient_item = qt.QTreeWidgetItem()
        patient_item.setText(0, patient.label)
        tree.addTopLevelItem(patient_item)
        for entry in patient.studies:
            study_item = qt.QTreeWidgetItem()
            study_item.setText(0, entry.label)
            study_item.setData(0, qt.Qt.UserRole, entry.uid)
            patient_item.addChild(study_item)
            for series in entry.series:
                series_item = qt.QTreeWidgetItem()
                series_item.setText(0, series.label)
                series_item.setData(0, qt.Qt.UserRole, entry.uid)
                study_item.addChild(series_item)
        patient_item.setExpanded(len(patients) == 1)


def selected_study_uid(tree) -> str:
    """The study of the selected tree item (a study, or a series of it); "" for a patient or nothing."""
    import qt

    item = tree.currentItem()
    uid = item.data(0, qt.Qt.UserRole) if item is not None else None
    return str(uid) if uid else ""


def select_segment_editor_node(editor_widget) -> None:
    """Give the embedded Segment Editor its parameter node: the scene's MyositisQMRI singleton, made
    when missing. The widget holds it by a weak pointer, so after a scene close it needs one again
    (as Slicer's own Segment Editor module does on setup, enter and scene close)."""
    import slicer

    node = slicer.mrmlScene.GetSingletonNode(SEGMENT_EDITOR_SINGLETON, "vtkMRMLSegmentEditorNode")
    if node is None:
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
        node.UnRegister(None)
        node.SetSingletonTag(SEGMENT_EDITOR_SINGLETON)
        node = slicer.mrmlScene.AddNode(node)
    if editor_widget.mrmlSegmentEditorNode() != node:
        editor_widget.setMRMLSegmentEditorNode(node)


def configure_segment_editor(editor_widget, segmentation_node, source_volume) -> None:
    """Point the embedded Segment Editor at the muscles and the structural volume."""
    select_segment_editor_node(editor_widget)
    editor_widget.setSegmentationNode(segmentation_node)
    if hasattr(editor_widget, "setSourceVolumeNode"):
        editor_widget.setSourceVolumeNode(source_volume)
    else:  # Slicer < 5.2
        editor_widget.setMasterVolumeNode(source_volume)
    editor_widget.setEffectNameOrder(list(SEGMENT_EDITOR_EFFECTS))
    editor_widget.unorderedEffectsVisible = False


def choice_box():
    """A QComboBox for table cells that the mouse wheel does not change: scrolling the panel over
    the report must not rewrite a grade or a series role (QComboBox takes wheel events unfocused)."""
    import qt

    box = _choice_box_class(qt)()
    box.setFocusPolicy(qt.Qt.StrongFocus)
    return box


@functools.cache
def _choice_box_class(qt):
    class ChoiceBox(qt.QComboBox):
        def wheelEvent(self, event):
            event.ignore()   # the table (and the panel) scroll instead
    return ChoiceBox


def read_only_item(text: str):
    """A table cell the user can select but not type into."""
    import qt

    item = qt.QTableWidgetItem(text)
    item.setFlags(item.flags() & ~qt.Qt.ItemIsEditable)
    return item


def jump_to_label(segmentation_node, label_value: int) -> bool:
    """Centre the slice views on one muscle."""
    import slicer

    segment_id = segment_id_for_label(segmentation_node, label_value)
    if segment_id is None:
        return False
    center = segmentation_node.GetSegmentCenterRAS(segment_id)
    if center is None:   # the reviewer erased the whole muscle
        return False
    slicer.modules.markups.logic().JumpSlicesToLocation(center[0], center[1], center[2], True)
    return True


def update_bar_chart(names, right, left, title: str, unit: str, chart_name: str = "MyositisQMRI chart"):
    """Left/right bar chart in a plot view (table + two series + chart nodes, reused)."""
    import slicer
    import vtk

    scene = slicer.mrmlScene
    table = scene.GetFirstNodeByName(chart_name + " table") or scene.AddNewNodeByClass("vtkMRMLTableNode", chart_name + " table")
    table.RemoveAllColumns()
    columns = [vtk.vtkStringArray(), vtk.vtkDoubleArray(), vtk.vtkDoubleArray()]
    for column, column_name in zip(columns, ("Muscle", "Right", "Left")):
        column.SetName(column_name)
    for name, r, l in zip(names, right, left):
        columns[0].InsertNextValue(name)
        columns[1].InsertNextValue(r)
        columns[2].InsertNextValue(l)
    for column in columns:
        table.AddColumn(column)
    chart = scene.GetFirstNodeByName(chart_name) or scene.AddNewNodeByClass("vtkMRMLPlotChartNode", chart_name)
    chart.RemoveAllPlotSeriesNodeIDs()
    for side, colour in (("Right", (0.84, 0.37, 0.0)), ("Left", (0.0, 0.45, 0.70))):
        series_name = f"{chart_name} {side}"
        series = scene.GetFirstNodeByName(series_name) or scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", series_name)
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("Muscle")
        series.SetYColumnName(side)
        series.SetLabelColumnName("Muscle")
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
        series.SetColor(*colour)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle(title)
    chart.SetXAxisTitle("Muscle")
    chart.SetYAxisTitle(f"{title} ({unit})" if unit else title)
    slicer.modules.plots.logic().ShowChartInLayout(chart)
    return chart


def ensure_packages(stage: str, parent_module: str = "MyositisQMRI") -> bool:
    """Ask once, then install what `stage` lacks: torch via SlicerPyTorch, others via pip with
    Slicer's own packages (and torch) pinned, so nothing Slicer ships is upgraded."""
    import slicer

    from .dependencies import pip_install_arguments, stage_plan, write_constraints

    plan = stage_plan(stage)
    if plan.problems:
        slicer.util.errorDisplay("This step cannot run in this Slicer:\n" + "\n".join(plan.problems))
        return False
    if plan.needs_torch:
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay("This step needs PyTorch. Install the 'PyTorch' extension from the "
                                     "Extensions Manager, restart Slicer, and try again.")
            return False
        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if not torch_logic.torchInstalled() and torch_logic.installTorch(askConfirmation=True) is None:
            return False
    missing = list(plan.install)
    if not missing:
        return True
    # In testing mode confirmOkCancelDisplay shows nothing and does not return Ok, so ask only a user.
    if not slicer.app.testingEnabled() and not slicer.util.confirmOkCancelDisplay(
            f"{parent_module} needs these Python packages for this step: {', '.join(missing)}.\n"
            "Install them now? (This may take a few minutes.)", "Missing Python packages"):
        return False
    constraints_file = write_constraints(Path(slicer.app.temporaryPath) / "MyositisQMRI")
    install_with_progress(missing, constraints_file)
    logging.info("installed %s", missing)
    return True


def install_with_progress(requirements, constraints_file=None, log=None) -> None:
    """`pip install` in a background process with a progress dialog (what pip is collecting and
    installing; Cancel stops it), instead of slicer.util.pip_install, which holds the UI frozen
    until pip ends. `log(line)` receives pip's output (the module's log pane)."""
    import shutil
    import time

    import slicer

    from . import jobs
    from .dependencies import pip_install_arguments

    progress = jobs.PipProgress(list(requirements))
    # PythonSlicer, as slicer.util.pip_install runs it (found on PATH inside Slicer)
    python = shutil.which("PythonSlicer") or jobs.python_executable()
    arguments = (pip_install_arguments(progress.requirements, constraints_file) if constraints_file
                 else progress.requirements)
    job = jobs.BackgroundJob(jobs.pip_install_command(arguments, python)).start()
    dialog = slicer.util.createProgressDialog(
        labelText=f"Installing {', '.join(progress.requirements)}", windowTitle="Installing Python packages",
        maximum=100, value=0, autoClose=False)
    try:
        while job.running:
            for line in progress.new_lines(job):
                (log or logging.info)(line)
            dialog.value, dialog.labelText = int(100 * progress.fraction), progress.text[:120]
            if dialog.wasCanceled:
                job.cancel()
            slicer.app.processEvents()
            time.sleep(0.05)
    finally:
        dialog.close()
    if job.cancelled:
        raise RuntimeError("The package installation was cancelled.")
    if job.result.returncode != 0:
        raise RuntimeError(f"pip could not install {' '.join(progress.requirements)}:\n" + "\n".join(job.log[-10:]))


def work_folder(case_name: str) -> Path:
    """A per-case folder under Slicer's temporary path for the core's outputs."""
    import slicer

    folder = Path(slicer.app.temporaryPath) / "MyositisQMRI" / case_name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_folder(path: str | Path) -> None:
    import qt

    qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(os.fspath(path)))
