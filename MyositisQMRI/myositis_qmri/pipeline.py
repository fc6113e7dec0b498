"""The whole pipeline on one study: discover -> T2 map -> FF map -> segmentation -> report.

Each step announces itself, writes its results under the output folder with names that say
what they are, and is skipped with a clear message when its inputs are missing (a study
without MESE still gets an FF-only report). With `reuse`, a step whose output already exists
is not recomputed, so a user can edit `segmentation/muscles.nii.gz` and rerun only the report
(or run `myositis-qmri report` on the files directly). Reviewer grades already in the output
folder's report.json are always kept.

Layout of the output folder:
    inventory.json                  the series found and the files left out
    maps/t2/t2w.nii.gz ...          water T2 (ms), ffmese, b1, fit quality; t2_fit.json describes the fit
    maps/ff/ff.nii.gz ...           fat fraction (%), water, fat, ...
    segmentation/muscles.nii.gz     label map on the structural grid (+ .seg.nrrd, labels.json)
    anatomy.nii.gz                  the structural image segmented (overlay background)
    report.json/.csv/.html/.pdf     the report (report_csa.csv: cross-sectional area per muscle and slice);
                                    seg.dcm, report_sr.dcm, dicom/ when the study is DICOM
    run_summary.json                what each step did; "status" complete or partial, the exports that
                                    failed ("export_failures", with the reason) and the quality warnings

A study with neither MESE nor Dixon/GRE nor vendor maps (structural series only) still gets a
report: muscle volumes, cross-sectional areas per slice and left/right asymmetry, no grades.
Each export is written on its own (report.build.write_report): one that fails is named in
run_summary.json while every other output stays written.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import InputError
from .io.atomic import write_text_atomic
from .io.kinds import ImageKind
from .io.nifti import read_volume, write_volume
from .progress import step
from .volume import Volume


@dataclass
class RunOptions:
    """Options of `run` (and of each batch study); a plain dict with these keys works too."""

    t2_model: str = "epg"
    t2_profile: str | None = None
    fat_t2_ms: float | str = 151.0
    b1_smoothing_mm: float | None = None   # in-plane B1 smoothing FWHM before the T2 refit; None: voxel-wise
    t2_device: str = "auto"                # T2 dictionary fit: "auto", "cpu" (numpy) or "cuda" (torch)
    t2_bias_correction: bool = True        # subtract the second-order bias of the water T2 estimate
    ff_method: str = "auto"
    seg_model: str | None = None
    seg_slice_range: tuple[int, int] | None = None   # segment only these slices (0-based, inclusive)
    erode: bool = True   # 1-voxel in-plane erosion before statistics (partial volume with fat)
    scoring: str | None = None
    previous: str | None = None
    review: str | None = None
    anonymize: bool = False
    reuse: bool = False
    formats: tuple = ("json", "csv", "html", "pdf", "dicom")

    def __post_init__(self):
        # checked here, before discovery, so a cohort fails on the command line rather than per study
        from .maps.t2.b1map import checked_b1_smoothing_mm
        self.b1_smoothing_mm = checked_b1_smoothing_mm(self.b1_smoothing_mm)

    @classmethod
    def from_any(cls, options) -> "RunOptions":
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise InputError("options", f"unknown run options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(options))


def study_header(files) -> dict:
    """Patient and study attributes from the first DICOM file of a series (empty for NIfTI)."""
    import pydicom
    for path in list(files or [])[:1]:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - NIfTI inputs have no header to show
            return {}
        return {key: str(ds.get(keyword)) for key, keyword in (
            ("patient_name", "PatientName"), ("patient_id", "PatientID"), ("patient_birth_date", "PatientBirthDate"),
            ("study_date", "StudyDate"), ("study_description", "StudyDescription"),
            ("accession_number", "AccessionNumber"), ("study_uid", "StudyInstanceUID"),
            ("institution", "InstitutionName"), ("manufacturer", "Manufacturer"))
            if ds.get(keyword) not in (None, "")}
    return {}


def _record(summary: dict, name: str, status: str, message: str, **outputs) -> None:
    summary["steps"][name] = {"status": status, "message": message,
                              "outputs": {k: str(v) for k, v in outputs.items()}}
    step(f"{name}: {status} - {message}")


def t2_step(study, out: Path, opts: RunOptions, summary: dict) -> tuple[Volume | None, object]:
    target = out / "maps" / "t2" / "t2w.nii.gz"
    mese = study.mese()
    if opts.reuse and target.exists():
        _record(summary, "t2", "reused", f"existing {target.relative_to(out)}", t2=target)
        return read_volume(target), mese
    if mese is not None:
        from .maps.t2 import fit_water_t2, write_fit_info
        step(f"t2: fitting water T2 ({opts.t2_model}) on '{mese.description}' ({mese.n_echoes} echoes)")
        series = mese.to_echo_series(ImageKind.MAGNITUDE)
        maps = fit_water_t2(series, model=opts.t2_model, profile=opts.t2_profile, fat_t2_ms=opts.fat_t2_ms,
                            b1_smoothing_mm=opts.b1_smoothing_mm, device=opts.t2_device,
                            bias_correction=opts.t2_bias_correction)
        written = maps.write(out / "maps" / "t2")
        written["t2_fit"] = write_fit_info(maps, series, written, out / "maps" / "t2" / "t2_fit.json")
        _record(summary, "t2", "done", f"water T2 from MESE '{mese.description}'", **written)
        return maps.water_t2_ms.with_array(maps.water_t2_ms.array, series_description="water T2 (ms)",
                                           source=mese.description, units="ms"), mese
    scanner = study.vendor_map(ImageKind.T2_MAP)
    if scanner is not None:
        t2 = scanner.to_volume(ImageKind.T2_MAP)
        write_volume(t2, target)
        _record(summary, "t2", "done", f"scanner T2 map '{scanner.description}' (not fat-corrected)", t2=target)
        return t2.with_array(t2.array, units="ms", source=scanner.description), scanner
    _record(summary, "t2", "skipped", "no multi-echo spin-echo series or scanner T2 map in the study: "
                                      "the report will have no edema grades")
    return None, None


def gre_magnitude_phase(study):
    """Magnitude and phase of one multi-echo GRE acquisition: one series holding both, or two
    series (scanners often store them apart) with the same echo times and grid."""
    from .io.kinds import SeriesClass
    gres = study.of_class(SeriesClass.MULTIECHO_GRE)
    for series in gres:
        if {ImageKind.MAGNITUDE, ImageKind.PHASE} <= series.image_kinds:
            return series, series
    for phase in (s for s in gres if ImageKind.PHASE in s.image_kinds):
        for magnitude in (s for s in gres if ImageKind.MAGNITUDE in s.image_kinds):
            if (magnitude.echo_times_ms == phase.echo_times_ms and magnitude.n_slices == phase.n_slices
                    and magnitude.matrix == phase.matrix):
                return magnitude, phase
    return None, None


def ff_step(study, out: Path, opts: RunOptions, summary: dict) -> tuple[Volume | None, object]:
    target = out / "maps" / "ff" / "ff.nii.gz"
    gre = study.multiecho_gre()
    water, fat, ff_series = (study.vendor_map(k) for k in (ImageKind.WATER, ImageKind.FAT, ImageKind.FAT_FRACTION))
    if opts.reuse and target.exists():
        _record(summary, "ff", "reused", f"existing {target.relative_to(out)}", ff=target)
        return read_volume(target), gre or ff_series or water
    magnitude_series, phase_series = gre_magnitude_phase(study)
    if magnitude_series is not None and phase_series is not None:
        inputs, source = dict(magnitude=magnitude_series.to_echo_series(ImageKind.MAGNITUDE),
                              phase=phase_series.to_echo_series(ImageKind.PHASE)), magnitude_series
    elif gre is not None and ImageKind.REAL in gre.image_kinds and ImageKind.IMAGINARY in gre.image_kinds:
        real, imaginary = gre.to_echo_series(ImageKind.REAL), gre.to_echo_series(ImageKind.IMAGINARY)
        inputs, source = dict(complex_series=real.replace(array=real.array + 1j * imaginary.array,
                                                          image_kind="complex")), gre
    elif water is not None and fat is not None:
        inputs, source = dict(water=water.to_volume(ImageKind.WATER), fat=fat.to_volume(ImageKind.FAT)), water
    elif ff_series is not None:
        inputs, source = dict(ff_map=ff_series.to_volume(ImageKind.FAT_FRACTION)), ff_series
    elif gre is not None and ImageKind.MAGNITUDE in gre.image_kinds:
        inputs, source = dict(magnitude=gre.to_echo_series(ImageKind.MAGNITUDE)), gre
    else:
        _record(summary, "ff", "skipped", "no Dixon / multi-echo GRE series or vendor water/fat/FF maps: "
                                          "the report will have no fat grades")
        return None, None
    from .maps.dixon import compute_fat_fraction
    step(f"ff: fat fraction ({opts.ff_method}) from '{source.description}'")
    maps = compute_fat_fraction(method=opts.ff_method, **inputs)
    written = maps.write(out / "maps" / "ff")
    _record(summary, "ff", "done", f"fat fraction from '{source.description}'", **written)
    return maps.ff_percent.with_array(maps.ff_percent.array, series_description="fat fraction (%)",
                                      source=source.description, units="%"), source


def _anatomy_series(study, t2_source, ff_source):
    """The best structural series; else a water or first-echo image, which still shows the muscles."""
    structural = study.best_structural()
    if structural is not None:
        return structural, None
    for series, kind in ((ff_source, ImageKind.MAGNITUDE), (t2_source, ImageKind.MAGNITUDE)):
        if series is not None and kind in series.image_kinds:
            return series, kind
    return None, None


def segment_step(study, out: Path, opts: RunOptions, summary: dict, t2_source, ff_source):
    folder = out / "segmentation"
    target = folder / "muscles.nii.gz"
    series, kind = _anatomy_series(study, t2_source, ff_source)
    anatomy = series.to_volume(kind) if series is not None else None
    if anatomy is not None:
        write_volume(anatomy, out / "anatomy.nii.gz")
    if target.exists() and opts.reuse:
        _record(summary, "segment", "reused", f"existing {target.relative_to(out)} (edited masks are kept)",
                labels=target)
        return read_volume(target), anatomy
    if anatomy is None:
        raise InputError(None, "no structural, water or magnitude series to segment the muscles on")
    from .segmentation.export import write_segmentation
    from .segmentation.infer import segment_muscles
    step(f"segment: thigh muscles on '{series.description}'")
    labels = segment_muscles(anatomy, model_path=opts.seg_model, slice_range=opts.seg_slice_range)
    written = write_segmentation(labels, folder)
    written = written if isinstance(written, dict) else {"labels": target}
    _record(summary, "segment", "done", f"deep-learning segmentation on '{series.description}'", **written)
    return read_volume(target) if target.exists() else labels, anatomy


def prior_reviews(out: Path, review_path: str | None) -> tuple[dict, list[str]]:
    """Reviewer grades to keep: those in the report.json already in `out`, then those of
    `review_path` on top (an earlier report.json of this study, or a reviewer-overrides JSON)."""
    from .report import scoring
    from .report.build import collect_reviews
    from .report.longitudinal import load_report
    notes, prior = [], None
    existing = out / "report.json"
    if existing.exists():
        prior = load_report(existing)
        if scoring.reviews_from_report(prior):
            notes.append(f"reviewer grades kept from the earlier {existing}")
    overrides = None
    if review_path:
        data = _read_json(review_path)
        if isinstance(data, dict) and "schema" in data and "muscles" in data:
            overrides = scoring.reviews_from_report(load_report(review_path))
        else:
            overrides = scoring.reviews_from_overrides(data, review_path)
        notes.append(f"reviewer grades applied from {review_path}")
    return collect_reviews(prior, overrides), notes


def _read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not readable JSON ({exc})") from None


def fit_quality_inputs(t2_folder: Path, t2: Volume | None) -> dict:
    """B1 map and EPG profile of the T2 fit in `t2_folder` (b1.nii.gz, t2_fit.json), for the
    B1 quality check; empty when the T2 map did not come from this software's fit."""
    b1_path, info_path = Path(t2_folder) / "b1.nii.gz", Path(t2_folder) / "t2_fit.json"
    if t2 is None or not b1_path.is_file():
        return {}
    b1 = read_volume(b1_path)
    if not b1.geometry.same_grid(t2.geometry):
        return {}
    try:
        profile = json.loads(info_path.read_text(encoding="utf-8")).get("profile")
    except (OSError, ValueError):
        profile = None
    return {"b1": b1, "t2_profile": profile}


def make_report(inputs, out: Path, opts: RunOptions):
    """Build and write the report for prepared inputs; returns {name: path} with the exports
    that failed (`.failures`) and the quality warnings (`.warnings`), each also printed."""
    from .report.build import build_report, write_report
    from .report.longitudinal import load_report
    from .report.scoring import load_scoring
    config = load_scoring(opts.scoring)
    previous = load_report(opts.previous) if opts.previous else None
    reviews, notes = prior_reviews(out, opts.review)
    report = build_report(inputs, config, erode=opts.erode, previous=previous, reviews=reviews)
    report.setdefault("notes", []).extend(notes)
    outputs = write_report(report, inputs, out, formats=tuple(opts.formats), anonymize=opts.anonymize)
    for note in report.get("notes", []):
        step(f"report: {note}")
    for warning in outputs.warnings:
        step(f"quality warning: {warning['message']}")
    return outputs


def run_study(study_path, out_dir, options=None) -> dict:
    """Run every step on one study folder; returns the run summary (also run_summary.json)."""
    from .io.discover import discover
    from .report.build import ReportInputs
    from .report.dicom_export import read_source_datasets

    opts = RunOptions.from_any(options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"study": str(study_path), "out_dir": str(out), "options": asdict(opts), "steps": {}}
    step(f"discover: reading {study_path}")
    study = discover(study_path)
    study.require_series(study_path)
    inventory = {"series": [s.summary() for s in study.series],
                 "problems": [{"file": str(f), "reason": r} for f, r in study.problems]}
    write_text_atomic(out / "inventory.json", json.dumps(inventory, indent=2, default=str))
    _record(summary, "discover", "done", f"{len(study.series)} series, {len(study.problems)} files left out",
            inventory=out / "inventory.json")

    t2, t2_source = t2_step(study, out, opts, summary)
    ff, ff_source = ff_step(study, out, opts, summary)
    if t2 is None and ff is None:
        step("report: structural study: no T2 or FF maps; volumes and cross-sectional areas, no grades")
    labels, anatomy = segment_step(study, out, opts, summary, t2_source, ff_source)

    source_dicom = {}
    if anatomy is not None and anatomy.metadata.get("source_sop_instance_uids") and \
            anatomy.geometry.same_grid(labels.geometry):
        source_dicom["segmentation"] = read_source_datasets(anatomy)
    header_series = study.best_structural() or t2_source or ff_source
    inputs = ReportInputs(
        labels=labels, t2=t2, ff=ff, anatomy=anatomy, study=study_header(getattr(header_series, "files", None)),
        paths={"segmentation": out / "segmentation" / "muscles.nii.gz",
               "t2_map": out / "maps" / "t2" / "t2w.nii.gz" if t2 is not None else None,
               "ff_map": out / "maps" / "ff" / "ff.nii.gz" if ff is not None else None},
        source_dicom=source_dicom, **fit_quality_inputs(out / "maps" / "t2", t2))
    step("report: writing")
    outputs = make_report(inputs, out, opts)
    _record(summary, "report", "done" if not outputs.failures else "partial",
            "report written" + (f"; {len(outputs.failures)} export(s) failed" if outputs.failures else ""), **outputs)
    summary.update(status="partial" if outputs.failures else "complete", structural_only=inputs.structural_only,
                   export_failures=outputs.failures, quality_warnings=outputs.warnings)
    summary["report_html"] = outputs.get("html")
    summary["report_json"] = outputs.get("json")
    summary["rerun_report"] = (f"myositis-qmri report --seg {inputs.paths['segmentation']}"
                               + (f" --t2 {inputs.paths['t2_map']}" if t2 is not None else "")
                               + (f" --b1 {out / 'maps' / 't2' / 'b1.nii.gz'}" if inputs.b1 is not None else "")
                               + (f" --ff {inputs.paths['ff_map']}" if ff is not None else "")
                               + (f" --anatomy {out / 'anatomy.nii.gz'}" if anatomy is not None else "")
                               + ("" if opts.erode else " --no-erode")
                               + f" --out {out}")
    write_text_atomic(out / "run_summary.json", json.dumps(summary, indent=2, default=str))
    return summary
