"""report.html: one self-contained page (inline CSS, figures as base64 PNG, no scripts, no links out)."""
from __future__ import annotations

import html
from pathlib import Path

from ..io.atomic import write_text_atomic
from .scoring import edema_statistic, thigh_t2_against_threshold

GRADE_COLOURS = ["#d9f2d9", "#fff3b0", "#ffd08a", "#ff9f80", "#e06666"]

CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;border-bottom:1px solid #ccc;padding-top:10px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:right} th{background:#eee}
td.name{text-align:left} .header td{text-align:left;border:none;padding:1px 10px 1px 0}
.reviewer{font-weight:bold;text-decoration:underline} .flag{color:#b00;font-weight:bold}
.note{font-size:12px;color:#555} figure{margin:10px 0} figcaption{font-size:12px;color:#444}
img{max-width:100%}
.warn{border:2px solid #c60;background:#fff4e0;padding:4px 10px;margin:8px 0;font-size:13px}
.banner{border:2px solid #447;background:#eef;padding:4px 10px;margin:8px 0;font-size:14px;font-weight:bold}
"""


def _fmt(value, digits=1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _grade_cell(grade: dict | None) -> str:
    if not grade or grade.get("grade") is None:
        label = (grade or {}).get("label") or "–"
        return f'<td class="name">{html.escape(label)}</td>'
    g = grade["grade"]
    colour = GRADE_COLOURS[min(g, len(GRADE_COLOURS) - 1)]
    reviewer = grade.get("source") == "reviewer"
    title = f"auto grade {grade.get('auto_grade')}" + (f", reviewer {grade.get('reviewer')}" if grade.get("reviewer") else "")
    marker = " (R)" if reviewer else ""
    css = ' class="reviewer"' if reviewer else ""
    return (f'<td style="background:{colour}" title="{html.escape(title)}"><span{css}>{g} '
            f'{html.escape(str(grade.get("label")))}{marker}</span></td>')


def erosion_text(erosion: dict) -> str:
    """'2 voxels (3.0 mm) on the FF map, ...': how far each map's masks were eroded, in-plane."""
    if not erosion.get("applied"):
        return "none"
    per_map = erosion.get("per_map") or {}
    if not per_map:
        return f"{erosion['voxels']} voxel(s), {erosion['plane']}"
    names = {"t2": "T2 map", "ff": "FF map"}
    parts = [f"{e['voxels']} voxel(s) ({e['mm']:.1f} mm) on the {names.get(kind, kind)}" for kind, e in per_map.items()]
    return (", ".join(parts) + f", {erosion['plane']}; one voxel of the coarser of the map grid and the "
            f"{erosion.get('mask_resolution_mm', 0):.1f} mm grid the mask was drawn on")


def _header(report: dict) -> str:
    study = report.get("study") or {}
    fields = [("Patient", study.get("patient_name")), ("Patient ID", study.get("patient_id")),
              ("Study date", study.get("study_date")), ("Study", study.get("study_description")),
              ("Accession", study.get("accession_number")), ("Report created", report.get("created")),
              ("Software", f"{report['software']['name']} {report['software']['version']}"),
              ("Scoring", report["scoring"].get("name") + (f" ({report['scoring']['source_file']})"
                                                          if report["scoring"].get("source_file") else "")),
              ("Mask erosion", erosion_text(report["erosion"]))]
    rows = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{_fmt(v)}</td></tr>" for k, v in fields if v is not None)
    return f'<table class="header">{rows}</table>'


def _alerts(report: dict) -> str:
    """The structural-study banner and the quality warnings, under the header where they are seen first."""
    parts = []
    if report.get("structural_only"):
        parts.append('<p class="banner">Structural study: no T2 or FF maps; no grades. Muscle volumes and '
                     "cross-sectional areas only.</p>")
    warnings = report.get("quality_warnings") or []
    if warnings:
        items = "".join(f"<li>{html.escape(w['message'])}</li>" for w in warnings)
        parts.append(f'<div class="warn"><b>Quality warnings</b><ul>{items}</ul></div>')
    return "".join(parts)


def _csa_table(report: dict) -> str:
    """Per muscle, right and left: volume, largest and mean cross-sectional area, asymmetry."""
    by_key = {(row["muscle_key"], row["side"]): row for row in report["muscles"]}
    asymmetry = {a["muscle_key"]: a for a in report["asymmetry"]}
    rows = []
    for a in report["asymmetry"]:
        right, left = by_key[(a["muscle_key"], "right")], by_key[(a["muscle_key"], "left")]
        rows.append(f"<tr><td class='name'>{html.escape(a['muscle'])}</td>"
                    + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in ("volume_ml", "csa_max_cm2", "csa_mean_cm2")
                              for r in (right, left))
                    + f"<td>{_fmt(asymmetry[a['muscle_key']]['volume_ml'])}</td>"
                    f"<td>{_fmt(asymmetry[a['muscle_key']].get('csa_max_cm2'))}</td></tr>")
    return ("<table><tr><th>Muscle</th><th>Volume R (ml)</th><th>Volume L (ml)</th><th>Max CSA R (cm²)</th>"
            "<th>Max CSA L (cm²)</th><th>Mean CSA R (cm²)</th><th>Mean CSA L (cm²)</th><th>AI volume (%)</th>"
            "<th>AI max CSA (%)</th></tr>" + "".join(rows) + "</table><p class='note'>Cross-sectional area "
            "(CSA) per slice of the segmentation's grid; every slice in report_csa.csv and report.json "
            "(cross_sections). Asymmetry index = 100 × (R − L) / mean(R, L).</p>")


def _summary(report: dict) -> str:
    rows = []
    for side in ("right", "left", "both"):
        s = report["whole_thigh"][side]
        rows.append(f"<tr><td class='name'>{side}</td><td>{_fmt(s['muscle_volume_ml'])}</td>"
                    f"<td>{_fmt(s['t2_mean_ms'])}</td><td>{_fmt(thigh_t2_against_threshold(report, side))}</td>"
                    f"<td>{_fmt(s['ff_weighted_mean_percent'])}</td></tr>")
    return ("<table><tr><th>Thigh</th><th>Muscle volume (ml)</th><th>Mean water T2 (ms)</th>"
            "<th>Against the patient/control threshold</th>"
            "<th>Volume-weighted FF (%)</th></tr>" + "".join(rows) + "</table>")


def _muscle_table(report: dict) -> str:
    stat = edema_statistic(report["scoring"])
    head = ("<tr><th>Muscle</th><th>Side</th><th>Volume (ml)</th><th>Slices</th>"
            f"<th>T2 mean</th><th>T2 median</th><th>T2 SD</th><th>T2 IQR</th><th>% &gt; threshold</th>"
            "<th>FF mean</th><th>FF median</th><th>FF SD</th><th>FF IQR</th>"
            f"<th>Edema grade (T2 {stat})</th><th>z</th><th>Fat grade (FF mean)</th></tr>")
    rows = []
    for row in report["muscles"]:
        t2, ff, grades = row.get("t2") or {}, row.get("ff") or {}, row.get("grades") or {}
        excluded = (t2.get("n_excluded_nonfinite") or 0) + (ff.get("n_excluded_nonfinite") or 0)
        note = f' <span class="flag" title="non-finite voxels excluded">({excluded} NaN/inf)</span>' if excluded else ""
        empty = " <i>(empty mask)</i>" if row["empty"] else ""
        if row.get("outline_uncertain"):
            note += (f' <span class="flag" title="the network was unsure of this outline (mean probability '
                     f'{row["outline_confidence"]:.2f}): check the mask">(check outline)</span>')
        rows.append(
            f"<tr><td class='name'>{html.escape(row['muscle'])}{empty}{note}</td><td class='name'>{row['side']}</td>"
            f"<td>{_fmt(row['volume_ml'])}</td><td>{row['n_slices']}</td>"
            + "".join(f"<td>{_fmt(t2.get(k))}</td>" for k in ("mean", "median", "sd", "iqr", "percent_above_edema_threshold"))
            + "".join(f"<td>{_fmt(ff.get(k))}</td>" for k in ("mean", "median", "sd", "iqr"))
            + _grade_cell(grades.get("edema")) + f"<td>{_fmt(grades.get('edema_z_score'), 2)}</td>"
            + _grade_cell(grades.get("fat")) + "</tr>")
    return "<table>" + head + "".join(rows) + "</table>"


def _asymmetry_table(report: dict) -> str:
    rows = "".join(f"<tr><td class='name'>{html.escape(a['muscle'])}</td><td>{_fmt(a['volume_ml'])}</td>"
                   f"<td>{_fmt(a['t2_median_ms'])}</td><td>{_fmt(a['ff_mean_percent'])}</td></tr>"
                   for a in report["asymmetry"])
    return ("<table><tr><th>Muscle</th><th>AI volume (%)</th><th>AI T2 median (%)</th><th>AI FF mean (%)</th></tr>"
            + rows + "</table><p class='note'>Asymmetry index = 100 × (R − L) / mean(R, L).</p>")


def _longitudinal_table(report: dict) -> str:
    change = report.get("longitudinal")
    if not change:
        return "<p class='note'>No previous visit given (use --previous report.json).</p>"
    prev = change["previous_report"]
    rows = []
    for r in change["muscles"]:
        if not r.get("available"):
            rows.append(f"<tr><td class='name'>{html.escape(r['key'])}</td><td colspan=6>not comparable</td></tr>")
            continue
        flags = ", ".join(r["flags"])
        gc = r["grade_change"]
        rows.append(f"<tr><td class='name'>{html.escape(r['key'])}</td><td>{_fmt(r['delta_t2_ms'])}</td>"
                    f"<td>{_fmt(r['delta_ff_points'])}</td><td>{_fmt(r['delta_volume_ml'])}</td>"
                    f"<td>{_fmt(r['delta_volume_percent'])}</td>"
                    f"<td>{_fmt(gc.get('edema'))} / {_fmt(gc.get('fat'))}</td>"
                    f"<td class='flag'>{html.escape(flags)}</td></tr>")
    limits = change["limits"]
    return (f"<p class='note'>Previous visit: study date {_fmt(prev.get('study_date'))}, report {_fmt(prev.get('created'))}. "
            f"Flag limits: ΔT2 {limits['delta_t2_ms']} ms, ΔFF {limits['delta_ff_points']} points, "
            f"Δvolume {limits['delta_volume_percent']} %.</p>"
            "<table><tr><th>Muscle</th><th>ΔT2 (ms)</th><th>ΔFF (points)</th><th>ΔVolume (ml)</th>"
            "<th>ΔVolume (%)</th><th>Δgrade edema / fat</th><th>Flags</th></tr>" + "".join(rows) + "</table>")


def _figure(figures, name: str) -> str:
    if figures is None or name not in figures.items:
        return ""
    caption = figures.items[name][0]
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{figures.png_base64(name)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _graded_section(report: dict) -> str:
    if report.get("structural_only"):
        return ""
    edema = report["scoring"]["edema"]
    return f"""<h2>Per muscle: statistics and grades</h2>
<p class="note">Edema grade from water T2 ({edema_statistic(report['scoring'])}): 0 below {edema['normal_threshold_ms']} ms,
bands from {', '.join(str(e) for e in edema['edges_ms'])} ms. Fat grade (Mercuri-style) from mean FF, bands from
{', '.join(str(e) for e in report['scoring']['fat']['edges_percent'])} %. Underlined grades marked (R) were set by the reviewer.</p>
{_muscle_table(report)}"""


def render_html(report: dict, figures) -> str:
    notes = list(report.get("notes", []))
    for kind, quality in (report.get("quality") or {}).items():
        if quality.get("nonfinite_voxels_in_muscles"):
            notes.append(f"{kind.upper()} map: {quality['nonfinite_voxels_in_muscles']} non-finite voxels inside "
                         "muscles were excluded from the statistics.")
    for kind, available in report["maps_available"].items():
        if not available:
            notes.append(f"No {'water-T2' if kind == 't2' else 'fat-fraction'} map: "
                         f"{'edema' if kind == 't2' else 'fat'} grades are not available.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>MyositisQMRI report</title><style>{CSS}</style></head>
<body>
<h1>Quantitative thigh muscle MRI report</h1>
{_header(report)}
{_alerts(report)}
<h2>Whole thigh</h2>{_summary(report)}
{_graded_section(report)}
<h2>Per muscle: volume and cross-sectional area</h2>{_csa_table(report)}
<h2>Maps</h2>{_figure(figures, 'overlays')}{_figure(figures, 'heatmap')}
<h2>Left / right</h2>{_figure(figures, 'asymmetry')}{_asymmetry_table(report)}
<h2>Slice profiles</h2>{_figure(figures, 'profiles')}
<h2>Previous visit</h2>{_longitudinal_table(report)}{_figure(figures, 'longitudinal')}
<h2>Notes</h2><ul>{''.join(f'<li>{html.escape(n)}</li>' for n in notes) or '<li>None.</li>'}</ul>
</body></html>
"""


def write_html(report: dict, figures, path: str | Path) -> Path:
    return write_text_atomic(path, render_html(report, figures))
