"""`myositis-qmri run STUDY --out DIR`: discover, T2 map, FF map, segmentation, report.

Each step prints what it does; missing inputs skip a step with the reason. Intermediate files
stay in DIR (see pipeline.py), so after editing segmentation/muscles.nii.gz, `run --reuse` or
`myositis-qmri report` recomputes only the report. Exit status 4 when the report was written but
some exports (e.g. DICOM SEG) failed; run_summary.json names them with the reason.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import EXIT_SOME_EXPORTS_FAILED
from ..pipeline import RunOptions, run_study
from .t2 import add_t2_fit_arguments


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study folder (DICOM, or NIfTI/NRRD files)")
    parser.add_argument("--out", required=True, help="output folder")
    add_pipeline_options(parser)
    parser.add_argument("--previous", help="report.json of an earlier visit (longitudinal change)")
    parser.add_argument("--review", help="reviewer grades: an earlier report.json or an overrides JSON")
    parser.add_argument("--slice-range", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"),
                        help="segment only slices FIRST..LAST of the segmented series (0-based, inclusive), "
                             "for example to leave out hip or knee slices")


def add_pipeline_options(parser) -> None:
    """Options of `run` that apply to every study alike (`batch` offers them for a cohort)."""
    parser.add_argument("--t2-model", default="epg", choices=("epg", "mono"))
    parser.add_argument("--profile", dest="t2_profile", choices=("2d", "3d"), default=None)
    parser.add_argument("--fat-t2", dest="fat_t2_ms", default="151", help="fat T2 in ms, or 'auto'")
    add_t2_fit_arguments(parser, step="T2 step: ")
    parser.add_argument("--ff-method", default="auto")
    parser.add_argument("--model", dest="seg_model", help="segmentation model file (default: the shipped one)")
    parser.add_argument("--reuse", action="store_true", help="keep outputs already in DIR (e.g. an edited segmentation)")
    parser.add_argument("--erode", action=argparse.BooleanOptionalAction, default=True,
                        help="erode each mask by 1 voxel in-plane before statistics, against partial volume "
                             "with fat at the borders (default; --no-erode measures whole masks)")
    parser.add_argument("--scoring", help="site scoring TOML overriding the defaults")
    parser.add_argument("--anonymize", action="store_true", help="also write de-identified DICOM copies")


def options_from_args(args) -> RunOptions:
    fat_t2 = args.fat_t2_ms if args.fat_t2_ms == "auto" else float(args.fat_t2_ms)
    return RunOptions(t2_model=args.t2_model, t2_profile=args.t2_profile, fat_t2_ms=fat_t2,
                      b1_smoothing_mm=args.b1_smoothing_mm, t2_device=args.t2_device,
                      t2_bias_correction=args.t2_bias_correction, ff_method=args.ff_method,
                      seg_model=args.seg_model, seg_slice_range=getattr(args, "slice_range", None),
                      erode=args.erode, scoring=args.scoring, previous=args.previous,
                      review=args.review, anonymize=args.anonymize, reuse=args.reuse)


def print_problems(command: str, failures, warnings) -> int:
    """Quality warnings and failed exports on stderr; the exit status they call for."""
    # the one-line warning form the Slicer module shows ("myositis-qmri CMD: warning: ...")
    for warning in warnings:
        print(f"myositis-qmri {command}: warning: quality: {warning['message']}", file=sys.stderr)
    for failure in failures:
        print(f"myositis-qmri {command}: warning: export failed: {failure['export']}: {failure['reason']}",
              file=sys.stderr)
    return EXIT_SOME_EXPORTS_FAILED if failures else 0


def main(args) -> int:
    summary = run_study(args.study, args.out, options_from_args(args))
    for name, info in summary["steps"].items():
        print(f"{name:9s} {info['status']:8s} {info['message']}")
    print(f"to recompute only the report: {summary['rerun_report']}")
    if summary.get("report_html"):
        print(summary["report_html"])
    return print_problems("run", summary.get("export_failures", []), summary.get("quality_warnings", []))
