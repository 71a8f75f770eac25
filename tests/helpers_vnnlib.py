"""Small ONNX networks and VNN-LIB text for the verify tests, and an exact MILP oracle (scipy's HiGHS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper


def mlp_onnx(path: Path, weights: list[tuple[np.ndarray, np.ndarray]], opset: int = 13) -> Path:
    """An ONNX ReLU network written by hand: Gemm (transB=1), Relu, …, Gemm; input (1, n)."""
    nodes, inits, prev = [], [], "X"
    for i, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"B{i}")]
        out = "Y" if i == len(weights) - 1 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [out], name=f"gemm{i}", transB=1))
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    n, k = weights[0][0].shape[1], weights[-1][0].shape[0]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path.write_bytes(model.SerializeToString())
    return path


def random_weights(sizes: list[int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((o, i)) / np.sqrt(i), rng.standard_normal(o) * 0.1)
            for i, o in zip(sizes[:-1], sizes[1:])]


def declarations(n: int, k: int) -> str:
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(n)) + \
        "".join(f"(declare-const Y_{j} Real)\n" for j in range(k))


def box_text(lo: np.ndarray, hi: np.ndarray) -> str:
    return "".join(f"(assert (>= X_{i} {float(lo[i])!r}))\n(assert (<= X_{i} {float(hi[i])!r}))\n" for i in range(len(lo)))


def robustness_vnnlib(lo: np.ndarray, hi: np.ndarray, k: int, label: int) -> str:
    clauses = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(k) if j != label)
    return declarations(len(lo), k) + box_text(lo, hi) + f"(assert (or {clauses}))\n"


def milp_max(weights: list[tuple[np.ndarray, np.ndarray]], lo: np.ndarray, hi: np.ndarray, c: np.ndarray) -> float:
    """max of c·y over the box, exactly (big-M MILP with interval bounds), in float64."""
    n = len(lo)
    # variable layout: x, then per hidden layer (z, a, d)
    offsets, nvar, l_cur, u_cur = [], n, lo.astype(np.float64), hi.astype(np.float64)
    rows, lb_c, ub_c, integrality = [], [], [], [0] * n
    lbv, ubv = list(lo), list(hi)
    prev = list(range(n))
    for w, b in weights[:-1]:
        h = w.shape[0]
        wp, wn = np.maximum(w, 0), np.minimum(w, 0)
        zl, zu = wp @ l_cur + wn @ u_cur + b, wp @ u_cur + wn @ l_cur + b
        z, a, d = nvar, nvar + h, nvar + 2 * h
        nvar += 3 * h
        offsets.append((z, a, d, h, zl, zu, prev, w, b))
        lbv += list(zl) + [0.0] * h + [0.0] * h
        ubv += list(zu) + list(np.maximum(zu, 0)) + [1.0] * h
        integrality += [0] * (2 * h) + [1] * h
        prev = list(range(a, a + h))
        l_cur, u_cur = np.maximum(zl, 0), np.maximum(zu, 0)

    def row() -> np.ndarray:
        return np.zeros(nvar)

    for z, a, d, h, zl, zu, inputs, w, b in offsets:
        for i in range(h):
            r = row(); r[z + i] = 1; r[inputs] = -w[i]; rows.append(r); lb_c.append(b[i]); ub_c.append(b[i])
            r = row(); r[a + i] = 1; r[z + i] = -1; rows.append(r); lb_c.append(0); ub_c.append(np.inf)
            r = row(); r[a + i] = 1; r[z + i] = -1; r[d + i] = -zl[i]; rows.append(r); lb_c.append(-np.inf); ub_c.append(-zl[i])
            r = row(); r[a + i] = 1; r[d + i] = -max(zu[i], 0); rows.append(r); lb_c.append(-np.inf); ub_c.append(0)
    w_out, b_out = weights[-1]
    obj = row()
    obj[prev] = -(c @ w_out)
    res = milp(obj, constraints=LinearConstraint(np.array(rows), lb_c, ub_c) if rows else None,
               integrality=np.array(integrality), bounds=Bounds(lbv, ubv))
    assert res.success, res.message
    return float(-res.fun + c @ b_out)


def forward(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(weights):
        h = w @ h + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0)
    return h
