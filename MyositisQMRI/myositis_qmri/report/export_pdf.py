"""report.pdf: the printable report (header, graded table, figures) via matplotlib PdfPages."""
from __future__ import annotations

import io
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from ..io.atomic import atomic_path  # noqa: E402
from .export_html import GRADE_COLOURS, erosion_text  # noqa: E402
from .scoring import thigh_t2_against_threshold  # noqa: E402


def _fmt(value, digits=1) -> str:
    return "–" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def _table_page(report: dict):
    study = report.get("study") or {}
    figure = plt.figure(figsize=(8.27, 11.69))  # A4 portrait
    lines = [f"Patient: {study.get('patient_name', '–')}   ID: {study.get('patient_id', '–')}   "
             f"Study date: {study.get('study_date', '–')}",
             f"Report created {report['created']} by {report['software']['name']} {report['software']['version']}; "
             f"scoring: {report['scoring'].get('name')}",
             "Mask erosion: " + erosion_text(report["erosion"])]
    both = report["whole_thigh"]["both"]
    against = thigh_t2_against_threshold(report)
    lines.append(f"Whole thigh: muscle volume {_fmt(both['muscle_volume_ml'])} ml, mean water T2 "
                 f"{_fmt(both['t2_mean_ms'])} ms{f' ({against})' if against else ''}, "
                 f"volume-weighted FF {_fmt(both['ff_weighted_mean_percent'])} %")
    alerts = (["Structural study: no T2 or FF maps; no grades (volumes and cross-sectional areas only)"]
              if report.get("structural_only") else [])
    alerts += [f"Quality warning: {w['message']}" for w in report.get("quality_warnings") or []]
    figure.text(0.05, 0.97, "Quantitative thigh muscle MRI report", fontsize=14, weight="bold", va="top")
    for i, line in enumerate(lines):
        figure.text(0.05, 0.94 - 0.018 * i, line, fontsize=7.5, va="top")
    for i, line in enumerate(alerts):
        figure.text(0.05, 0.94 - 0.018 * (len(lines) + i), textwrap.shorten(line, 190), fontsize=7.5, va="top",
                    color="#b00", weight="bold")
    columns = ["Muscle", "Side", "Vol ml", "CSA max", "T2 mean", "T2 med", "%>thr", "FF mean", "FF med", "Edema", "Fat"]
    cells, colours = [], []
    for row in report["muscles"]:
        t2, ff, grades = row.get("t2") or {}, row.get("ff") or {}, row.get("grades") or {}
        g_cells, g_colours = [], []
        for kind in ("edema", "fat"):
            g = grades.get(kind) or {}
            text = "–" if g.get("grade") is None else f"{g['grade']} {g.get('label')}" + (" (R)" if g.get("source") == "reviewer" else "")
            g_cells.append(text)
            g_colours.append("white" if g.get("grade") is None else GRADE_COLOURS[min(g["grade"], 4)])
        cells.append([row["muscle"] + (" (empty)" if row["empty"] else ""), row["side"], _fmt(row["volume_ml"]),
                      _fmt(row.get("csa_max_cm2")), _fmt(t2.get("mean")), _fmt(t2.get("median")), _fmt(t2.get("percent_above_edema_threshold")),
                      _fmt(ff.get("mean")), _fmt(ff.get("median"))] + g_cells)
        colours.append(["white"] * 9 + g_colours)
    ax = figure.add_axes([0.03, 0.05, 0.94, 0.82 - 0.018 * len(alerts)])
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=columns, cellColours=colours, loc="upper center",
                     colWidths=[0.2, 0.06, 0.07, 0.07, 0.07, 0.07, 0.06, 0.07, 0.07, 0.12, 0.12])
    table.auto_set_font_size(False)
    table.set_fontsize(6)
    table.scale(1, 1.15)
    return figure


def _image_page(png: bytes, caption: str, dpi: int):
    """A page holding an already rendered figure (drawn once for HTML and PDF alike)."""
    pixels = plt.imread(io.BytesIO(png))
    height, width = pixels.shape[:2]
    figure = plt.figure(figsize=(width / dpi, height / dpi + 0.4), dpi=dpi)
    figure.figimage(pixels, xo=0, yo=0, origin="upper")
    figure.text(0.01, 0.995, caption, fontsize=9, va="top")
    return figure


def write_pdf(report: dict, figures, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        with PdfPages(tmp) as pdf:
            page = _table_page(report)
            pdf.savefig(page)
            plt.close(page)
            for name, (caption, _) in (figures.items.items() if figures is not None else []):
                page = _image_page(figures.png(name), caption, figures.dpi)
                pdf.savefig(page)
                plt.close(page)
            info = pdf.infodict()
            info["Title"] = "MyositisQMRI report"
            info["Creator"] = f"{report['software']['name']} {report['software']['version']}"
    return path
