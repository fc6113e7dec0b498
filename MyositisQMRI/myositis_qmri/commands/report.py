"""`myositis-qmri report --seg SEG [--t2 MAP] [--ff MAP] --out DIR`: per-muscle statistics,
edema and fatty-replacement grades, and the exports (JSON, CSV, HTML, PDF, DICOM SEG/SR/maps).
With neither map, a structural report (volumes, cross-sectional areas, asymmetry; no grades).

Maps and segmentation may sit on different grids: the masks are aligned onto each map by
geometry. Reviewer grades already in DIR/report.json, or given with --review, are kept.
"""
from __future__ import annotations

import argparse

from pathlib import Path

from ..errors import InputError
from ..io.load import load_volume
from ..pipeline import RunOptions, fit_quality_inputs, make_report, study_header
from ..progress import step
from .run import print_problems


def add_arguments(parser) -> None:
    parser.add_argument("--seg", required=True, help="muscle label map (NIfTI/NRRD, right 1-11, left 12-22)")
    parser.add_argument("--t2", help="water T2 map (ms): NIfTI/NRRD file or DICOM series")
    parser.add_argument("--ff", help="fat-fraction map (%%): NIfTI/NRRD file or DICOM series")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--anatomy", help="structural image for the overlays (optional)")
    parser.add_argument("--b1", help="B1 map of the T2 fit (b1.nii.gz, with t2_fit.json beside it): "
                                     "enables the B1 quality check")
    parser.add_argument("--source-dicom", help="DICOM series the segmentation was drawn on: enables SEG/SR export")
    parser.add_argument("--previous", help="report.json of an earlier visit: adds changes per muscle")
    parser.add_argument("--review", "--previous-review", dest="review",
                        help="reviewer grades to keep: an earlier report.json of this study or an overrides JSON "
                             '{"vastus_lateralis_R": {"edema": 2, "fat": 1, "reviewer": "..."}}')
    parser.add_argument("--scoring", help="site scoring TOML overriding the defaults")
    parser.add_argument("--erode", action=argparse.BooleanOptionalAction, default=True,
                        help="erode each mask by 1 voxel in-plane before statistics, against partial volume "
                             "with fat at the borders (default; --no-erode measures whole masks)")
    parser.add_argument("--anonymize", action="store_true", help="also write de-identified copies under DIR/anonymized")
    parser.add_argument("--formats", default="json,csv,html,pdf,dicom",
                        help="comma-separated exports (default: %(default)s)")


def main(args) -> int:
    from ..report.build import ReportInputs
    from ..report.dicom_export import read_source_datasets
    step("report: reading inputs")
    labels = load_volume(args.seg)
    t2 = load_volume(args.t2) if args.t2 else None
    ff = load_volume(args.ff) if args.ff else None
    anatomy = load_volume(args.anatomy) if args.anatomy else None
    source_dicom, study = {}, {}
    if args.source_dicom:
        source = load_volume(args.source_dicom)
        if not source.geometry.same_grid(labels.geometry):
            raise InputError(args.source_dicom, "the segmentation is not on this series' grid; DICOM SEG needs the "
                                                "series the masks were drawn on")
        source_dicom["segmentation"] = read_source_datasets(source)
        anatomy = anatomy or source
        study = study_header(source.metadata.get("source_files"))
    fit = fit_quality_inputs(Path(args.b1).parent, t2) if args.b1 and Path(args.b1).name == "b1.nii.gz" else {}
    if args.b1 and not fit:
        fit = {"b1": load_volume(args.b1)}
    inputs = ReportInputs(labels=labels, t2=t2, ff=ff, anatomy=anatomy, study=study, source_dicom=source_dicom,
                          paths={"segmentation": args.seg, "t2_map": args.t2, "ff_map": args.ff,
                                 "anatomy": args.anatomy}, **fit)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    options = RunOptions(erode=args.erode, scoring=args.scoring, previous=args.previous, review=args.review,
                         anonymize=args.anonymize, formats=formats)
    outputs = make_report(inputs, Path(args.out), options)
    for name, path in outputs.items():
        print(f"{name}: {path}")
    return print_problems("report", outputs.failures, outputs.warnings)
