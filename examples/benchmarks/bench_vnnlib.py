"""`lipcert verify` against exact answers: how often it decides, and that it is never wrong.

Random ReLU networks (written as ONNX by hand) and ℓ∞ robustness properties (VNN-LIB text, label =
the class at the box centre) are decided three ways:

- lipcert's :func:`certify.vnnlib.verify.verify` (sat by PGD + exact re-check, unsat by the ℓ∞
  Lipschitz plan);
- an exact MILP (scipy's HiGHS, big-M with interval bounds): the largest ``Y_j − Y_c`` over the box;
- a wrong answer is ``unsat`` where the MILP finds a violation, or ``sat`` where it finds none.

Per ε the table gives the truth (violated / safe by MILP, ties within 1e-4 left out) and lipcert's
answers.  Needs ``onnx`` and ``onnxruntime``.

    python examples/benchmarks/bench_vnnlib.py [--nets 4] [--props 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from certify.checkpoints import load_model
from certify.vnnlib import parse_vnnlib
from certify.vnnlib.verify import verify
from tests.helpers_vnnlib import (
    forward,
    milp_max,
    mlp_onnx,
    random_weights,
    robustness_vnnlib,
)

SIZES = [4, 16, 16, 5]
EPSILONS = (0.001, 0.005, 0.02, 0.1, 0.5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", type=int, default=4)
    ap.add_argument("--props", type=int, default=10, help="properties per net and ε")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    rows = {eps: Counter() for eps in EPSILONS}
    seconds = Counter()
    for seed in range(args.nets):
        weights = [(w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
                   for w, b in random_weights(SIZES, seed)]
        model = load_model(mlp_onnx(tmp / f"net{seed}.onnx", weights))
        rng = np.random.default_rng(1000 + seed)
        for eps in EPSILONS:
            for case in range(args.props):
                decide(model, weights, rng, eps, case, rows[eps], seconds)
    print(f"network {SIZES} (ReLU), {args.nets} nets × {args.props} properties per ε\n")
    print(f"{'ε':>6} | {'violated':>8} {'sat':>4} | {'safe':>4} {'unsat':>5} | {'unknown':>7} {'timeout':>7} | "
          f"{'wrong':>5} | {'ties':>4}")
    for eps, c in rows.items():
        print(f"{eps:>6} | {c['violated']:>8} {c['sat']:>4} | {c['safe']:>4} {c['unsat']:>5} | {c['unknown']:>7} "
              f"{c['timeout']:>7} | {c['wrong']:>5} | {c['tie']:>4}")
    total = sum(sum(c[k] for k in ('sat', 'unsat', 'unknown', 'timeout')) for c in rows.values())
    print(f"\nmean time per property: lipcert {seconds['lipcert'] / total:.3f} s, MILP {seconds['milp'] / total:.3f} s")


def decide(model, weights, rng, eps, case, c, seconds) -> None:  # type: ignore[no-untyped-def]
    k = SIZES[-1]
    centre = rng.uniform(-1, 1, SIZES[0])
    label = int(np.argmax(forward(weights, centre)))
    prop = parse_vnnlib(robustness_vnnlib(centre - eps, centre + eps, k, label))
    lo, hi = (np.array(v) for v in prop.box())
    t0 = time.perf_counter()
    worst = max(milp_max(weights, lo, hi, np.eye(k)[j] - np.eye(k)[label]) for j in range(k) if j != label)
    t1 = time.perf_counter()
    result = verify(model, prop, timeout=60, seed=case)
    seconds["milp"] += t1 - t0
    seconds["lipcert"] += time.perf_counter() - t1
    c[result.result] += 1
    if abs(worst) < 1e-4:
        c["tie"] += 1
        return
    c["violated" if worst > 0 else "safe"] += 1
    if (result.result == "unsat" and worst > 0) or (result.result == "sat" and worst < 0):
        c["wrong"] += 1


if __name__ == "__main__":
    main()
