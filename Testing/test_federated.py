"""Federated learning on Flower over loopback: a server and sites as separate processes.

A tiny network built from the project's model code (3 mm grid, 64 px crops) keeps the rounds
short on 2 CPU cores; the phantom's small exams are the sites' corrected exams.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("flwr")

from myositis_qmri.errors import ModelFileError  # noqa: E402
from myositis_qmri.io import read_volume, write_volume  # noqa: E402
from myositis_qmri.segmentation.labels import LEFT_OFFSET  # noqa: E402
from myositis_qmri.segmentation.merge import merge_models, network_weights  # noqa: E402
from myositis_qmri.segmentation.model import base_header, build_network, load_model, read_header, save_model  # noqa: E402

SITE_SEEDS = (21, 22, 24)
VALIDATION_SEED = 23
TIMEOUT_S = 400


def tiny_model(path, spacing_mm=3.0, channels=(8, 16, 32), seed=0):
    import torch
    header = base_header(spacing_mm, 64)
    header["architecture"].update(channels=list(channels), strides=[2] * (len(channels) - 1), num_res_units=1)
    torch.manual_seed(seed)
    return save_model(build_network(header["architecture"]), header, path)


@pytest.fixture(scope="module")
def federation_files(tmp_path_factory):
    """A tiny start model, small phantom exams (image + labels) and side-less replay label maps."""
    from myositis_qmri.phantom import make_exam
    folder = tmp_path_factory.mktemp("federation")
    tiny_model(folder / "start.safetensors")
    (folder / "replay").mkdir()
    for seed in SITE_SEEDS + (VALIDATION_SEED,):
        exam = make_exam(seed, "small")
        write_volume(exam.t1w, folder / f"t1w_{seed}.nii.gz")
        write_volume(exam.muscle_labels, folder / f"labels_{seed}.nii.gz")
        if seed in SITE_SEEDS[:2]:
            labels = exam.muscle_labels.array
            sideless = np.where(labels > LEFT_OFFSET, labels - LEFT_OFFSET, labels).astype(np.int16)
            write_volume(exam.muscle_labels.with_array(sideless), folder / "replay" / f"map_{seed}.nii.gz")
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def core(log, *args) -> subprocess.Popen:
    """The command line in its own process, stdout and stderr to log.out / log.err (no pipe to fill)."""
    env = {**os.environ, "MYOSITIS_QMRI_PROGRESS": "lines", "PYTHONUNBUFFERED": "1"}
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "myositis_qmri", *map(str, args)], stdout=out,
                                   stderr=err, text=True, env=env)
    process.log = log
    return process


def site(files, port, seed, name, *extra):
    return core(files.parent / f"{port}-site-{name}", "federate", "site", "--server", f"127.0.0.1:{port}", "--image", files / f"t1w_{seed}.nii.gz",
                "--labels", files / f"labels_{seed}.nii.gz", "--name", name, "--model", files / "start.safetensors",
                "--label-maps", files / "replay", "--max-wait", 120, *extra)


def finish(process, what):
    process.wait(timeout=TIMEOUT_S)
    with open(f"{process.log}.out") as out, open(f"{process.log}.err") as err:
        out, err = out.read(), err.read()
    assert process.returncode == 0, f"{what} failed ({process.returncode}):\n{err[-3000:]}"
    return out, err


def exam_dice(model_path, files, seed):
    from myositis_qmri.segmentation.federated import labelled_slices
    from myositis_qmri.segmentation.finetune import mean_case_dice
    network, header = load_model(model_path)
    data = labelled_slices([(read_volume(files / f"t1w_{seed}.nii.gz"),
                             read_volume(files / f"labels_{seed}.nii.gz"))], header)
    return mean_case_dice(network, data.images, data.targets)


def write_certificates(folder):
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost that it signed (PEM)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, public_key, signing_key, ca, names=()):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test federation CA")])
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    server = certificate(server_name, ca_name, server_key.public_key(), ca_key, False,
                         [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    paths = [folder / "ca.pem", folder / "server.pem", folder / "server.key"]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


@pytest.mark.slow
def test_federation_of_two_sites_over_tls(federation_files, tmp_path):
    files = federation_files
    ca, certificate, key = write_certificates(tmp_path)
    port, merged = free_port(), tmp_path / "merged.safetensors"
    server = core(tmp_path / "server", "federate", "server", "--rounds", 2, "--min-sites", 2,
                  "--address", f"127.0.0.1:{port}", "--out", merged, "--model", files / "start.safetensors",
                  "--local-steps", 8,
                  "--validation", f"{files / f't1w_{VALIDATION_SEED}.nii.gz'}:{files / f'labels_{VALIDATION_SEED}.nii.gz'}",
                  "--certificates", ca, certificate, key)
    sites = [site(files, port, seed, name, "--root-certificate", ca) for seed, name in zip(SITE_SEEDS, "AB")]
    for process, name in zip(sites, "AB"):
        out, _ = finish(process, f"site {name}")
        assert json.loads(out.strip().splitlines()[-1])["rounds"] == 2
    finish(server, "server")

    network, header = load_model(merged)        # an ordinary model file
    federation = header["provenance"]["federation"]
    assert federation["engine"] == "flwr" and federation["engine_version"]
    assert federation["tls"] is True and federation["rounds"] == 2
    assert federation["start_model"]["sha256"] == hashlib.sha256((files / "start.safetensors").read_bytes()).hexdigest()
    assert [entry["round"] for entry in federation["round_log"]] == [1, 2]
    for entry in federation["round_log"]:
        assert sorted(s["site"] for s in entry["sites"]) == ["A", "B"]
        assert all(s["examples"] == 12 for s in entry["sites"]) and entry["failures"] == 0     # 6 slices x 2 legs
        assert isinstance(entry["validation_dice"], float)
    validation = federation["validation"]
    start_dice = exam_dice(files / "start.safetensors", files, VALIDATION_SEED)
    merged_dice = exam_dice(merged, files, VALIDATION_SEED)
    assert validation["start_dice"] == pytest.approx(start_dice, abs=1e-4)
    assert validation["chosen_dice"] == pytest.approx(merged_dice, abs=1e-4)
    assert merged_dice >= start_dice        # never worse than the start on the third exam
    assert header["model_version"] == read_header(files / "start.safetensors")["model_version"] + 1


@pytest.mark.slow
def test_a_site_that_drops_out_mid_round_does_not_stop_the_others(federation_files, tmp_path):
    files = federation_files
    port, merged = free_port(), tmp_path / "merged.safetensors"
    server = core(tmp_path / "server", "federate", "server", "--rounds", 2, "--min-sites", 2,
                  "--address", f"127.0.0.1:{port}", "--out", merged, "--model", files / "start.safetensors",
                  "--local-steps", 10)
    first = site(files, port, SITE_SEEDS[0], "A")
    victim = site(files, port, SITE_SEEDS[2], "C")
    deadline = time.monotonic() + TIMEOUT_S
    seen = ""
    with open(f"{victim.log}.err") as log:
        while "round 1/2: fine-tuning on" not in seen:     # it has the model and is training: kill it
            seen += log.read()
            assert victim.poll() is None and time.monotonic() < deadline, "the third site never started round 1"
            time.sleep(0.05)
    victim.kill()
    victim.wait(timeout=30)
    second = site(files, port, SITE_SEEDS[1], "B")        # joins for round 2
    finish(first, "site A")
    finish(second, "site B")
    finish(server, "server")
    round_log = read_header(merged)["provenance"]["federation"]["round_log"]
    assert [s["site"] for s in round_log[0]["sites"]] == ["A"] and round_log[0]["failures"] == 1
    assert sorted(s["site"] for s in round_log[1]["sites"]) == ["A", "B"] and round_log[1]["failures"] == 0
    assert read_header(merged)["provenance"]["federation"]["chosen_round"] == 2     # no validation: the last


def test_what_a_site_sends_is_weights_counts_and_numbers(federation_files):
    from myositis_qmri.segmentation.federated import SITE_METRICS, SiteClient, labelled_slices
    from myositis_qmri.segmentation.merge import model_schema
    files = federation_files
    network, header = load_model(files / "start.safetensors")
    data = labelled_slices([(read_volume(files / "t1w_21.nii.gz"), read_volume(files / "labels_21.nii.gz"))], header)
    client = SiteClient(header, data, "A")
    config = {"round": 1, "rounds": 1, "local_steps": 2, "model_header": json.dumps(model_schema(header))}
    sent = client.fit(network_weights(network), config)
    assert len(sent) == 3
    weights, count, metrics = sent
    expected = network.state_dict()
    assert [w.shape for w in weights] == [tuple(v.shape) for v in expected.values()]
    assert all(isinstance(w, np.ndarray) and w.dtype == np.float32 for w in weights)
    assert count == data.count == 12
    assert set(metrics) == {"site", *SITE_METRICS} and metrics["site"] == "A"
    assert all(isinstance(metrics[k], (int, float)) for k in SITE_METRICS)
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(weights, expected.values()))     # it trained


def test_a_site_learns_from_group_labels_through_the_group_matrix(federation_files):
    """OAI-like group tracings (right leg, 1 rectus femoris, 2 vasti, ...): the local round learns
    through the marginal loss and the Dice the site reports is the group Dice."""
    from test_segmentation_real import _as_oai_groups
    from myositis_qmri.segmentation.federated import SiteClient, labelled_slices
    from myositis_qmri.segmentation.finetune import mean_case_dice, train_on_slices
    from myositis_qmri.segmentation.labels import OAI_GROUPS
    from myositis_qmri.segmentation.losses import group_matrix
    from myositis_qmri.segmentation.merge import model_schema, set_network_weights
    from myositis_qmri.segmentation.real import IGNORE
    files = federation_files
    network, header = load_model(files / "start.safetensors")
    start = network_weights(network)
    groups = _as_oai_groups(read_volume(files / "labels_21.nii.gz"))
    data = labelled_slices([(read_volume(files / "t1w_21.nii.gz"), groups)], header, OAI_GROUPS)
    assert data.count == 6          # the traced right leg's slices only
    assert set(np.unique(data.targets).tolist()) - {0, IGNORE} <= set(OAI_GROUPS.muscle_groups())
    matrix = group_matrix(OAI_GROUPS)
    config = {"round": 1, "rounds": 1, "local_steps": 2, "model_header": json.dumps(model_schema(header))}
    rate = 1e-2         # large steps, so that the group and the fine loss part visibly in 2 steps
    weights, count, metrics = SiteClient(header, data, "A", learning_rate=rate).fit(start, config)
    assert count == 6
    assert any(not np.array_equal(a, b) for a, b in zip(weights, start))        # it trained

    def trained(loss_matrix):
        """The same local round (rng of seed 0, round 1) run here with the given matrix."""
        replica = build_network(header["architecture"])
        set_network_weights(replica, start)
        train_on_slices(replica, data.images, data.targets, header, 2, np.random.default_rng([0, 1]),
                        learning_rate=rate, matrix=loss_matrix)
        return network_weights(replica)

    for sent, expected in zip(weights, trained(matrix)):
        np.testing.assert_allclose(sent, expected, rtol=1e-5, atol=1e-6)
    fine = trained(None)
    assert max(np.abs(a - b).max() for a, b in zip(weights, fine)) > 1e-3       # not the fine loss
    assert metrics["dice_before"] == pytest.approx(mean_case_dice(network, data.images, data.targets, matrix),
                                                   abs=1e-4)
    set_network_weights(network, weights)
    assert metrics["dice_after"] == pytest.approx(mean_case_dice(network, data.images, data.targets, matrix),
                                                  abs=1e-4)


def test_a_site_refuses_labels_outside_their_declared_scheme(federation_files, tmp_path, capsys):
    from myositis_qmri.cli import main
    files = federation_files
    labels = read_volume(files / "labels_21.nii.gz")
    beyond = labels.with_array(np.where(labels.array == 5, 30, labels.array).astype(np.int16))
    write_volume(beyond, tmp_path / "beyond.nii.gz")

    def site_exit(labels_path, *extra):
        return main(["federate", "site", "--server", "127.0.0.1:9", "--image", str(files / "t1w_21.nii.gz"),
                     "--labels", str(labels_path), "--model", str(files / "start.safetensors"),
                     "--label-maps", str(files / "replay"), "--max-wait", "1", *extra])

    # The project's fine labels (right 1-11, left 12-22) declared as OAI groups (1-9).
    assert site_exit(files / "labels_21.nii.gz", "--label-scheme", "oai-groups") == 2
    error = capsys.readouterr().err
    assert "labels_21.nii.gz" in error and "label values [10, 11, 12," in error and "oai-groups scheme" in error
    # A value in neither scheme, read as fine labels (the default).
    assert site_exit(tmp_path / "beyond.nii.gz") == 2
    error = capsys.readouterr().err
    assert "beyond.nii.gz" in error and "label values [30] are not in the muscle schema (1-22)" in error


def test_federate_site_takes_the_label_scheme_of_finetune():
    from myositis_qmri.cli import build_parser
    from myositis_qmri.segmentation.labels import LABEL_SCHEMES

    def site_args(*extra):
        return build_parser(only="federate").parse_args(["federate", "site", "--server", "h:1", "--image", "i",
                                                         "--labels", "l", *extra])
    assert site_args().label_scheme == "fine"
    assert site_args("--label-scheme", "oai-groups").label_scheme == "oai-groups"
    with pytest.raises(SystemExit):
        site_args("--label-scheme", "groups")

    def option(command):
        parser = build_parser(only=command)
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        if command == "federate":
            sub = next(a for a in sub._actions if a.dest == "role").choices["site"]
        return next(a for a in sub._actions if a.dest == "label_scheme")
    assert tuple(option("federate").choices) == tuple(option("finetune").choices) == LABEL_SCHEMES
    assert option("federate").help == option("finetune").help


def test_a_site_refuses_a_server_model_of_another_schema(federation_files, tmp_path):
    from myositis_qmri.segmentation.federated import SiteClient, labelled_slices
    from myositis_qmri.segmentation.merge import model_schema
    files = federation_files
    network, header = load_model(files / "start.safetensors")
    data = labelled_slices([(read_volume(files / "t1w_21.nii.gz"), read_volume(files / "labels_21.nii.gz"))], header)
    client = SiteClient(header, data, "A")
    other = read_header(tiny_model(tmp_path / "other.safetensors", spacing_mm=2.3))
    config = {"round": 1, "rounds": 1, "local_steps": 2, "model_header": json.dumps(model_schema(other))}
    with pytest.raises(ModelFileError, match=r"spacing_mm: \[3.0, 3.0\] at this site, \[2.3, 2.3\] on the server"):
        client.fit(network_weights(network), config)
    with pytest.raises(ModelFileError, match="no model header"):
        client.fit(network_weights(network), {"round": 1})


def test_merge_models_averages_by_weight_and_records_the_merge(tmp_path):
    a, b = tiny_model(tmp_path / "a.safetensors", seed=1), tiny_model(tmp_path / "b.safetensors", seed=2)
    out = tmp_path / "m.safetensors"
    done = subprocess.run([sys.executable, "-m", "myositis_qmri", "merge-models", str(a), str(b), "--out", str(out),
                           "--weights", "1,3"], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    merged, header = load_model(out)
    wa, wb = network_weights(load_model(a)[0]), network_weights(load_model(b)[0])
    for layer_a, layer_b, layer_m in zip(wa, wb, network_weights(merged)):
        np.testing.assert_allclose(layer_m, (layer_a + 3 * layer_b) / 4, rtol=1e-5, atol=1e-6)
    merged_from = header["provenance"]["federation"]["merged_from"]
    assert [m["weight"] for m in merged_from] == [1.0, 3.0]
    assert merged_from[1]["sha256"] == hashlib.sha256(b.read_bytes()).hexdigest()


def test_merge_models_refuses_models_that_differ(tmp_path):
    a = tiny_model(tmp_path / "a.safetensors")
    with pytest.raises(ModelFileError, match=r"spacing_mm: \[3.0, 3.0\] in a.safetensors, \[2.3, 2.3\] in b"):
        merge_models([a, tiny_model(tmp_path / "b.safetensors", spacing_mm=2.3)], tmp_path / "m.safetensors")
    with pytest.raises(ModelFileError, match="architecture: .*channels"):
        merge_models([a, tiny_model(tmp_path / "c.safetensors", channels=(8, 16, 48))], tmp_path / "m.safetensors")
    header = read_header(a)
    network = build_network(header["architecture"])
    save_model(network, {**header, "normalisation": "z-score"}, tmp_path / "d.safetensors")
    with pytest.raises(ModelFileError, match="normalisation"):
        merge_models([a, tmp_path / "d.safetensors"], tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
