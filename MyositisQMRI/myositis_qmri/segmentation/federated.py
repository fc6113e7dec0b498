"""Federated learning across hospitals on Flower: a server that averages, sites that fine-tune.

Each round the server (flwr.server.start_server, gRPC, TLS when given certificates) sends the
current weights and its model schema (header JSON) to every connected site. A site refuses a
model whose schema differs from its own, fine-tunes locally with the same replay guard as
`finetune` (finetune.train_on_slices; group labels such as the OAI tracings through the
marginal loss, as `finetune --label-scheme`), and sends back only the weights, its number of
labelled leg slices and a few numbers (Dice before and after on its own slices, per muscle or
per group as its labels are). The server averages the weights in proportion to those counts
(merge.weighted_average, as the offline `merge-models` does), evaluates each round on its
validation exams when it has them, and writes the best round's model, never one worse than
the start, with the federation recorded in the header. Images and label maps never leave a site.
"""
from __future__ import annotations

import copy
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Flower sends usage telemetry unless told not to; the only traffic here is the federation's.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import flwr  # noqa: E402
from flwr.client import NumPyClient  # noqa: E402
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402

from ..errors import InputError, ModelFileError  # noqa: E402
from ..progress import step  # noqa: E402
from .finetune import case_slices, mean_case_dice, train_on_slices  # noqa: E402
from .labels import GroupScheme  # noqa: E402
from .losses import group_matrix  # noqa: E402
from .merge import (merged_header, model_schema, network_weights, schema_differences,  # noqa: E402
                    set_network_weights, weighted_average)
from .model import build_network, load_model, model_identity, read_model_bytes, save_model  # noqa: E402

ENGINE = "flwr"
# What a site may send besides weights and num_examples: its pseudonym and these numbers.
SITE_METRICS = ("labelled_slices", "steps", "dice_before", "dice_after")


@dataclass
class SiteData:
    """A site's corrected exams as normalised leg crops with their labels (labelled slices only).

    `scheme`: the labels trace muscle groups (labels.GROUP_SCHEMES); None: the project's muscles.
    """

    images: np.ndarray
    targets: np.ndarray
    sources: list = field(default_factory=list)
    scheme: GroupScheme | None = None

    @property
    def count(self) -> int:
        return int(len(self.images))

    @property
    def matrix(self) -> np.ndarray:
        """Sums the model's muscles into the labels' values, for the loss and the Dice (losses.py)."""
        return group_matrix(self.scheme)


def labelled_slices(pairs, header: dict, scheme: GroupScheme | None = None) -> SiteData:
    """Leg crops of every labelled slice of (image Volume, labels Volume) pairs, on the model's grid.

    Labels hold the project's values (scheme None) or a group scheme's; any other value is refused.
    """
    images, targets, sources = [], [], []
    for image, labels in pairs:
        crops, crop_targets, _ = case_slices(image, labels, header, scheme)
        labelled = np.array([(t > 0).any() for t in crop_targets])
        if not labelled.any():
            raise InputError(labels.source_name("labels"), "no muscle voxels in this label map")
        images.append(crops[labelled])
        targets.append(crop_targets[labelled])
        sources.append(image.source_name("(in memory)"))
    return SiteData(np.concatenate(images), np.concatenate(targets), sources, scheme)


def check_server_schema(own_header: dict, config: dict) -> None:
    """Refuse a server model whose schema differs from the site's own model (named difference)."""
    try:
        server_schema = json.loads(str(config["model_header"]))
    except (KeyError, ValueError):
        raise ModelFileError("server", "the round configuration carries no model header") from None
    differences = schema_differences(model_schema(own_header), server_schema)
    if differences:
        raise ModelFileError("server", "its model does not match this site's model schema ("
                             + "; ".join(d.replace(" here,", " at this site,").replace(" there", " on the server")
                                         for d in differences) + ")")


class SiteClient(NumPyClient):
    """A hospital: fine-tunes the received weights on its own corrected exams each round."""

    def __init__(self, header: dict, data: SiteData, name: str, replay=None, negatives=(),
                 learning_rate: float = 2e-4, batch_size: int = 8, seed: int = 0):
        self.header = header
        self.data = data
        self.name = name
        self.replay = replay
        self.negatives = negatives
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.seed = seed
        self.network = build_network(header["architecture"])
        self.rounds_done = 0

    def get_parameters(self, config):
        return network_weights(self.network)

    def fit(self, parameters, config):
        """One local round: check the schema, load the weights, fine-tune, send weights and counts."""
        check_server_schema(self.header, config)
        set_network_weights(self.network, parameters)
        server_round, rounds = int(config.get("round", 0)), int(config.get("rounds", 0))
        steps = int(config.get("local_steps", 30))
        before = mean_case_dice(self.network, self.data.images, self.data.targets, self.data.matrix)
        step(f"round {server_round}/{rounds}: fine-tuning on {self.data.count} labelled leg slices "
             f"({steps} steps)")
        train_on_slices(self.network, self.data.images, self.data.targets, self.header, steps,
                        np.random.default_rng([self.seed, server_round]), learning_rate=self.learning_rate,
                        batch_size=self.batch_size, replay=self.replay, negatives=self.negatives,
                        desc=f"round {server_round}/{rounds}: fine-tuning", matrix=self.data.matrix)
        after = mean_case_dice(self.network, self.data.images, self.data.targets, self.data.matrix)
        step(f"round {server_round}/{rounds}: Dice on this site's slices {before:.3f} -> {after:.3f}; "
             "sending the weights")
        self.rounds_done += 1
        metrics = {"site": self.name, "labelled_slices": self.data.count, "steps": steps,
                   "dice_before": round(float(before), 4), "dice_after": round(float(after), 4)}
        return network_weights(self.network), self.data.count, metrics

    def evaluate(self, parameters, config):
        """The server evaluates on its own validation exams; a site reports nothing."""
        return 0.0, 0, {}


def run_site(server: str, header: dict, data: SiteData, name: str, root_certificate: Path | None = None,
             replay=None, negatives=(), max_wait_s: float | None = 600.0, seed: int = 0) -> int:
    """Connect to a federation server and take part until it ends; returns the rounds done.

    A server that is not listening yet is tried again every 2 s for max_wait_s (sites are
    often started before the server).
    """
    import time

    import grpc
    from flwr.client import start_client
    client = SiteClient(header, data, name, replay=replay, negatives=negatives, seed=seed)
    step(f"site {name!r}: {data.count} labelled leg slices; connecting to {server}"
         + (" (TLS)" if root_certificate else " (no TLS)"))
    certificate = Path(root_certificate).read_bytes() if root_certificate else None
    deadline = time.monotonic() + (max_wait_s if max_wait_s is not None else float("inf"))
    while True:
        try:
            start_client(server_address=server, client=client.to_client(), root_certificates=certificate,
                         max_wait_time=max_wait_s)
            return client.rounds_done
        except grpc.RpcError as exc:
            unavailable = getattr(exc, "code", lambda: None)() == grpc.StatusCode.UNAVAILABLE
            if not unavailable or client.rounds_done or time.monotonic() > deadline:
                detail = exc.details() if hasattr(exc, "details") else str(exc)
                what = (f"lost the federation server after {client.rounds_done} rounds" if client.rounds_done
                        else "cannot reach the federation server")
                raise InputError(server, f"{what} ({detail})") from None
            time.sleep(2.0)


class FederatedAveraging(FedAvg):
    """FedAvg weighted by each site's labelled slices, with a round log and best-round keeping.

    Each round's configuration carries the model schema (so that sites can refuse a model that
    is not theirs) and the number of local steps. With validation data every round's model is
    scored; the best one, the start included (round 0), is kept.
    """

    def __init__(self, start_header: dict, start_weights, min_sites: int, rounds: int, local_steps: int,
                 validation: SiteData | None = None):
        super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=min_sites,
                         min_evaluate_clients=min_sites, min_available_clients=min_sites, accept_failures=True,
                         initial_parameters=ndarrays_to_parameters(start_weights))
        self.start_header = start_header
        self.rounds = rounds
        self.local_steps = local_steps
        self.validation = validation
        self.network = build_network(start_header["architecture"])
        self.round_log: list[dict] = []
        self.best = {"round": 0, "dice": None, "weights": [w.copy() for w in start_weights]}
        self.latest = {"round": 0, "weights": self.best["weights"]}
        self.start_dice = None
        self._lock = threading.Lock()

    def configure_fit(self, server_round, parameters, client_manager):
        config = {"round": server_round, "rounds": self.rounds, "local_steps": self.local_steps,
                  "model_header": json.dumps(model_schema(self.start_header))}
        instructions = super().configure_fit(server_round, parameters, client_manager)
        for _, fit_ins in instructions:
            fit_ins.config = dict(config)
        step(f"round {server_round}/{self.rounds}: sent the model to {len(instructions)} sites")
        return instructions

    def aggregate_fit(self, server_round, results, failures):
        entry = {"round": server_round, "sites": [], "failures": len(failures)}
        self.round_log.append(entry)
        for _, fit_res in results:
            metrics = fit_res.metrics or {}
            entry["sites"].append({"site": str(metrics.get("site", "unnamed")), "examples": int(fit_res.num_examples),
                                   **{k: metrics[k] for k in ("dice_before", "dice_after") if k in metrics}})
        step(f"round {server_round}/{self.rounds}: {len(results)} sites answered, {len(failures)} failed")
        usable = [r for _, r in results if r.num_examples > 0]
        if not usable:
            return None, {}
        merged = weighted_average([parameters_to_ndarrays(r.parameters) for r in usable],
                                  [r.num_examples for r in usable])
        entry["examples"] = int(sum(r.num_examples for r in usable))
        return ndarrays_to_parameters(merged), {"examples": entry["examples"]}

    def evaluate(self, server_round, parameters):
        """Score the round's model on the validation exams and keep the best (and the latest)."""
        weights = parameters_to_ndarrays(parameters)
        with self._lock:
            self.latest = {"round": server_round, "weights": weights}
            if self.validation is None:
                return None
            set_network_weights(self.network, weights)
            dice = mean_case_dice(self.network, self.validation.images, self.validation.targets)
            if server_round == 0:
                self.best["dice"] = self.start_dice = dice
            else:
                self.round_log[-1]["validation_dice"] = round(float(dice), 4)
                if dice > self.best["dice"]:
                    self.best = {"round": server_round, "dice": dice, "weights": weights}
            step(f"round {server_round}: validation Dice {dice:.4f} (best: round {self.best['round']})")
            return 1.0 - float(dice), {"dice": float(dice)}


@dataclass
class ServerSettings:
    address: str
    rounds: int
    min_sites: int
    local_steps: int = 30
    round_timeout_s: float | None = 3600.0
    certificates: tuple | None = None          # (CA, server certificate, server key) paths


def run_server(settings: ServerSettings, out: str | Path, model_path: str | Path | None = None,
               validation: SiteData | None = None, validation_names=()) -> dict:
    """Run R rounds on Flower and write the merged model (the best round's, with validation data)."""
    from flwr.server import ServerConfig, start_server
    from .model import default_model_path
    source = Path(model_path) if model_path is not None else default_model_path()
    out = Path(out)
    if out.resolve() == source.resolve() or out.resolve() == default_model_path().resolve():
        raise InputError(out, "the merged model must be a new file; it never overwrites the start or shipped model")
    content = read_model_bytes(source)
    network, header = load_model(source, file_bytes=content)
    strategy = FederatedAveraging(header, network_weights(network), settings.min_sites, settings.rounds,
                                  settings.local_steps, validation)
    certificates = tuple(Path(p).read_bytes() for p in settings.certificates) if settings.certificates else None
    step(f"federation server on {settings.address}: {settings.rounds} rounds, at least {settings.min_sites} sites"
         + (" (TLS)" if certificates else " (no TLS)"))
    start_server(server_address=settings.address, strategy=strategy, certificates=certificates,
                 config=ServerConfig(num_rounds=settings.rounds, round_timeout=settings.round_timeout_s))
    chosen = strategy.best if validation is not None else strategy.latest
    federation = {
        "engine": ENGINE, "engine_version": flwr.__version__, "rounds": settings.rounds,
        "rounds_completed": len(strategy.round_log), "min_sites": settings.min_sites,
        "local_steps": settings.local_steps, "tls": certificates is not None,
        "start_model": model_identity(source, content), "round_log": copy.deepcopy(strategy.round_log),
        "chosen_round": chosen["round"],
        "validation": None if validation is None else {
            "images": list(validation_names), "labelled_leg_slices": validation.count,
            "start_dice": round(float(strategy.start_dice), 4),
            "per_round_dice": {str(e["round"]): e.get("validation_dice") for e in strategy.round_log},
            "chosen_dice": round(float(chosen["dice"]), 4)},
    }
    if validation is not None and chosen["round"] == 0:
        federation["note"] = ("no federated round beat the start model on the validation exams: "
                              "these are the start model's weights")
    merged = merged_header(header, federation, "myositis-qmri federate server")
    set_network_weights(network, chosen["weights"])
    save_model(network, merged, out)
    return {"model": str(out), "model_version": merged["model_version"], "chosen_round": chosen["round"],
            "round_log": strategy.round_log, "validation": federation["validation"]}

