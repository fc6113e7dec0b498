"""`myositis-qmri merge-models`: federated averaging offline, for sites that cannot connect."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError


def add_arguments(parser) -> None:
    parser.add_argument("models", nargs="+", type=Path, help="model files to average (same schema)")
    parser.add_argument("--out", required=True, type=Path, help="merged model (.safetensors)")
    parser.add_argument("--weights", default=None, metavar="N,N,...",
                        help="one weight per model, e.g. each site's number of labelled slices (default: equal)")


def main(args) -> int:
    from ..segmentation.merge import merge_models, parse_merge_weights
    if not str(args.out).endswith(".safetensors"):
        raise InputError(args.out, "model files must end in .safetensors")
    result = merge_models(args.models, args.out, parse_merge_weights(args.weights, len(args.models)))
    print(json.dumps(result, indent=1))
    return 0
