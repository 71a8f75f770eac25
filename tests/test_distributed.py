"""torchrun: shards, the world, and whole runs on 2 (and 3) CPU processes with gloo (issue 14).

The multi-process runs start the CLI entry point (``python -m certify …``) once per rank with the
environment torchrun would set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); the slow
test goes through ``torchrun`` itself.  The truth they are held to is the one-process run: the
same JSON, ignoring only timestamps, seconds, argv and ``world_size``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from certify.certificates import CleanPass, Examples, sharded_clean_pass
from certify.certificates.clean_pass import join_passes
from certify.cli import main
from certify.distributed import (
    SINGLE,
    World,
    current_world,
    gather,
    shard,
    timeout_seconds,
    world_from_env,
)
from certify.errors import BadInputError, RuntimeFailure
from certify.results import header

from .helpers_analysis import make_model

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"created", "seconds", "argv", "world_size", "bound_passes"}  # bound passes count batches
#: The most a multi-process test may take before it counts as a hang.
HANG_S = 180


# --------------------------------------------------------------------------- shards and the world


@given(stop=st.integers(0, 5000), size=st.integers(1, 9), align=st.sampled_from([1, 7, 64, 512]),
       start_chunks=st.integers(0, 10))
def test_shards_cover_the_range_in_order_with_whole_chunks(stop, size, align, start_chunks):
    start = min(stop, start_chunks * align)
    parts = [shard(stop, World(r, size, r), start=start, align=align) for r in range(size)]
    assert parts[0][0] == start and parts[-1][1] == stop
    for (lo, hi), (lo2, _) in zip(parts, parts[1:]):
        assert lo <= hi == lo2  # contiguous, in rank order
    for lo, hi in parts:
        assert lo % align == 0 or lo == stop  # every shard starts on a chunk boundary: chunk seeds do not move
        assert hi % align == 0 or hi == stop
    chunks = [-(-(hi - lo) // align) for lo, hi in parts]
    assert max(chunks) - min(chunks) <= 1  # balanced to one chunk


def test_a_shard_must_start_on_a_chunk_boundary():
    with pytest.raises(BadInputError, match="multiple of 512"):
        shard(2000, World(0, 2), start=100)
    assert shard(100, World(1, 2), start=100) == (100, 100)  # a finished run: nothing left


def test_world_from_env_reads_torchrun_and_refuses_nonsense():
    assert world_from_env({}) == SINGLE and not SINGLE.distributed and SINGLE.is_main
    w = world_from_env({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"})
    assert w == World(2, 4, 0) and w.distributed and not w.is_main
    with pytest.raises(BadInputError, match="RANK must be an integer"):
        world_from_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(BadInputError, match="need 0 ≤ RANK < WORLD_SIZE"):
        world_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_timeout_comes_from_the_environment():
    assert timeout_seconds({"LIPCERT_DIST_TIMEOUT": "12.5"}) == 12.5
    with pytest.raises(BadInputError, match="LIPCERT_DIST_TIMEOUT must be a positive number"):
        timeout_seconds({"LIPCERT_DIST_TIMEOUT": "0"})


def test_one_process_changes_nothing():
    assert current_world() == SINGLE
    assert gather({"a": 1}, SINGLE, "x") == [{"a": 1}]
    assert header("certify")["world_size"] == 1 and header("certify", world_size=3)["world_size"] == 3


def _rows(lo: int, hi: int) -> Examples:
    idx = np.arange(lo, hi)
    return Examples(idx, idx % 3, idx % 3, idx * 0.5, idx * 0.25, idx * 0.1)


def test_passes_join_in_order_up_to_the_first_interrupted_shard():
    whole = join_passes([CleanPass(_rows(0, 512), False), CleanPass(_rows(512, 512), False),
                         CleanPass(_rows(512, 700), False)])
    assert not whole.partial and np.array_equal(whole.examples.index, np.arange(700))
    assert np.array_equal(whole.examples.radius, np.arange(700) * 0.1)
    cut = join_passes([CleanPass(_rows(0, 300), True), CleanPass(_rows(512, 700), False)])
    assert cut.partial and np.array_equal(cut.examples.index, np.arange(300))
    with pytest.raises(RuntimeFailure, match="a shard starts at example 600, expected 512"):
        join_passes([CleanPass(_rows(0, 512), False), CleanPass(_rows(600, 700), False)])


def test_the_sharded_pass_of_one_process_is_the_pass(model):
    import torch

    from certify import load_dataset, load_model

    loaded = load_model(model)
    data = load_dataset("demo", limit=600)
    done = sharded_clean_pass(loaded.module, data, torch.device("cpu"), batch_size=256)
    assert not done.partial and np.array_equal(done.examples.index, np.arange(600))


# --------------------------------------------------------------------------- whole runs on several processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(commands: list[list[str]], timeout_s: float = 30,
           env_per_rank: list[dict[str, str]] | None = None) -> list[tuple[int, str, str, float]]:
    """Run one command per rank, as torchrun would; (exit code, stdout, stderr, seconds) per rank."""
    port, n = _free_port(), len(commands)
    procs, t0 = [], time.monotonic()
    for rank, cmd in enumerate(commands):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(n), "LOCAL_RANK": str(rank),
               "LIPCERT_DIST_TIMEOUT": str(timeout_s), **(env_per_rank[rank] if env_per_rank else {})}
        procs.append(subprocess.Popen([sys.executable, *cmd], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=max(1.0, HANG_S - (time.monotonic() - t0)))
            out.append((p.returncode, stdout, stderr, time.monotonic() - t0))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def stable(doc: Any) -> Any:
    """A results JSON without what may differ between runs and world sizes."""
    if isinstance(doc, dict):
        return {k: stable(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [stable(v) for v in doc]
    return doc


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(make_model(tmp_path_factory.mktemp("dist") / "m.pt2"))


def one_process(args: list[str]) -> dict[str, Any]:
    res = CliRunner().invoke(main, [*args, "--json", "-", "-q"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["world_size"] == 1
    return doc


CERTIFY = ["certify", "--norm", "l2", "--eps", "0.1,0.3", "--data", "demo", "--limit", "600"]  # 2 chunks: 512 + 88
ATTACK = ["attack", "--norm", "l2", "--eps", "0.3,0.5", "--attacks", "pgd", "--steps", "2,3", "--data", "demo",
          "--limit", "600"]
ANALYZE = ["analyze", "--norm", "l2", "--eps", "0,0.3", "--attacks", "pgd", "--steps", "2", "--no-train-margins",
           "--data", "demo", "--limit", "600"]
SUITE = ("model: {{path: {model}}}\ndata: {{source: demo, limit: 600}}\nnorm: l2\neps: [0.1, 0.3]\n"
         "attacks: {{names: [pgd], steps: [2]}}\nlipschitz: false\nanalysis: {{train_margins: false}}\n"
         "gates: {{min_clean_accuracy: 0.5}}\n")
#: The empirical estimates of 700 points, in batches of 250: rank 0 estimates 2, rank 1 one.
LIPSCHITZ = ["lipschitz", "--norm", "l2", "--data", "demo", "--limit", "700"]
DATA_LIPSCHITZ = ["data-lipschitz", "demo", "--limit", "900"]  # one block of 2048 rows: rank 1 idle
#: After the commands: the nearest-pair search in blocks of 64 rows (16 blocks, 8 per rank), written by rank 0.
PAIR_SEARCH = """
import dataclasses, json, os
from certify import load_dataset
from certify.lipschitz.estimates import data_lipschitz
res = data_lipschitz(load_dataset("demo"), block=64)
if os.environ["RANK"] == "0":
    open({path!r}, "w").write(json.dumps(dataclasses.asdict(res)))
"""
#: Runs the CLI's ``main`` once per argument list, in one process (one torch import per rank); the
#: commands share the process group.
SEVERAL = """
import json, sys
from certify.cli import main
for args in json.loads(sys.argv[1]):
    try:
        main(args=args, prog_name="lipcert")
    except SystemExit as stop:
        if stop.code:
            raise
exec(sys.argv[2] if len(sys.argv) > 2 else "")
"""


def with_model(command: list[str], model: str) -> list[str]:
    return [command[0], model, *command[1:]]


@pytest.fixture(scope="module")
def two_ranks(model, tmp_path_factory) -> dict[str, Any]:
    """certify, attack, analyze, run, data-lipschitz and lipschitz on 2 processes; each rank asks for its own files (only rank 0 may
    write)."""
    tmp = tmp_path_factory.mktemp("two")
    suite = tmp / "suite.yaml"
    suite.write_text(SUITE.format(model=model))
    commands = []
    for rank in range(2):
        commands.append(["-c", SEVERAL, json.dumps([
            [*with_model(CERTIFY, model), "--json", str(tmp / f"certify{rank}.json"), "-q"],
            [*with_model(ATTACK, model), "--json", str(tmp / f"attack{rank}.json"), "-q"],
            [*with_model(ANALYZE, model), "--json", str(tmp / f"analyze{rank}.json"), "-q"],
            ["run", str(suite), "--json", str(tmp / f"run{rank}.json"), "--junit", str(tmp / f"run{rank}.xml"),
             "-q"],
            [*DATA_LIPSCHITZ, "--json", str(tmp / f"data-lipschitz{rank}.json"), "-q"],
            [*with_model(LIPSCHITZ, model), "--json", str(tmp / f"lipschitz{rank}.json"), "-q"]]),
            PAIR_SEARCH.format(path=str(tmp / "pairs0.json"))])
    runs = launch(commands)
    assert [r[0] for r in runs] == [0, 0], [r[2] for r in runs]
    assert not list(tmp.glob("*1.*"))  # rank 1 writes nothing
    assert (tmp / "run0.xml").exists()
    return {k: json.loads((tmp / f"{k}0.json").read_text())
            for k in ("certify", "attack", "analyze", "run", "data-lipschitz", "pairs", "lipschitz")}


def test_certify_on_two_processes_writes_the_one_process_json(two_ranks, model):
    doc = two_ranks["certify"]
    assert doc["world_size"] == 2 and doc["data"]["n"] == 600 and doc["partial"] is False
    assert stable(doc) == stable(one_process(with_model(CERTIFY, model)))


def test_attack_on_two_processes_writes_the_one_process_json(two_ranks, model):
    doc = two_ranks["attack"]
    assert doc["world_size"] == 2 and doc["data"]["n"] == 600 and doc["partial"] is False
    assert stable(doc) == stable(one_process(with_model(ATTACK, model)))
    assert doc["results"][0]["successes"] > 0  # the attack found something: the comparison is not vacuous


def test_analyze_and_run_on_two_processes_write_the_one_process_json(two_ranks, model, tmp_path):
    analyze = two_ranks["analyze"]
    assert analyze["world_size"] == 2 and analyze["attack"]["world_size"] == 2
    assert stable(analyze) == stable(one_process(with_model(ANALYZE, model)))
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(model=model))
    res = CliRunner().invoke(main, ["run", str(suite), "--json", str(tmp_path / "run.json"), "-q"])
    assert res.exit_code == 0, res.stderr
    alone = json.loads((tmp_path / "run.json").read_text())
    assert two_ranks["run"]["world_size"] == 2 and alone["world_size"] == 1
    assert stable(two_ranks["run"]) == stable(alone)


def test_data_lipschitz_on_two_processes_finds_the_one_process_pair(two_ranks):
    doc = two_ranks["data-lipschitz"]
    assert doc["world_size"] == 2
    res = CliRunner().invoke(main, [*DATA_LIPSCHITZ, "--json", "-", "-q"])
    assert res.exit_code == 0, res.stderr
    assert stable(doc) == stable(json.loads(res.stdout))
    from certify import load_dataset
    from certify.lipschitz.estimates import data_lipschitz

    alone = dataclasses.asdict(data_lipschitz(load_dataset("demo"), block=64))
    assert stable(two_ranks["pairs"]) == stable(alone)  # the rows searched on two ranks, 8 blocks each


def test_lipschitz_estimates_on_two_processes_write_the_one_process_json(two_ranks, model):
    doc = two_ranks["lipschitz"]
    assert doc["world_size"] == 2 and doc["empirical"]["n"] == 700
    assert stable(doc) == stable(one_process(with_model(LIPSCHITZ, model)))


def test_a_rank_that_fails_or_dies_ends_the_run_with_one_line_naming_it(model, tmp_path):
    """Rank 1 cannot read its model (a node without the file), rank 2 is killed: rank 0 finishes its
    shard, then fails at once with one line naming both."""
    args = [*with_model(CERTIFY, model), "--limit", "1100", "-q"]  # 3 chunks: one per rank
    missing = [*with_model(CERTIFY, str(tmp_path / "absent.pt2")), "-q"]
    die = ["-c", "import os, signal; from certify.distributed import init_world; init_world(); "
                 "os.kill(os.getpid(), signal.SIGKILL)"]
    (code0, out0, err0, t0), (code1, _, err1, _), (code2, _, _, _) = launch(
        [["-m", "certify", *args], ["-m", "certify", *missing], die])
    assert code1 == 2 and err1.startswith("Error: rank 1: ") and "absent.pt2" in err1
    assert code2 == -9
    assert code0 == 3 and t0 < 60 and out0 == "", err0
    line, = err0.strip().splitlines()
    assert line.startswith("Error: rank 1 failed (") and "absent.pt2" in line
    assert line.endswith("; rank 2 stopped before sending its part of the clean pass (world of 3); "
                         "the run was abandoned, see that rank's log")


@pytest.mark.slow
@pytest.mark.parametrize("attacks", ["pgd", "apgd-ce"])
def test_torchrun_three_processes_attack_equals_one_process(model, tmp_path, attacks):
    args = with_model(ATTACK, model)
    args[args.index("--attacks") + 1] = attacks
    out = tmp_path / "a.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=3",
                           f"--master_port={_free_port()}", "-m", "certify", *args, "--json", str(out), "-q"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["world_size"] == 3  # 2 chunks over 3 ranks: rank 0's shard is empty
    assert stable(doc) == stable(one_process(args))


@pytest.mark.parametrize("resume_ranks", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_sigterm_on_one_rank_keeps_the_finished_chunks_and_resume_completes(tmp_path, resume_ranks):
    """1000 points = chunks 0 and 1: rank 0 attacks chunk 0, rank 1 chunk 1 and is interrupted
    (SIGTERM) in it.  The partial JSON keeps chunk 0; ``--resume`` on 1 (or 3) processes attacks
    chunk 1, and the result equals an uninterrupted one-process run."""
    import torch

    from .test_interrupt_attack import SelfInterrupting

    model = tmp_path / "rows.pt"
    torch.save(SelfInterrupting(), model)
    common = ["attack", str(model), "--trust-checkpoint", "--data", "demo", "--limit", "1000", "--norm", "l2",
              "--eps", "0.02,0.05", "--attacks", "pgd", "--steps", "5,10", "--certificate", "l2-multi",
              "--assume-lipschitz", "-q"]
    partial_path = tmp_path / "partial.json"
    runs = launch([["-m", "certify", *common, "--json", str(partial_path)]] * 2,
                  env_per_rank=[{}, {"LIPCERT_TEST_KILL_AFTER": "40"}])
    assert [r[0] for r in runs] == [130, 130], [r[2] for r in runs]
    partial = json.loads(partial_path.read_text())
    assert partial["partial"] is True and partial["world_size"] == 2 and partial["data"]["n"] == 512
    resume = [*common, "--resume", str(partial_path)]
    if resume_ranks == 1:
        resumed = one_process(resume)
    else:
        runs = launch([["-m", "certify", *resume, "--json", "-"]] * resume_ranks)
        assert [r[0] for r in runs] == [0] * resume_ranks, [r[2] for r in runs]
        resumed = json.loads(runs[0][1])
        assert resumed["world_size"] == resume_ranks
    fresh = one_process(common)
    assert resumed["partial"] is False and resumed["data"]["n"] == 1000
    assert stable(resumed) == stable(fresh)


def test_malformed_torchrun_variables_are_one_line_of_bad_input(model, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = CliRunner().invoke(main, [*with_model(CERTIFY, model), "-q"])
    assert res.exit_code == 2
    assert res.stderr == ("Error: RANK 3, WORLD_SIZE 2, LOCAL_RANK 0 do not describe a process of the run "
                          "(need 0 ≤ RANK < WORLD_SIZE); launch with torchrun\n")


#: After the commands: how many image rows this rank read from the data file.
ROWS_READ = """
from certify.rowstore import rows_read
print("rows_read", rows_read())
"""


def test_each_rank_reads_its_shard_of_the_data_file_not_the_whole_file(model, tmp_path):
    """certify and attack of 1,000 points from a plain idx file on 2 processes: each rank reads about half of
    the rows one process reads (its clean-pass batches, its attack chunk, and the 64 points of the
    gradient check every rank makes), and the JSON is the one-process JSON."""
    from certify.data import load_dataset

    from .test_data import write_idx

    demo = load_dataset("demo")
    write_idx(tmp_path / "t10k-images-idx3-ubyte", demo.x[:, 0].numpy(), gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", demo.y.numpy(), gz=False)
    data = ["--data", str(tmp_path), "--limit", "1000"]
    certify = [*with_model(CERTIFY, model)[:-4], *data]
    attack = [*with_model(ATTACK, model)[:-4], *data]
    commands = [["-c", SEVERAL, json.dumps([[*certify, "--json", str(tmp_path / f"c{rank}.json"), "-q"],
                                            [*attack, "--json", str(tmp_path / f"a{rank}.json"), "-q"]]), ROWS_READ]
                for rank in range(2)]
    runs = launch(commands)
    assert [r[0] for r in runs] == [0, 0], [r[2] for r in runs]
    reads = [int(r[1].split("rows_read")[1]) for r in runs]
    one = 1000 + 1000 + 1000 + 64  # certify's pass, attack's clean pass and chunks, the gradient check
    print("rows read per rank", reads, "of", one)
    assert all(one / 2 - 64 <= n <= one / 2 + 128 for n in reads), reads
    assert stable(json.loads((tmp_path / "a0.json").read_text())) == stable(one_process(attack))
    assert stable(json.loads((tmp_path / "c0.json").read_text())) == stable(one_process(certify))
