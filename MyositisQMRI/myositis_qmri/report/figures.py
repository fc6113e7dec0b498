"""Report figures (matplotlib, no display): map overlays with muscle outlines, a muscle heatmap,
left/right bars, slice profiles and the change since the previous visit.

Images are shown as stored (radiological view for axial LPS grids: the patient's right on the
left of the picture). Each figure is kept as a matplotlib Figure so HTML (PNG) and PDF share it.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from ..segmentation.labels import LABEL_BY_KEY, LABEL_BY_VALUE, MUSCLES, label_value  # noqa: E402
from .stats import align_labels  # noqa: E402
from .scoring import edema_statistic  # noqa: E402

MAP_STYLE = {"t2": ("Water T2 (ms)", "magma", (25.0, 55.0)), "ff": ("Fat fraction (%)", "viridis", (0.0, 100.0))}


@dataclass
class Figures:
    """Named figures in report order, each with a caption."""

    items: dict[str, tuple[str, Figure]] = field(default_factory=dict)
    dpi: int = 90
    _png: dict[str, bytes] = field(default_factory=dict)

    def add(self, name: str, caption: str, figure: Figure) -> None:
        self.items[name] = (caption, figure)

    def png(self, name: str) -> bytes:
        """The figure rendered once (HTML embeds it, the PDF places the same pixels)."""
        if name not in self._png:
            buffer = io.BytesIO()
            self.items[name][1].savefig(buffer, format="png", dpi=self.dpi, bbox_inches="tight")
            self._png[name] = buffer.getvalue()
        return self._png[name]

    def png_base64(self, name: str) -> str:
        return base64.b64encode(self.png(name)).decode("ascii")

    def close(self) -> None:
        for _, figure in self.items.values():
            plt.close(figure)


def _maps(inputs) -> dict:
    return {kind: volume for kind, volume in (("t2", inputs.t2), ("ff", inputs.ff)) if volume is not None}


def representative_slices(labels: np.ndarray, n: int = 3) -> list[int]:
    """Slices at 25/50/75 % of the muscles' extent along z (fewer when there are fewer slices)."""
    present = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    if present.size == 0:
        return []
    picks = np.unique(np.round(np.quantile(present, np.linspace(0.25, 0.75, n))).astype(int))
    return [int(present[np.argmin(np.abs(present - p))]) for p in picks]


def _anatomy_on(inputs, reference):
    if inputs.anatomy is None:
        return None
    if inputs.anatomy.geometry.same_grid(reference.geometry):
        return inputs.anatomy.array
    from ..geometry import resample_to
    return resample_to(inputs.anatomy, reference).array


def _grey(image: np.ndarray) -> np.ndarray:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros_like(image, dtype=float)
    low, high = np.percentile(finite, [1, 99])
    return np.clip((np.nan_to_num(image) - low) / max(high - low, 1e-6), 0, 1)


def overlay_figure(inputs) -> Figure | None:
    maps = _maps(inputs)
    if not maps:
        return None
    rows = []
    for kind, volume in maps.items():
        labels = align_labels(inputs.labels.with_array(np.rint(inputs.labels.array).astype(np.int16)), volume).array
        slices = representative_slices(labels)
        anatomy = _anatomy_on(inputs, volume)
        rows.append((kind, volume, labels, slices, anatomy))
    n_cols = max(len(r[3]) for r in rows) or 1
    figure, axes = plt.subplots(len(rows), n_cols, figsize=(4.2 * n_cols, 3.8 * len(rows)), squeeze=False)
    for r, (kind, volume, labels, slices, anatomy) in enumerate(rows):
        title, cmap, (vmin, vmax) = MAP_STYLE[kind]
        image = None
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(slices):
                continue
            z = slices[c]
            background = anatomy[z] if anatomy is not None else volume.array[z]
            ax.imshow(_grey(background), cmap="gray", interpolation="nearest")
            in_muscle = labels[z] > 0
            image = ax.imshow(np.ma.masked_where(~in_muscle, volume.array[z]), cmap=cmap, vmin=vmin, vmax=vmax,
                              alpha=0.85, interpolation="nearest")
            outline = find_boundaries(labels[z], mode="inner")
            ax.imshow(np.ma.masked_where(~outline, outline), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{title.split(' (')[0]}, slice {z + 1}/{volume.array.shape[0]}", fontsize=9)
        if image is not None:
            figure.colorbar(image, ax=list(axes[r]), shrink=0.8, label=title)
    return figure


def _muscle_value(report: dict, kind: str) -> dict[int, float]:
    stat = edema_statistic(report["scoring"]) if kind == "t2" else "mean"
    return {row["label_value"]: row[kind][stat] for row in report["muscles"]
            if row.get(kind) and row[kind].get(stat) is not None}


def heatmap_figure(report: dict, inputs) -> Figure | None:
    maps = _maps(inputs)
    if not maps:
        return None
    figure, axes = plt.subplots(1, len(maps), figsize=(5.5 * len(maps), 4.6), squeeze=False)
    for ax, (kind, volume) in zip(axes[0], maps.items()):
        labels = align_labels(inputs.labels.with_array(np.rint(inputs.labels.array).astype(np.int16)), volume).array
        slices = representative_slices(labels)
        if not slices:
            ax.axis("off")
            continue
        z = slices[len(slices) // 2]
        values = _muscle_value(report, kind)
        lookup = np.full(int(labels.max()) + 1, np.nan)
        for value, v in values.items():
            if value < lookup.size:
                lookup[value] = v
        painted = lookup[labels[z]]
        painted[labels[z] == 0] = np.nan
        title, cmap, (vmin, vmax) = MAP_STYLE[kind]
        image = ax.imshow(np.ma.masked_invalid(painted), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.imshow(np.ma.masked_where(~find_boundaries(labels[z]), np.ones_like(painted)), cmap="gray", vmin=0, vmax=1)
        for value in np.unique(labels[z]):
            if value == 0:
                continue
            ys, xs = np.nonzero(labels[z] == value)
            ax.text(xs.mean(), ys.mean(), LABEL_BY_VALUE[int(value)].muscle.abbreviation, fontsize=6,
                    ha="center", va="center", color="white")
        ax.set_title(f"Per-muscle {title}, slice {z + 1}", fontsize=9)
        ax.axis("off")
        figure.colorbar(image, ax=ax, shrink=0.8, label=title)
    return figure


def asymmetry_figure(report: dict) -> Figure:
    panels = [("volume", "Volume (ml)")]
    if report["maps_available"]["t2"]:
        panels.append(("t2", "Water T2 (ms)"))
    if report["maps_available"]["ff"]:
        panels.append(("ff", "Fat fraction (%)"))
    by_value = {row["label_value"]: row for row in report["muscles"]}
    t2_stat = edema_statistic(report["scoring"])
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 2.4 * len(panels)), squeeze=False)
    x = np.arange(len(MUSCLES))
    for ax, (kind, title) in zip(axes[:, 0], panels):
        for offset, side, colour in ((-0.2, "right", "#1f77b4"), (0.2, "left", "#ff7f0e")):
            rows = [by_value[label_value(m.index, side)] for m in MUSCLES]
            if kind == "volume":
                heights = [r["volume_ml"] for r in rows]
            else:
                stat = t2_stat if kind == "t2" else "mean"
                heights = [(r.get(kind) or {}).get(stat) or 0.0 for r in rows]
            ax.bar(x + offset, heights, width=0.4, label=side.capitalize(), color=colour)
        if kind == "t2":
            ax.axhline(report["scoring"]["edema"]["normal_threshold_ms"], color="red", lw=0.8, ls="--",
                       label="edema threshold")
        ax.set_ylabel(title, fontsize=8)
        ax.set_xticks(x, [m.abbreviation for m in MUSCLES], fontsize=8)
        ax.legend(fontsize=7, ncol=3)
    axes[0, 0].set_title("Left / right comparison per muscle", fontsize=10)
    figure.tight_layout()
    return figure


def profile_figure(report: dict) -> Figure | None:
    profiles = report.get("slice_profiles") or {}
    sections = report.get("cross_sections") or {}
    if not profiles and sections.get("slice_index"):  # structural study: areas on the segmentation's grid
        profiles = {"segmentation": {"position_mm": sections["position_mm"],
                                     "muscles": {key: {"area_cm2": areas} for key, areas in sections["muscles"].items()
                                                 if any(areas)}}}
    if not profiles:
        return None
    panels = [("area", next(iter(profiles)), "Cross-sectional area (cm²)")]
    panels += [(kind, kind, MAP_STYLE[kind][0] + ", slice mean") for kind in ("t2", "ff") if kind in profiles]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    colours = {m.key: np.array(m.colour_rgb) / 255.0 for m in MUSCLES}
    for ax, (what, kind, title) in zip(axes[0], panels):
        profile = profiles[kind]
        position = np.asarray(profile["position_mm"], dtype=float)
        for key, series in profile["muscles"].items():
            values = np.array([np.nan if v is None else v for v in series["area_cm2" if what == "area" else "mean"]], float)
            label = LABEL_BY_KEY[key]
            ax.plot(position, values, color=colours[label.muscle.key], lw=1,
                    ls="-" if label.side == "right" else "--",
                    label=label.muscle.abbreviation if label.side == "right" else None)
        ax.set_xlabel("Slice position along the femur (mm)", fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0, 0].legend(fontsize=6, ncol=2, title="solid right, dashed left", title_fontsize=6)
    figure.tight_layout()
    return figure


def longitudinal_figure(report: dict) -> Figure | None:
    change = report.get("longitudinal")
    if not change:
        return None
    rows = [r for r in change["muscles"] if r.get("available")]
    if not rows:
        return None
    panels = [("delta_t2_ms", "ΔT2 (ms)", change["limits"]["delta_t2_ms"]),
              ("delta_ff_points", "ΔFF (points)", change["limits"]["delta_ff_points"]),
              ("delta_volume_percent", "ΔVolume (%)", change["limits"]["delta_volume_percent"])]
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 2.3 * len(panels)), squeeze=False)
    short = [LABEL_BY_KEY[r["key"]].abbreviation for r in rows]
    for ax, (key, title, limit) in zip(axes[:, 0], panels):
        values = [r.get(key) if r.get(key) is not None else 0.0 for r in rows]
        colours = ["#d62728" if abs(v) > limit else "#7f7f7f" for v in values]
        ax.bar(np.arange(len(rows)), values, color=colours)
        for sign in (-1, 1):
            ax.axhline(sign * limit, color="red", lw=0.7, ls="--")
        ax.axhline(0, color="black", lw=0.5)
        ax.set_ylabel(title, fontsize=8)
        ax.set_xticks(np.arange(len(rows)), short, fontsize=6, rotation=90)
    axes[0, 0].set_title("Change since the previous visit (red: beyond the limit)", fontsize=10)
    figure.tight_layout()
    return figure


def make_figures(report: dict, inputs) -> Figures:
    """Every figure of the report; if one fails, those already drawn are closed before the error
    propagates (pyplot would otherwise keep them open for the rest of the session)."""
    figures = Figures()
    try:
        for name, caption, make in (
                ("overlays", "Maps over anatomy at representative slices, with muscle outlines", lambda: overlay_figure(inputs)),
                ("heatmap", "Muscle heatmap: each muscle coloured by its value", lambda: heatmap_figure(report, inputs)),
                ("asymmetry", "Left / right per muscle", lambda: asymmetry_figure(report)),
                ("profiles", "Slice profiles along the thigh", lambda: profile_figure(report)),
                ("longitudinal", "Change since the previous visit", lambda: longitudinal_figure(report))):
            figure = make()
            if figure is not None:
                figures.add(name, caption, figure)
    except BaseException:
        figures.close()
        raise
    return figures
