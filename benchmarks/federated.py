"""Federated learning: (a) time of two sites by two rounds; (b) federated vs each site's own model on real scans.

(a) `timing`: a Flower server and two sites as separate `myositis-qmri federate` processes on
    127.0.0.1, the shipped model, each site one demo phantom exam (16 slices), two rounds of
    --local-steps fine-tuning; prints the wall-clock time against the 10 min target (2 CPU cores).
(b) `oai`: two sites of real OAI thigh T1w scans (../shared/data/oai_thigh_t1, right thigh traced
    by hand in muscle groups), each with its own training and held-out subjects, only subjects
    whose sorted index i has i % 5 != 0 (every 5th is the lead's validation split) and only the
    scans cropped to the right thigh (the whole-field ones have an untraced left thigh).
    `finetune` takes fine labels (11 muscles) and the OAI traces are groups, so each training
    slice's fine target is the start model's most probable muscle *within the traced group* (vasti:
    VL/VI/VM; biceps: long/short head; the other groups are one muscle each; femur -> background).
    Each site's own model fine-tunes ROUNDS x LOCAL_STEPS steps alone; the federated model runs
    ROUNDS rounds of LOCAL_STEPS steps per site with the site code of the Flower client
    (federated.SiteClient.fit) and count-weighted averaging (merge.weighted_average), in one
    process: the comparison is about accuracy, not transport (that is (a) and the tests).
    Scores: group Dice (the model's 11 muscles summed into the 8 traced muscle groups) on each
    site's held-out slices, side by side.
Usage: python benchmarks/federated.py timing|oai [--local-steps N] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OAI = Path(os.environ.get("MYOSITIS_QMRI_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")) \
    / "oai_thigh_t1"
TARGET_S = 600.0
# OAI groups: 1 rectus femoris, 2 vasti, 3 femur, 4 gracilis, 5 sartorius, 6 adductors, 7 biceps femoris,
# 8 semitendinosus, 9 semimembranosus. The model's muscles (labels.py) in each group:
GROUP_MEMBERS = {1: (2,), 2: (3, 4, 5), 4: (7,), 5: (1,), 6: (6,), 7: (8, 11), 8: (9,), 9: (10,)}
GROUP_NAMES = {1: "RF", 2: "vasti", 4: "gracilis", 5: "sartorius", 6: "adductors", 7: "biceps", 8: "ST", 9: "SM"}
FINE_TO_GROUP = {fine: group for group, members in GROUP_MEMBERS.items() for fine in members}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timing(local_steps: int) -> None:
    from myositis_qmri.io import write_volume
    from myositis_qmri.phantom import make_exam
    folder = Path(tempfile.mkdtemp(prefix="federated-bench-"))
    for seed in (31, 32):
        exam = make_exam(seed, "demo")
        write_volume(exam.t1w, folder / f"t1w_{seed}.nii.gz")
        write_volume(exam.muscle_labels, folder / f"labels_{seed}.nii.gz")
    port = free_port()
    env = {**os.environ, "MYOSITIS_QMRI_PROGRESS": "off"}
    core = [sys.executable, "-m", "myositis_qmri", "federate"]
    start = time.perf_counter()
    processes = [subprocess.Popen(core + ["server", "--rounds", "2", "--min-sites", "2", "--address",
                                          f"127.0.0.1:{port}", "--out", str(folder / "merged.safetensors"),
                                          "--local-steps", str(local_steps)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(folder / "server.err", "w"))]
    for seed, name in ((31, "A"), (32, "B")):
        processes.append(subprocess.Popen(core + ["site", "--server", f"127.0.0.1:{port}", "--name", name,
                                                  "--image", str(folder / f"t1w_{seed}.nii.gz"),
                                                  "--labels", str(folder / f"labels_{seed}.nii.gz")], env=env,
                                          stdout=subprocess.DEVNULL, stderr=open(folder / f"site{name}.err", "w")))
    codes = [p.wait() for p in processes]
    seconds = time.perf_counter() - start
    if any(codes):
        sys.exit(f"a process failed ({codes}); logs in {folder}")
    print(f"two sites x two rounds ({local_steps} local steps, shipped model, demo phantom exams, "
          f"{os.cpu_count()} CPUs): {seconds:.0f} s; target {TARGET_S:.0f} s; ratio {seconds / TARGET_S:.2f}")


def oai_subjects() -> list[Path]:
    """Subjects outside the lead's validation split, cropped to the right thigh, with every group traced."""
    import nibabel as nib
    subjects = sorted(p for p in OAI.iterdir() if (p / "labels.nii.gz").is_file())
    chosen = []
    for index, subject in enumerate(subjects):
        if index % 5 == 0:
            continue
        image = nib.load(str(subject / "image.nii.gz"))
        if image.shape[0] * image.header.get_zooms()[0] > 300:        # whole field: left thigh untraced
            continue
        chosen.append(subject)
    return chosen


def group_crops(subject: Path, header: dict):
    """Leg crops of the traced slices and their group targets (femur as background)."""
    from myositis_qmri.io import read_volume
    from myositis_qmri.segmentation.finetune import case_slices
    image, labels = read_volume(subject / "image.nii.gz"), read_volume(subject / "labels.nii.gz")
    labels = labels.with_array(np.where(labels.array == 3, 0, labels.array).astype(np.int16))
    images, targets, _ = case_slices(image, labels, header)
    traced = np.array([t.any() for t in targets])
    return images[traced], targets[traced]


def fine_targets(network, images, group_targets) -> np.ndarray:
    """Fine muscle targets: within each traced group, the start model's most probable member muscle."""
    from myositis_qmri.segmentation.train import predict_slices
    probabilities = predict_slices(network, images)
    fine = np.zeros_like(group_targets)
    for group, members in GROUP_MEMBERS.items():
        inside = group_targets == group
        best = np.asarray(members)[np.argmax(probabilities[:, list(members)], axis=1)][:, None]
        fine[inside] = best[inside]
    return fine


def group_dice(network, images, group_targets) -> dict:
    from myositis_qmri.segmentation.model import dice_per_label
    from myositis_qmri.segmentation.train import predict_slices
    fine = predict_slices(network, images).argmax(1)
    groups = np.vectorize(lambda v: FINE_TO_GROUP.get(int(v), 0))(fine)
    dice = dice_per_label(groups, group_targets[:, 0], GROUP_NAMES)
    return {**{GROUP_NAMES[g]: d for g, d in dice.items()}, "mean": float(np.nanmean(list(dice.values())))}


def oai(local_steps: int, rounds: int = 2, n_train: int = 3, n_test: int = 2) -> None:
    import copy

    from myositis_qmri.commands.finetune import _replay
    from myositis_qmri.segmentation.federated import SiteClient, SiteData
    from myositis_qmri.segmentation.finetune import train_on_slices
    from myositis_qmri.segmentation.merge import network_weights, set_network_weights, weighted_average, model_schema
    from myositis_qmri.segmentation.model import default_model_path, load_model
    import json
    started = time.perf_counter()
    start, header = load_model(default_model_path())
    subjects = oai_subjects()
    per_site = n_train + n_test
    if len(subjects) < 2 * per_site:
        sys.exit(f"only {len(subjects)} usable OAI subjects in {OAI}")
    sites = {}
    for k, name in enumerate("AB"):
        chosen = subjects[k * per_site:(k + 1) * per_site]
        train = [group_crops(s, header) for s in chosen[:n_train]]
        test = [group_crops(s, header) for s in chosen[n_train:]]
        images = np.concatenate([t[0] for t in train])
        groups = np.concatenate([t[1] for t in train])
        sites[name] = {"train_subjects": [s.name for s in chosen[:n_train]],
                       "test_subjects": [s.name for s in chosen[n_train:]],
                       "train": SiteData(images, fine_targets(start, images, groups)),
                       "test": (np.concatenate([t[0] for t in test]), np.concatenate([t[1] for t in test]))}
        print(f"site {name}: train {sites[name]['train_subjects']} ({len(images)} leg slices), "
              f"held out {sites[name]['test_subjects']} ({len(sites[name]['test'][0])} leg slices)", flush=True)
    replay = _replay(None, Path(tempfile.gettempdir()) / "myositis-qmri-federate" / "replay.safetensors", header)
    models = {"start": start}
    for name, site in sites.items():           # each site alone, the same number of steps
        own = copy.deepcopy(start)
        train_on_slices(own, site["train"].images, site["train"].targets, header, rounds * local_steps,
                        np.random.default_rng([7, ord(name)]), replay=replay)
        models[f"own {name}"] = own
    clients = [SiteClient(header, site["train"], name, replay=replay, seed=ord(name)) for name, site in sites.items()]
    weights = network_weights(start)
    for server_round in range(1, rounds + 1):
        config = {"round": server_round, "rounds": rounds, "local_steps": local_steps,
                  "model_header": json.dumps(model_schema(header))}
        answers = [client.fit(weights, config) for client in clients]
        weights = weighted_average([a[0] for a in answers], [a[1] for a in answers])
    federated = copy.deepcopy(start)
    set_network_weights(federated, weights)
    models["federated"] = federated
    print(f"\ngroup Dice on each site's held-out slices ({rounds} rounds x {local_steps} local steps; "
          f"own models {rounds * local_steps} steps):")
    for name, site in sites.items():
        scores = {label: group_dice(model, *site["test"]) for label, model in models.items()}
        print(f"\nsite {name} held-out: " + " ".join(f"{label:>10s}" for label in scores))
        for group in list(GROUP_NAMES.values()) + ["mean"]:
            print(f"  {group:>10s}: " + " ".join(f"{scores[label][group]:10.3f}" for label in scores))
    print(f"\n{time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("timing", "oai"))
    parser.add_argument("--local-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    if args.what == "timing":
        timing(args.local_steps or 30)
    else:
        oai(args.local_steps or 10)


if __name__ == "__main__":
    main()
