"""`myositis-qmri federate server|site`: federated learning across hospitals (Flower).

The server averages the sites' fine-tuned weights each round and writes the merged model;
a site fine-tunes on its own corrected exams and sends back weights and counts only.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..errors import InputError
from .finetune import add_label_scheme_argument, label_scheme


def add_arguments(parser) -> None:
    roles = parser.add_subparsers(dest="role", metavar="server|site", required=True)
    server = roles.add_parser("server", help="run the federation: average the sites' weights each round")
    server.add_argument("--rounds", type=int, required=True, help="number of federated rounds")
    server.add_argument("--min-sites", type=int, required=True, help="sites needed before a round starts")
    server.add_argument("--address", required=True, metavar="HOST:PORT", help="address to listen on")
    server.add_argument("--out", required=True, type=Path, help="merged model (.safetensors)")
    server.add_argument("--model", type=Path, default=None, help="start model (default: the shipped model)")
    server.add_argument("--validation", action="append", default=[], metavar="IMAGE:LABELS",
                        help="validation exam (repeatable): every round is scored on it and the best "
                             "round's model is written, never one worse than the start")
    server.add_argument("--local-steps", type=int, default=30, help="fine-tuning steps per site and round")
    server.add_argument("--round-timeout", type=float, default=3600.0, metavar="SECONDS",
                        help="a site that has not answered by then is left out of the round")
    server.add_argument("--certificates", nargs=3, type=Path, default=None, metavar=("CA", "CERT", "KEY"),
                        help="TLS: CA certificate, server certificate and server private key (PEM)")
    site = roles.add_parser("site", help="take part in a federation with this hospital's corrected exams")
    site.add_argument("--server", required=True, metavar="HOST:PORT", help="the federation server")
    site.add_argument("--image", action="append", required=True, type=Path,
                      help="structural image the masks were corrected on (repeatable, paired with --labels)")
    site.add_argument("--labels", action="append", required=True, type=Path,
                      help="corrected label map (values per labels.json), one per --image")
    add_label_scheme_argument(site)
    site.add_argument("--name", default="site", help="this site's pseudonym in the merged model's header")
    site.add_argument("--model", type=Path, default=None,
                      help="this site's model, whose schema the server's must match (default: the shipped model)")
    site.add_argument("--root-certificate", type=Path, default=None, metavar="CA",
                      help="TLS: the CA certificate that signed the server's certificate (PEM)")
    site.add_argument("--label-maps", type=Path, default=None,
                      help="label maps to replay against forgetting (default: shared data, else the phantom)")
    site.add_argument("--calf-rois", type=Path, default=None, metavar="DIR",
                      help="calf outlines replayed as negative anatomy, as for finetune")
    site.add_argument("--negative-image", action="append", default=[], metavar="PATH[:FIRST-LAST]",
                      help="real slices without thigh muscle replayed as negative anatomy (repeatable)")
    site.add_argument("--max-wait", type=float, default=600.0, metavar="SECONDS",
                      help="give up when the server cannot be reached for this long")


def _federated():
    try:
        from ..segmentation import federated
    except ImportError as exc:
        raise InputError(None, f"federated learning needs Flower ({exc}); install it with "
                               "pip install 'myositis-qmri[federate]'") from None
    return federated


def parse_exam_pair(spec: str) -> tuple[Path, Path]:
    """IMAGE:LABELS, split at the colon where both sides are existing files (paths may hold colons)."""
    parts = spec.split(":")
    for cut in range(1, len(parts)):
        image, labels = Path(":".join(parts[:cut])), Path(":".join(parts[cut:]))
        if image.exists() and labels.exists():
            return image, labels
    raise InputError(spec, "expected IMAGE:LABELS, two existing files")


def _exams(pairs, header: dict, scheme=None):
    from ..io import read_volume
    from ..io.load import load_volume
    federated = _federated()
    return federated.labelled_slices([(load_volume(image), read_volume(labels)) for image, labels in pairs], header,
                                     scheme)


def _check_files(*paths) -> None:
    for path in paths:
        if path is not None and not Path(path).is_file():
            raise InputError(path, "file not found")


def run_server(args) -> int:
    from ..segmentation.model import default_model_path, read_header
    federated = _federated()
    if not str(args.out).endswith(".safetensors"):
        raise InputError(args.out, "model files must end in .safetensors")
    if args.rounds < 1 or args.min_sites < 1 or args.local_steps < 1:
        raise InputError("--rounds/--min-sites/--local-steps", "must be at least 1")
    _check_files(*(args.certificates or ()))
    pairs = [parse_exam_pair(spec) for spec in args.validation]
    header = read_header(args.model or default_model_path())
    validation = _exams(pairs, header) if pairs else None
    settings = federated.ServerSettings(args.address, args.rounds, args.min_sites, args.local_steps,
                                        args.round_timeout, tuple(args.certificates) if args.certificates else None)
    result = federated.run_server(settings, args.out, args.model, validation, [image.name for image, _ in pairs])
    print(json.dumps(result, indent=1))
    return 0


def run_site(args) -> int:
    from ..segmentation.model import default_model_path, read_header
    from .finetune import _negatives, _replay
    federated = _federated()
    if len(args.image) != len(args.labels):
        raise InputError("--image/--labels", f"{len(args.image)} images but {len(args.labels)} label maps")
    _check_files(args.root_certificate, *args.image, *args.labels)
    header = read_header(args.model or default_model_path())
    data = _exams(list(zip(args.image, args.labels)), header, label_scheme(args))
    cache = Path(tempfile.gettempdir()) / "myositis-qmri-federate" / "replay.safetensors"
    replay = _replay(args.label_maps, cache, header)
    negatives = _negatives(args.calf_rois, header, args.negative_image)
    rounds = federated.run_site(args.server, header, data, args.name, args.root_certificate, replay=replay,
                                negatives=negatives, max_wait_s=args.max_wait)
    print(json.dumps({"site": args.name, "rounds": rounds, "labelled_leg_slices": data.count}))
    return 0


def main(args) -> int:
    return run_server(args) if args.role == "server" else run_site(args)
