"""torchrun, continued (issue 14): the empirical Lipschitz estimates and the certificate check sharded
over ranks, the clean pass sharded by batches, the backend
and device of a rank, and the commands that refuse to run under torchrun (verify, demo).

The multi-process runs use :func:`tests.test_distributed.launch` (one ``python -m certify`` per rank
with torchrun's environment); the truth is the one-process JSON, ignoring times, argv and ``world_size``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from certify import load_dataset, load_model
from certify.cli import main
from certify.distributed import SINGLE, World, backend_for, rank_device
from certify.lipschitz.estimates import empirical_estimates

from .helpers_analysis import make_model
from .test_distributed import launch, one_process, stable

@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(make_model(tmp_path_factory.mktemp("dist-cmd") / "m.pt2"))


# --------------------------------------------------------------------------- empirical estimates


def _estimates(model: str, n: int, world: World, **kw) -> dict:
    loaded = load_model(model)
    res = empirical_estimates(loaded.module, load_dataset("demo", limit=n), device="cpu", seed=3, world=world, **kw)
    return {k: v for k, v in dataclasses.asdict(res).items() if k != "seconds"}


def test_shards_of_the_estimate_columns_join_to_the_whole(model):
    """A rank's columns (batches from its shard's start, each seeded by its own start) are the rows of
    the one-process columns: shards 0..200 and 200..300 in batches of 100 give the rows of 0..300."""
    from certify.lipschitz.estimates import _estimate_columns

    module, data = load_model(model).module, load_dataset("demo", limit=300)
    whole = _estimate_columns(module, data, 0, 300, 4, 100, "cpu", 3, None)
    parts = [_estimate_columns(module, data, lo, hi, 4, 100, "cpu", 3, None) for lo, hi in ((0, 200), (200, 300))]
    for key, col in whole.items():
        assert col.shape == (300,) and torch.equal(torch.cat([p[key] for p in parts]), col), key
    other = _estimate_columns(module, data, 0, 300, 4, 100, "cpu", 4, None)
    assert not torch.equal(other["spec"], whole["spec"])  # the seed matters: the comparison can fail
    assert _estimates(model, 300, SINGLE, batch_size=100) == _estimates(model, 300, SINGLE, batch_size=100)


# --------------------------------------------------------------------------- backend and device of a rank


def test_a_cuda_rank_uses_nccl_bound_to_its_gpu_and_a_cpu_rank_gloo():
    assert backend_for(None) == ("gloo", {})
    assert backend_for("cpu", 2, visible_gpus=2) == ("gloo", {})
    gpu1 = torch.device("cuda", 1)  # a device object: no CUDA needed to name one
    assert backend_for(gpu1, 2, visible_gpus=2) == ("nccl", {"device_id": gpu1})
    assert backend_for(gpu1, 1, visible_gpus=8) == ("nccl", {"device_id": gpu1})
    assert backend_for(torch.device("cuda", 0), 2, visible_gpus=1) == ("gloo", {})  # NCCL: one rank per GPU


def test_the_ranks_of_a_node_come_from_torchrun():
    from certify.distributed import local_world_size

    assert local_world_size({"LOCAL_WORLD_SIZE": "4"}) == 4
    assert local_world_size({}) == 1 and local_world_size({"LOCAL_WORLD_SIZE": "x"}) == 1


def test_cuda_without_an_index_becomes_the_local_rank_modulo_the_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device("cuda", World(3, 4, 3)) == torch.device("cuda", 1)
    assert rank_device("cuda", World(0, 4, 0)) == torch.device("cuda", 0)
    assert rank_device("cuda:0", World(3, 4, 3)) == torch.device("cuda", 0)  # an index given is kept
    assert rank_device("cuda", SINGLE) == torch.device("cuda")  # one process: the default GPU
    assert rank_device("cpu", World(1, 2, 1)) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert {rank_device("cuda", World(r, 2, r)) for r in range(2)} == {torch.device("cuda", 0)}  # 2 ranks, 1 GPU


def test_the_cli_joins_with_nccl_on_cuda(monkeypatch):
    """run_device_for on a (pretend) CUDA rank: cuda:LOCAL_RANK, set as the current device, NCCL."""
    from certify import distributed
    from certify.cli import options

    seen: dict = {}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr("certify.device.resolve_device", lambda spec: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: seen.setdefault("current", dev))
    monkeypatch.setattr(distributed, "init_world", lambda dev: seen.setdefault("backend", backend_for(dev, 2)) and SINGLE)
    dev = options.run_device_for("cuda")
    assert dev == torch.device("cuda", 1) and seen["current"] == dev
    assert seen["backend"] == ("nccl", {"device_id": torch.device("cuda", 1)})


# --------------------------------------------------------------------------- commands that run in one process


@pytest.mark.parametrize("command", [["verify", "m.onnx", "p.vnnlib"], ["demo", "--limit", "10"]], ids=repr)
def test_verify_and_demo_refuse_torchrun_in_one_line(command, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = CliRunner().invoke(main, command)
    assert res.exit_code == 2 and res.stdout == ""
    line, = res.stderr.strip().splitlines()
    assert line.startswith(f"Error: lipcert {command[0]} does not run under torchrun (WORLD_SIZE 2): ")
    assert line.endswith("run it as one process, without torchrun")


def test_demo_on_two_processes_ends_at_once_on_both_ranks(tmp_path):
    runs = launch([["-m", "certify", "demo", "--limit", "10", "-q", "--json", str(tmp_path / "d.json")]] * 2,
                  timeout_s=20)
    assert [r[0] for r in runs] == [2, 2], [r[2] for r in runs]
    assert runs[1][2].startswith("Error: rank 1: lipcert demo does not run under torchrun")
    assert all(r[3] < 60 for r in runs) and not (tmp_path / "d.json").exists()


# --------------------------------------------------------------------------- the certificate check


def _check_run(model: str, n: int):
    import numpy as np

    from attacks.runner import Run, Ticker
    from certify.threat import Norm

    loaded, data = load_model(model), load_dataset("demo", limit=n)
    x, y = data.batch(0, n, "cpu")
    correct = loaded.module(x).argmax(1).numpy() == y.numpy()
    radius = np.full(n, 1.5)  # a radius the model does not have: successes inside it are recorded
    run = Run(loaded.module, x, y, Norm.L2, (0.5,), (0.0, 1.0), correct, radius, 8, torch.device("cpu"), 5,
              Ticker(0, None))
    return run, radius


def test_sharded_certificate_checks_record_the_one_process_violations(model, monkeypatch):
    """Each of 2 ranks attacks its batches of the sample; with every rank's part, rank 0 records the
    violations of one process, in the same order (a false radius makes them plentiful)."""
    from attacks import runner

    monkeypatch.setattr(runner, "DEFAULT_CHECK_STEPS", 10)  # the seeds matter, not the strength
    alone, radius = _check_run(model, 60)
    assert runner.check_sampled(alone, radius, 20, []) == 20
    assert len(alone.violations) > 3  # the comparison below is not vacuous
    parts = {}
    class Sent(Exception):
        pass

    def send(mine, world, what):
        parts[world.rank] = mine
        raise Sent

    monkeypatch.setattr(runner, "gather", send)
    for rank in (0, 1):  # first each rank's own part, then rank 0 given both
        with pytest.raises(Sent):
            runner.check_sampled(_check_run(model, 60)[0], radius, 20, [], World(rank, 2, rank))
    assert [len(p[0][0]) for p in (parts[0], parts[1])] == [8, 12]  # one batch of 8, then two (the last short)
    monkeypatch.setattr(runner, "gather", lambda mine, world, what: [parts[0], parts[1]])
    run, _ = _check_run(model, 60)
    assert runner.check_sampled(run, radius, 20, [], World(0, 2, 0)) == 20
    assert run.violations == alone.violations
    monkeypatch.setattr(runner, "gather", lambda mine, world, what: [parts[0], None])  # rank 1 interrupted
    with pytest.raises(KeyboardInterrupt):
        runner.check_sampled(_check_run(model, 60)[0], radius, 20, [], World(0, 2, 0))


@pytest.mark.slow
def test_attack_with_certificate_checks_on_two_processes_writes_the_one_process_json(model, tmp_path):
    args = ["attack", model, "--norm", "l2", "--eps", "0.3", "--attacks", "pgd", "--steps", "2", "--data", "demo",
            "--limit", "300", "--check-certificates", "100", "--batch-size", "32"]
    runs = launch([["-m", "certify", *args, "--json", str(tmp_path / "a.json"), "-q"]] * 2)
    assert [r[0] for r in runs] == [0, 0], [r[2] for r in runs]
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["world_size"] == 2 and doc["certificates_checked"] == 100
    assert stable(doc) == stable(one_process(args))


# --------------------------------------------------------------------------- small runs


def test_the_clean_pass_shards_whole_batches_so_small_runs_use_every_rank(monkeypatch):
    """300 examples in batches of 64 on 3 ranks: 64 + 128 + 108 rows (chunks of 512 would leave two idle),
    each rank's shard starting on a one-process batch boundary."""
    import importlib

    from certify.certificates.clean_pass import CleanPass, Examples

    module = importlib.import_module("certify.certificates.clean_pass")

    def rows(lo: int, hi: int) -> Examples:
        idx = np.arange(lo, hi)
        return Examples(idx, idx % 3, idx % 3, idx * 0.5, idx * 0.25, idx * 0.1)

    asked = {}

    def fake_pass(module_, data, device, *, plan, batch_size, progress, start, stop):
        asked[start] = stop
        return CleanPass(rows(start, stop), False)

    monkeypatch.setattr(module, "clean_pass", fake_pass)
    monkeypatch.setattr(module, "gather", lambda mine, world, what: [mine])
    data = load_dataset("demo", limit=300)
    for rank in range(3):
        module.sharded_clean_pass(None, data, torch.device("cpu"), batch_size=64, world=World(rank, 3, rank))
    assert asked == {0: 64, 64: 192, 192: 300}
    assert all(lo % 64 == 0 for lo in asked)


def _bench(tmp_path):
    from .helpers_vnnlib import mlp_onnx, robustness_vnnlib

    mlp_onnx(tmp_path / "id.onnx", [(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), np.array([0.0, 0.0, 0.5]))])
    (tmp_path / "robust.vnnlib").write_text(robustness_vnnlib(np.array([0.9, 0.0]), np.array([1.0, 0.1]), 3, 0))
    (tmp_path / "broken.vnnlib").write_text(robustness_vnnlib(np.array([0.9, 0.0]), np.array([1.0, 0.95]), 3, 0))
    (tmp_path / "instances.csv").write_text("id.onnx,robust.vnnlib,30\nid.onnx,broken.vnnlib,30\n"
                                            "id.onnx,missing.vnnlib,30\nid.onnx,broken.vnnlib,30\n")
    return tmp_path / "instances.csv"


def test_instances_are_dealt_out_in_turn_and_joined_in_file_order(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    from certify.vnnlib import instances as module

    csv = _bench(tmp_path)
    alone = module.run_instances(csv, seed=1)
    sent = {}

    def send(rows, world, what):
        sent[world.rank] = rows
        return [sent.get(0, []), rows] if world.rank == 1 else [rows, sent[1]]

    monkeypatch.setattr(module, "gather", send)
    assert [r.instance.vnnlib for r in module.run_instances(csv, seed=1, world=World(1, 2, 1)).rows[-2:]] == \
        ["broken.vnnlib", "broken.vnnlib"]
    shared = module.run_instances(csv, seed=1, world=World(0, 2, 0))
    assert [i for i, _ in sent[0]] == [0, 2] and [i for i, _ in sent[1]] == [1, 3]
    assert [(r.instance, r.result.result) for r in shared.rows] == [(r.instance, r.result.result) for r in alone.rows]
    assert [r.result.result for r in alone.rows] == ["unsat", "sat", "error", "sat"]


@pytest.mark.slow
def test_verify_instances_on_two_processes_write_the_one_process_answers(tmp_path):
    """4 rows over 2 ranks (rows 0 and 2 on rank 0, 1 and 3 on rank 1): rank 0 writes every answer,
    in the file's order, as one process does; rank 1 writes and prints nothing."""
    pytest.importorskip("onnx")
    _bench(tmp_path)
    args = ["verify", "--instances", str(tmp_path / "instances.csv"), "--seed", "1"]
    runs = launch([["-m", "certify", *args, "--results", str(tmp_path / f"r{rank}.csv")] for rank in range(2)])
    assert [r[0] for r in runs] == [0, 0], [r[2] for r in runs]
    assert runs[0][1].startswith("4 instances: 2 sat, 1 unsat, 0 unknown, 0 timeout, 1 error in ")
    assert runs[1][1] == "" and not (tmp_path / "r1.csv").exists()
    res = CliRunner().invoke(main, [*args, "--results", str(tmp_path / "alone.csv")])
    assert res.exit_code == 0, res.stderr

    def answers(path):
        return [line.split(",")[:3] for line in path.read_text().splitlines()]

    assert answers(tmp_path / "r0.csv") == answers(tmp_path / "alone.csv")
    assert [a[2] for a in answers(tmp_path / "alone.csv")[1:]] == ["unsat", "sat", "error", "sat"]
