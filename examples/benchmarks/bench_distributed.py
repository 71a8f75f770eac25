"""Speed-up of ``torchrun --nproc_per_node=N`` over one process, one thread each (issue 14).

    python examples/benchmarks/bench_distributed.py [--n 2048] [--procs 2] [--steps 20] [--attacks pgd]
        [--runs attack,certify,lipschitz,check] [--check 256] [--device cpu]

Runs ``lipcert attack`` on the shipped Fashion-MNIST CNN (L2, ε = 1.5), ``lipcert certify`` on the
shipped L2NNN, ``lipcert lipschitz`` (its empirical estimates) on the CNN and ``lipcert attack
--check-certificates`` on the L2NNN (the strong attacks on ``--check`` certified points), first as one
process, then under torchrun with ``--procs`` processes, every process with ``OMP_NUM_THREADS=1`` and
``--device`` (``cuda``: rank r on GPU r modulo the GPUs; NCCL when every rank has its own GPU, else gloo).  It checks that both runs wrote the same per-example results
(the document may differ only in timestamps, seconds, argv and ``world_size``) and prints a Markdown
table: wall time (process start included), the run's own ``seconds`` and the speed-up.

Attacks shard by chunks of :data:`certify.defaults.ATTACK_CHUNK` (512) examples, so ``--n`` should
give every process at least one chunk (2048 = 4 chunks).  The table from the 2-core dev machine is in
``examples/benchmarks/bench_distributed.cpu.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VOLATILE = {"created", "seconds", "argv", "world_size", "bound_passes"}  # bound passes count batches


def stable(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: stable(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [stable(v) for v in doc]
    return doc


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The JSON path of the first value that differs (None when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}/{k} (missing on one side)"
            hit = first_difference(a[k], b[k], f"{path}/{k}")
            if hit:
                return hit
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (u, v) in enumerate(zip(a, b)):
            hit = first_difference(u, v, f"{path}[{i}]")
            if hit:
                return hit
        return None
    return None if a == b else f"{path}: {str(a)[:60]} vs {str(b)[:60]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(launcher: list[str], args: list[str], out: Path) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *launcher, "-m", "certify", *args, "--json", str(out), "-q"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"lipcert {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return took, json.loads(out.read_text())


def seconds(doc: dict[str, Any]) -> float:
    """The run's own seconds (lipschitz: those of its empirical estimates)."""
    return float(doc["seconds"] if "seconds" in doc else doc["empirical"]["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="Fashion-MNIST test images")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--attacks", default="pgd")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--runs", default="attack,certify,lipschitz,check", help="which runs, comma-separated")
    ap.add_argument("--check", type=int, default=256, help="certified points attacked by --check-certificates")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    common = ["--data", args.data, "--limit", str(args.n), "--device", args.device]
    every = {
        "attack": (f"attack {args.attacks}-{args.steps} CNN L2 ε=1.5", [
            "attack", "examples/models/fmnist_baseline.pt2", "--norm", "l2", "--eps", "1.5", "--attacks",
            args.attacks, "--steps", str(args.steps), *common]),
        "certify": ("certify L2NNN", ["certify", "examples/models/fmnist_l2nnn.pt2", "--norm", "l2", "--eps", "0.1",
                                      *common]),
        "lipschitz": ("lipschitz estimates CNN", ["lipschitz", "examples/models/fmnist_baseline.pt2", *common]),
        "check": (f"attack --check-certificates {args.check} L2NNN", [
            "attack", "examples/models/fmnist_l2nnn.pt2", "--norm", "l2", "--eps", "0.1", "--attacks", "pgd",
            "--steps", "1", "--check-certificates", str(args.check), "--batch-size", "64", *common]),
    }
    wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(wanted) - set(every))
    if unknown:
        raise SystemExit(f"unknown run(s) {unknown}; choose from {sorted(every)}")
    runs = dict(every[r] for r in wanted)
    print(f"| run ({args.n} images, {args.device}, 1 thread/process) | 1 process wall / seconds | "
          f"{args.procs} processes wall / seconds | speed-up wall / seconds | same results |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in runs.items():
            wall1, doc1 = timed([], cmd, Path(tmp) / "one.json")
            torchrun = ["-m", "torch.distributed.run", f"--nproc_per_node={args.procs}",
                        f"--master_port={free_port()}"]
            walln, docn = timed(torchrun, cmd, Path(tmp) / "many.json")
            same = stable(doc1) == stable(docn) and docn["world_size"] == args.procs
            s1, sn = seconds(doc1), seconds(docn)
            print(f"| {name} | {wall1:.1f} s / {s1:.1f} s | {walln:.1f} s / {sn:.1f} s | "
                  f"{wall1 / walln:.2f}× / {s1 / sn:.2f}× | {'yes' if same else 'NO'} |",
                  flush=True)
            if not same:
                print(f"  first difference: {first_difference(stable(doc1), stable(docn))}", flush=True)


if __name__ == "__main__":
    main()
