"""Wall time of ``lipcert`` from the shell, process start included.

    python examples/benchmarks/bench_cli.py [--repeats 5] [--device auto] [--n 10000] [--skip-runs]

1. ``lipcert --version``, ``--help`` and ``certify --help``: median of ``--repeats`` runs
   (target < 0.5 s on a 2-core CPU; they import neither torch nor foolbox).
2. ``lipcert certify`` of the shipped L2NNN on ``--n`` Fashion-MNIST test images
   (target on H100/H200: < 3 s) and ``lipcert attack --attacks pgd --steps 100`` on the shipped CNN,
   L2 ε = 1.5 (target on H100/H200: < 10 s), one run each after a warm-up run.

Rows are printed as a Markdown table (``| metric | value | target |``), which
``gpu_check.sh`` collects.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wall(args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "certify", *args], cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"lipcert {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return took


def row(metric: str, value: str, target: str) -> None:
    print(f"| {metric} | {value} | {target} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--skip-runs", action="store_true", help="only the start-up timings")
    args = ap.parse_args()
    for cmd in (["--version"], ["--help"], ["certify", "--help"]):
        times = [wall(cmd) for _ in range(args.repeats)]
        row(f"lipcert {' '.join(cmd)} (median of {args.repeats})", f"{statistics.median(times):.3f} s", "< 0.5 s")
    if args.skip_runs:
        return
    common = ["--data", args.data, "--limit", str(args.n), "--device", args.device, "-q"]
    certify = ["certify", "examples/models/fmnist_l2nnn.pt2", "--norm", "l2", "--eps", "0.1", *common]
    attack = ["attack", "examples/models/fmnist_baseline.pt2", "--norm", "l2", "--eps", "1.5", "--attacks", "pgd",
              "--steps", "100", "--batch-size", str(min(args.n, 10000)), *common]
    for name, cmd, target in (("certify L2NNN", certify, "< 3 s on H100/H200"),
                              ("attack CNN pgd-100 L2 ε=1.5", attack, "< 10 s on H100/H200")):
        wall(cmd)  # warm-up: page cache, CUDA driver
        row(f"{name}, {args.n} images, {args.device} (wall, process start included)", f"{wall(cmd):.2f} s", target)


if __name__ == "__main__":
    main()
