"""The `myositis-qmri` command: one subcommand per pipeline stage.

Each subcommand lives in `commands/<name>.py` with `add_arguments(parser)` and
`main(args) -> int`; they are imported only when used, so `inspect` never loads torch.
Input errors print one line naming the file and the reason, and exit with status 2; an
internal error exits with 3; `run` and `report` exit with 4 when they finished but some
exports failed (errors.EXIT_SOME_EXPORTS_FAILED).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from pathlib import Path

from . import __version__
from .errors import InputError

SUBCOMMANDS = {
    "inspect": "list the image series found in a DICOM folder or image files",
    "t2": "water T2 (EPG, water/fat, B1) or mono-exponential T2 from multi-echo spin echo",
    "ff": "fat-fraction maps from vendor maps, water/fat images, Dixon or multi-echo GRE",
    "segment": "deep-learning segmentation of the thigh muscles, left and right",
    "train": "train a segmentation model from label maps by domain-randomised synthesis",
    "finetune": "fine-tune a segmentation model on corrected masks (incremental learning)",
    "report": "per-muscle statistics, edema and fatty-replacement grades, exports",
    "run": "the whole pipeline on a DICOM study folder",
    "demo": "synthesise a bilateral thigh exam and run the pipeline on it",
    "batch": "run the pipeline on many studies (local or Dask cluster)",
    "federate": "federated learning across hospitals (Flower): `federate server` or `federate site`",
    "merge-models": "average model files offline (federated averaging for sites that cannot connect)",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="myositis-qmri", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            _command_module(name).add_arguments(command_parser)
    return parser


def _command_module(name: str):
    return importlib.import_module(f".commands.{name.replace('-', '_')}", __package__)


def _warning_formatter(command: str):
    """Our own warnings as one line ("myositis-qmri segment: warning: ..."), others as Python prints them."""
    package = str(Path(__file__).resolve().parent)
    default = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        if str(Path(filename).resolve()).startswith(package):
            return f"myositis-qmri {command}: warning: {message}\n"
        return default(message, category, filename, lineno, line)
    return formatwarning


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = build_parser(only=chosen)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    python_format, warnings.formatwarning = warnings.formatwarning, _warning_formatter(args.command)
    try:
        return int(_command_module(args.command).main(args) or 0)
    except InputError as exc:
        if args.debug:
            raise
        print(f"myositis-qmri {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"myositis-qmri {args.command}: cancelled", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure still gets one readable line
        if args.debug or os.environ.get("MYOSITIS_QMRI_DEBUG"):
            raise
        print(f"myositis-qmri {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 3
    finally:
        warnings.formatwarning = python_format


if __name__ == "__main__":
    sys.exit(main())
