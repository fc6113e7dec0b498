"""`myositis-qmri batch STUDIES... --out DIR`: the whole pipeline on a cohort, in parallel.

Without --scheduler a local Dask cluster is started (one thread per worker process); with it
the studies go to an existing dask.distributed cluster. Exit status 0 when every study
completed, 1 when some failed (each failure is in manifest.json), 4 when none failed but some
finished with failed exports ("partial" in manifest.json), 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from ..errors import EXIT_SOME_EXPORTS_FAILED, InputError
from .run import add_pipeline_options


def add_arguments(parser) -> None:
    parser.add_argument("studies", nargs="+", metavar="STUDY", help="DICOM study folders (one per exam)")
    parser.add_argument("--out", required=True, help="cohort output folder (one sub-folder per study)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="local worker processes (default: min(2, CPU count)); ignored with --scheduler")
    parser.add_argument("--json", action="store_true", help="print the cohort summary as JSON")
    # the `run` options that make sense for a whole cohort (not --previous/--review, which are per study)
    add_pipeline_options(parser)


def run_options(args) -> dict:
    """The per-study `run` options, as the plain dict each worker receives."""
    from .run import options_from_args
    return asdict(options_from_args(argparse.Namespace(**vars(args), previous=None, review=None)))


def main(args) -> int:
    from ..batch import run_cohort

    if args.workers is not None and args.workers < 1:
        raise InputError("--workers", "must be at least 1")
    try:
        options = run_options(args)
    except ValueError:
        raise InputError("--fat-t2", f"expected a number of ms or 'auto', got {args.fat_t2_ms!r}") from None
    result = run_cohort(args.studies, args.out, options, scheduler=args.scheduler, n_workers=args.workers)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['complete']}/{summary['studies']} studies complete "
              f"({summary['reused']} already done), "
              + (f"{summary['partial']} partly done (some exports failed), " if summary["partial"] else "")
              + f"{summary['failed']} failed; manifest: {summary['manifest']}")
    for record in result.partial:
        print(f"partly done: {record['study']}: exports failed: {record['error']}", file=sys.stderr)
    for record in result.failed:
        print(f"failed: {record['study']}: {record['error']}", file=sys.stderr)
    return 1 if result.failed else EXIT_SOME_EXPORTS_FAILED if result.partial else 0
