"""A differential fuzzer for the Lipschitz rules (certify.lipschitz.rules), used by tests/test_fuzz_rules.py.

For every op rule in the registry, :data:`CASES` holds a builder that draws a small block around
that op with random and adversarial argument values (every argument the op takes: thresholds,
orders, scales, divisors, repeat counts, modes, dtypes), and :func:`build` wraps it in a random
network ``head ∘ [residual/activation] ∘ block ∘ [activation] ∘ pre`` with random weights.

:func:`truth` computes lower bounds on the network's true Lipschitz constants in float64:

* exact Jacobians at many points of the input box (random, near kinks, and after gradient ascent on
  the Jacobian norm): σ_max(J) in L2 and max_i ‖J_i‖₁ in ℓ∞ for the logit vector, ‖J_i‖_q per
  logit and ‖J_i − J_j‖_q per pair (q the dual norm);
* difference quotients ‖f(x) − f(y)‖ / ‖x − y‖ between nearby points, which also see jumps
  (comparisons, casts, thresholds), compared with the bound plus the certified forward pass's own
  error allowance at the two points.

tests/test_fuzz_rules.py adds the end-to-end check: certify points with ``certificate="auto"``, then
attack every certified point inside its radius with a margin-loss PGD and random search.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from certify.checkpoints import LoadedModel, ModelMetadata
from certify.lipschitz.graph import GraphError, graphs
from certify.lipschitz.registry import op_key

A = torch.ops.aten
SHAPE = (1, 4, 4)  #: the model's input (in [0, 1])
C, H, W = 2, 4, 4  #: the block's input z, signed values of order 1
CLASSES = 3


class Block(nn.Module):
    """``f(self, z)`` with the tensors it needs as buffers (so ``.double()`` converts the float ones)."""

    def __init__(self, f: Callable[..., Any], desc: str, **tensors: torch.Tensor):
        super().__init__()
        self.f = f
        self.desc = desc
        for name, t in tensors.items():
            self.register_buffer(name, t)

    def forward(self, z: torch.Tensor) -> Any:
        return self.f(self, z)

    def extra_repr(self) -> str:
        return self.desc


class Net(nn.Module):
    """``head ∘ [residual/activation] ∘ block ∘ [activation] ∘ pre``.

    ``tight``: ``pre`` is 2x − 1 on two copies of the input and the head has an all-ones row and a
    one-hot row, so the analyser's bound of the whole net is close to the truth and a missed factor
    in the block's rule (a copy count, a slope) shows; otherwise both are random dense layers."""

    def __init__(self, block: Block, mode: str, alpha: float, act: str, gen: torch.Generator, tight: bool = False):
        super().__init__()
        self.tight = tight
        self.pre = nn.Linear(int(np.prod(SHAPE)), C * H * W)
        with torch.no_grad():
            self.pre.weight.copy_(torch.randn(C * H * W, int(np.prod(SHAPE)), generator=gen) / 4)
            self.pre.bias.copy_(torch.randn(C * H * W, generator=gen) * 0.5)
        self.block, self.mode, self.alpha, self.act = block, mode, alpha, act
        with torch.no_grad():
            out = self._body(torch.zeros(2, *SHAPE))
        n = out.shape[1]
        self.head = nn.Linear(n, CLASSES)
        with torch.no_grad():
            w = torch.randn(CLASSES, n, generator=gen) / math.sqrt(n)
            if tight:
                w[0] = 1.0
                w[2] = 0.0
                w[2, int(torch.randint(n, (1,), generator=gen))] = 1.0
            self.head.weight.copy_(w)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        if self.tight:
            z = x.repeat(1, C // SHAPE[0], 1, 1) * 2 - 1
        else:
            z = self.pre(x.flatten(1)).unflatten(1, (C, H, W))
        if self.act == "relu":
            z = torch.relu(z)
        elif self.act == "two-sided":
            z = torch.cat([torch.relu(z), torch.relu(-z)], dim=1)[:, ::2]
        out = self.block(z)
        if isinstance(out, (tuple, list)):
            out = torch.cat([o.reshape(o.shape[0], -1) for o in out], dim=1)
        out = out.to(torch.float32) if not out.is_floating_point() else out
        if self.mode == "residual" and out.shape == z.shape:
            out = out + self.alpha * z
        elif self.mode == "rsub" and out.shape == z.shape:
            out = self.alpha - out - z
        elif self.mode == "relu-after":
            out = torch.relu(out)
        return out.reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._body(x)
        # a no-op in the float32 net; in the float64 copy (truth) it undoes the block's own float32 casts
        return self.head(out.to(self.head.weight.dtype))


# --------------------------------------------------------------------------- random argument values


class Draw:
    """Random values, biased towards the edges that break rules (0, negatives, tiny, huge)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)

    def pick(self, *options: Any) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def scalar(self) -> float:
        return float(self.pick(0.0, 1.0, -1.0, 0.5, -0.5, 3.0, -3.0, 1e-3, 100.0, float(self.rng.normal())))

    def int(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def dim(self, ndim: int = 4, batch: float = 0.1) -> int:
        return 0 if self.rng.random() < batch else self.int(1, ndim - 1)

    def dims(self, ndim: int = 4, batch: float = 0.1) -> list[int]:
        pool = list(range(0 if self.rng.random() < batch else 1, ndim))
        k = self.int(1, len(pool))
        return sorted(int(d) for d in self.rng.choice(pool, size=k, replace=False))

    def bool(self) -> bool:
        return bool(self.rng.random() < 0.5)

    def tensor(self, *shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen) * scale

    def dtype(self) -> torch.dtype:
        if self.seed % 2 == 0:  # every other draw an exact cast (the net is float32), which must be verified
            return torch.float32
        return self.pick(torch.float32, torch.float64, torch.float32, torch.float64, torch.float16, torch.bfloat16,
                         torch.int32, torch.int64, torch.bool)

    def pads(self, n: int, neg: bool = True) -> list[int]:
        lo = -1 if neg else 0
        return [self.int(lo, 3) for _ in range(n)]


def B(f: Callable[..., Any], desc: str = "", **t: torch.Tensor) -> Block:
    return Block(f, desc, **t)


def _unary(op: Any) -> Callable[[Draw], Block]:
    return lambda d: B(lambda m, z: op(z), "")


def _two_var_other(d: Draw) -> tuple[Callable[[Any, torch.Tensor], torch.Tensor], str, dict[str, torch.Tensor]]:
    """A second operand: a constant (broadcast or not) or another function of the input."""
    kind = d.pick("const", "const-bcast", "flip", "scaled", "relu")
    if kind == "const":
        return (lambda m, z: m.o), kind, {"o": d.tensor(C, H, W)}
    if kind == "const-bcast":
        return (lambda m, z: m.o), kind, {"o": d.tensor(1, 1, W)}
    if kind == "flip":
        return (lambda m, z: z.flip(-1)), kind, {}
    if kind == "scaled":
        s = d.scalar()
        return (lambda m, z: z * s), f"{kind} {s}", {}
    return (lambda m, z: torch.relu(-z)), kind, {}


def _binary(op: Callable[..., torch.Tensor], kw: Callable[[Draw], dict[str, Any]] | None = None
            ) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        other, desc, t = _two_var_other(d)
        extra = kw(d) if kw else {}
        swap = d.bool()
        if swap:
            return B(lambda m, z: op(other(m, z), z, **extra), f"swap {desc} {extra}", **t)
        return B(lambda m, z: op(z, other(m, z), **extra), f"{desc} {extra}", **t)
    return build


def _split_back(parts: Any) -> torch.Tensor:
    parts = list(parts)
    return torch.cat([p.reshape(p.shape[0], -1) for p in reversed(parts)], dim=1)


def _conv_args(d: Draw, nd: int) -> dict[str, Any]:
    groups = d.pick(1, 1, 2)
    cout = groups * d.int(1, 2)
    k = [d.int(1, 3) for _ in range(nd)]
    return {"w": d.tensor(cout, C // groups, *k, scale=0.5), "b": d.tensor(cout), "groups": groups,
            "stride": [d.int(1, 2) for _ in range(nd)], "padding": [d.int(0, 2) for _ in range(nd)],
            "dilation": [d.int(1, 2) for _ in range(nd)]}


def _flat1d(z: torch.Tensor) -> torch.Tensor:
    return z.flatten(2)  # (B, C, 16)


def conv_case(kind: str) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        nd = 1 if "1d" in kind else 2
        a = _conv_args(d, nd)
        w, b = a.pop("w"), a.pop("b")
        s, p, dl, g = a["stride"], a["padding"], a["dilation"], a["groups"]
        bias = d.bool()
        tensors = {"w": w, "b": b}
        if kind == "conv1d.default":
            f = lambda m, z: A.conv1d.default(_flat1d(z), m.w, m.b if bias else None, s, p, dl, g)  # noqa: E731
        elif kind == "conv1d.padding":
            mode = d.pick("same", "valid")
            s2 = [1] if mode == "same" else s
            f = lambda m, z: A.conv1d.padding(_flat1d(z), m.w, m.b if bias else None, s2, mode, dl, g)  # noqa: E731
        elif kind == "conv2d.default":
            f = lambda m, z: A.conv2d.default(z, m.w, m.b if bias else None, s, p, dl, g)  # noqa: E731
        elif kind == "conv2d.padding":
            mode = d.pick("same", "valid")
            s2 = [1, 1] if mode == "same" else s
            f = lambda m, z: A.conv2d.padding(z, m.w, m.b if bias else None, s2, mode, dl, g)  # noqa: E731
        else:
            transposed = d.rng.random() < 0.3
            if transposed:
                tensors["w"] = d.tensor(C, d.int(1, 2), 2, 2, scale=0.5)
                g = 1
            out_pad = [0, 0]
            if kind == "convolution.default":
                f = lambda m, z: A.convolution.default(z, m.w, m.b if bias else None, s, p, dl, transposed,  # noqa: E731
                                                       out_pad, g)
            else:
                f = lambda m, z: A._convolution.default(z, m.w, m.b if bias else None, s, p, dl,  # noqa: E731
                                                        transposed, out_pad, g, False, False, True, True)
        return B(f, f"{kind} s={s} p={p} d={dl} g={g} bias={bias}", **tensors)
    return build


def _pool_kernel(d: Draw, nd: int) -> dict[str, Any]:
    k = [d.int(1, 3) for _ in range(nd)]
    return {"k": k, "s": d.pick([], [d.int(1, 3) for _ in range(nd)]),
            "p": [d.int(0, k_ // 2) for k_ in k], "ceil": d.bool()}


def avg_pool(nd: int) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        a = _pool_kernel(d, nd)
        cip = d.bool()
        div = d.pick(None, None, 1, 2, -1, 9)
        if nd == 1:
            f = lambda m, z: A.avg_pool1d.default(_flat1d(z), a["k"], a["s"], a["p"], a["ceil"], cip)  # noqa: E731
            return B(f, f"{a} cip={cip}")
        f = lambda m, z: A.avg_pool2d.default(z, a["k"], a["s"], a["p"], a["ceil"], cip, div)  # noqa: E731
        return B(f, f"{a} cip={cip} div={div}")
    return build


def max_pool(op: Any, nd: int, indices: bool) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        a = _pool_kernel(d, nd)
        dil = [d.int(1, 2) for _ in range(nd)]
        src = _flat1d if nd == 1 else (lambda z: z)
        if indices:
            f = lambda m, z: op(src(z), a["k"], a["s"], a["p"], dil, a["ceil"])[0]  # noqa: E731
        else:
            f = lambda m, z: op(src(z), a["k"], a["s"], a["p"], dil, a["ceil"])  # noqa: E731
        return B(f, f"{a} dil={dil}")
    return build


def _bn(kind: str) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        t = {"w": d.tensor(C), "b": d.tensor(C), "rm": d.tensor(C, scale=d.pick(1.0, 1e5)),
             "rv": d.tensor(C).abs() * d.pick(1.0, 1e-6, 0.0) + d.pick(0.0, 1e-3, 1.0)}
        eps = d.pick(1e-5, 0.0, 1e-1, -1e-3)
        training = d.rng.random() < 0.2
        weight = d.bool()
        if kind == "batch_norm":
            f = lambda m, z: A.batch_norm.default(z, m.w if weight else None, m.b, m.rm, m.rv, training, 0.1,  # noqa: E731
                                                  eps, False)
        elif kind == "native":
            f = lambda m, z: A.native_batch_norm.default(z, m.w if weight else None, m.b, m.rm, m.rv,  # noqa: E731
                                                         training, 0.1, eps)[0]
        else:
            f = lambda m, z: A._native_batch_norm_legit_no_training.default(  # noqa: E731
                z, m.w if weight else None, m.b, m.rm, m.rv, 0.1, eps)[0]
        return B(f, f"eps={eps} training={training}", **t)
    return build


def _pad_modes(d: Draw) -> str:
    return d.pick("constant", "reflect", "replicate", "circular")


def _reduce_dims(d: Draw) -> tuple[list[int], bool]:
    return d.dims(4), d.bool()


def _vector_norm(d: Draw) -> Block:
    p = d.pick(2.0, 1.0, math.inf, -math.inf, 0.5, 0.0, 3.0, -1.0)
    dims, keep = _reduce_dims(d)
    return B(lambda m, z: A.linalg_vector_norm.default(z, p, dims, keep), f"ord={p} dims={dims}")


def _norm_scalaropt(d: Draw) -> Block:
    p = d.pick(2.0, 1.0, math.inf, 0.5, 0.0, 3.0, None)
    dims, keep = _reduce_dims(d)
    return B(lambda m, z: A.norm.ScalarOpt_dim(z, p, dims, keep), f"p={p} dims={dims}")


def _cdist(forward: bool) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        p = d.pick(2.0, 1.0, math.inf, 0.5, 0.0, 3.0)
        t = {"o": d.tensor(*d.pick((3, W), (3, W), (1, 3, W)))}
        if forward:
            f = lambda m, z: A._cdist_forward.default(z.flatten(1, 2), m.o, p, None)  # noqa: E731
        else:
            f = lambda m, z: A.cdist.default(z.flatten(1, 2), m.o, p, None)  # noqa: E731
        return B(f, f"p={p}", **t)
    return build


def _softplus(d: Draw) -> Block:
    beta, thr = d.pick(1.0, 2.0, 0.5, -1.0, 0.0), d.pick(20.0, 0.5, 0.0, -1.0, 2.0)
    return B(lambda m, z: A.softplus.default(z, beta, thr), f"beta={beta} threshold={thr}")


def _elu(d: Draw) -> Block:
    alpha, scale, iscale = d.pick(1.0, 2.0, -1.0, 0.0), d.pick(1.0, 2.0, -1.0), d.pick(1.0, 3.0, -1.0, 0.0)
    return B(lambda m, z: A.elu.default(z, alpha, scale, iscale), f"alpha={alpha} scale={scale} is={iscale}")


def _where(d: Draw) -> Block:
    cond = d.pick("const", "compare")
    other, desc, t = _two_var_other(d)
    if cond == "const":
        t["c"] = torch.rand(C, H, W, generator=d.gen) < 0.5
        return B(lambda m, z: A.where.self(m.c, z, other(m, z)), f"const {desc}", **t)
    thr = d.scalar()
    return B(lambda m, z: A.where.self(z > thr, z + 10, other(m, z)), f"z>{thr} {desc}", **t)


def _clamp_tensor(d: Draw) -> Block:
    lo = d.pick((1, 1, 1), (C, H, W), (H, 1), (1,))
    t = {"lo": d.tensor(*lo), "hi": d.tensor(*lo) + 2.0}
    use_hi = d.bool()
    return B(lambda m, z: A.clamp.Tensor(z, m.lo, m.hi if use_hi else None), f"lo={lo} hi={use_hi}", **t)


def _upsample(kind: str) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        size = d.int(2, 8)
        scale = float(d.pick(2.0, 0.5, 1.5, 3.0))
        ac = d.bool()
        if kind == "nearest1d":
            return B(lambda m, z: A.upsample_nearest1d.default(_flat1d(z), [size * 4], None), f"{size}")
        if kind == "nearest1d.vec":
            return B(lambda m, z: A.upsample_nearest1d.vec(_flat1d(z), None, [scale]), f"{scale}")
        if kind == "nearest2d":
            return B(lambda m, z: A.upsample_nearest2d.default(z, [size, size + 1], None, None), f"{size}")
        if kind == "nearest2d.vec":
            return B(lambda m, z: A.upsample_nearest2d.vec(z, None, [scale, scale]), f"{scale}")
        if kind == "bilinear2d":
            return B(lambda m, z: A.upsample_bilinear2d.default(z, [size, size + 1], ac, None, None),
                     f"{size} ac={ac}")
        return B(lambda m, z: A.upsample_bilinear2d.vec(z, None, ac, [scale, scale]), f"{scale} ac={ac}")
    return build


def _index_select(d: Draw) -> Block:
    dim = d.dim(4, batch=0.05)
    n = (2, C, H, W)[dim]
    t = {"i": torch.from_numpy(d.rng.integers(0, n, size=d.int(1, 6)))}
    return B(lambda m, z: A.index_select.default(z, dim, m.i), f"dim={dim} i={t['i'].tolist()}", **t)


def _repeat_interleave_tensor(d: Draw) -> Block:
    dim = d.int(1, 3)
    n = (2, C, H, W)[dim]
    t = {"r": torch.from_numpy(d.rng.integers(0, 4, size=n))}
    return B(lambda m, z: A.repeat_interleave.self_Tensor(z, m.r, dim), f"dim={dim} r={t['r'].tolist()}", **t)


def _to_dtype(op: str) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        dt = d.dtype()
        if op == "to.dtype":
            return B(lambda m, z: A.to.dtype(z, dt), str(dt))
        if op == "to.device":
            return B(lambda m, z: A.to.device(z, z.device, dt), str(dt))
        if op == "to.dtype_layout":
            return B(lambda m, z: A.to.dtype_layout(z, dtype=dt, layout=torch.strided), str(dt))
        if op == "type_as":
            return B(lambda m, z: A.type_as.default(z, m.o), str(dt), o=torch.zeros(1, dtype=dt))
        return B(lambda m, z: A._to_copy.default(z, dtype=dt), str(dt))
    return build


def _dropout(op: Any, native: bool = False) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        p, train = d.pick(0.0, 0.5, 0.9), d.rng.random() < 0.2
        if native:
            return B(lambda m, z: op(z, p, train)[0], f"p={p} train={train}")
        return B(lambda m, z: op(z, p, train), f"p={p} train={train}")
    return build


def _div_mode(d: Draw) -> Block:
    mode = d.pick(None, None, "trunc", "floor")
    t = {"o": d.tensor(C, H, W).abs() + d.pick(0.0, 0.5)}
    return B(lambda m, z: A.div.Tensor_mode(z, m.o, rounding_mode=mode), f"mode={mode}", **t)


def _div_tensor(d: Draw) -> Block:
    kind = d.pick("const", "const0", "var-den", "scalar-t")
    if kind == "const":
        return B(lambda m, z: A.div.Tensor(z, m.o), kind, o=d.tensor(C, H, W) + 3.0)
    if kind == "const0":
        return B(lambda m, z: A.div.Tensor(z, m.o), kind, o=torch.zeros(C, H, W))
    if kind == "var-den":
        return B(lambda m, z: A.div.Tensor(m.o, z * z + 1.0), kind, o=d.tensor(C, H, W))
    s = d.scalar()
    return B(lambda m, z: A.div.Tensor(z, s), f"{kind} {s}")


def _mul_tensor(d: Draw) -> Block:
    kind = d.pick("const", "var-var", "scalar")
    if kind == "const":
        return B(lambda m, z: A.mul.Tensor(m.o, z), kind, o=d.tensor(C, H, W) * d.pick(1.0, 100.0))
    if kind == "var-var":
        return B(lambda m, z: A.mul.Tensor(z, z.flip(-1)), kind)
    s = d.scalar()
    return B(lambda m, z: A.mul.Tensor(z, s), f"{kind} {s}")


def _pow(d: Draw) -> Block:
    p = d.pick(2.0, 3.0, 1.0, 0.5, -1.0, 2)
    return B(lambda m, z: A.pow.Tensor_Scalar(z, p), f"p={p}")


def _sqrt(d: Draw) -> Block:
    c = d.pick(0.0, 1e-3, 1.0)
    kind = d.pick("sumsq", "abs")
    if kind == "sumsq":
        return B(lambda m, z: A.sqrt.default(A.sum.dim_IntList(z * z, [1], True) + c), f"{kind} c={c}")
    return B(lambda m, z: A.sqrt.default(z.abs() + c), f"{kind} c={c}")


def _matmul(op: str) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        k = d.int(1, 5)
        t = {"w": d.tensor(W, k, scale=0.5), "b": d.tensor(k)}
        if op == "matmul":
            kind = d.pick("right", "left-var")
            if kind == "right":
                return B(lambda m, z: A.matmul.default(z, m.w), kind, **t)
            return B(lambda m, z: A.matmul.default(z, z.transpose(-1, -2)), kind)
        if op == "mm":
            return B(lambda m, z: A.mm.default(z.flatten(1)[:, :W], m.w), "", **t)
        if op == "addmm":
            beta, alpha = d.pick(1.0, 0.5, 2.0), d.pick(1.0, -2.0, 0.5)
            return B(lambda m, z: A.addmm.default(m.b, z.flatten(1)[:, :W], m.w, beta=beta, alpha=alpha),
                     f"beta={beta} alpha={alpha}", **t)
        t = {"w": d.tensor(k, C * H * W, scale=0.2), "b": d.tensor(k)}
        bias = d.bool()
        return B(lambda m, z: A.linear.default(z.flatten(1), m.w, m.b if bias else None), f"bias={bias}", **t)
    return build


def _arith(op: Any, alpha: bool, scalar: bool) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        kw = {"alpha": d.pick(1.0, 2.0, -1.0, 0.0)} if alpha else {}
        if scalar:
            s = d.scalar()
            return B(lambda m, z: op(z, s, **kw), f"{s} {kw}")
        other, desc, t = _two_var_other(d)
        if d.bool():
            return B(lambda m, z: op(other(m, z), z, **kw), f"swap {desc} {kw}", **t)
        return B(lambda m, z: op(z, other(m, z), **kw), f"{desc} {kw}", **t)
    return build


def _cat(d: Draw) -> Block:
    dim = d.dim(4, batch=0.05)
    parts = [d.pick("z", "relu", "relu-neg", "3relu", "relu-1-z", "flip", "neg") for _ in range(d.int(1, 3))]

    def part(kind: str, z: torch.Tensor) -> torch.Tensor:
        return {"z": lambda: z, "relu": lambda: torch.relu(z), "relu-neg": lambda: torch.relu(-z),
                "3relu": lambda: 3 * torch.relu(z), "relu-1-z": lambda: torch.relu(1 - z),
                "flip": lambda: z.flip(-1), "neg": lambda: -z}[kind]()
    return B(lambda m, z: A.cat.default([part(k, z) for k in parts], dim), f"dim={dim} {parts}")


def _stack(d: Draw) -> Block:
    dim = d.int(1, 4) if d.rng.random() > 0.05 else 0
    s = d.scalar()
    return B(lambda m, z: A.stack.default([z, torch.relu(z) * s], dim), f"dim={dim} s={s}")


def _reflect(op: Any, nd: int) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        pads = [d.int(0, 3) for _ in range(2 * nd)]
        src = {1: _flat1d, 2: lambda z: z, 3: lambda z: z.unsqueeze(1)}[nd]
        return B(lambda m, z: op(src(z), pads), f"pads={pads}")
    return build


def _pad(d: Draw) -> Block:
    mode = _pad_modes(d)
    n = d.pick(2, 4)
    pads = d.pads(n, neg=(mode == "constant"))
    if mode != "constant":
        pads = [min(p, 3) for p in pads]
    value = d.pick(None, 0.0, 5.0) if mode == "constant" else None
    return B(lambda m, z: A.pad.default(z, pads, mode, value), f"{mode} pads={pads} value={value}")


def _activation_kw(op: Any, **choices: tuple[Any, ...]) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        kw = {k: d.pick(*v) for k, v in choices.items()}
        return B(lambda m, z: op(z, **kw), f"{kw}")
    return build


def _prelu(op: Any) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        n = d.pick(1, C)
        t = {"w": d.tensor(n) * d.pick(0.25, 2.0, 1.0)}
        if n == C and op is A._prelu_kernel.default:
            return B(lambda m, z: op(z, m.w.reshape(C, 1, 1)), "per-channel", **t)
        return B(lambda m, z: op(z, m.w), f"n={n}", **t)
    return build


def _reduction(op: Any) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        dims, keep = _reduce_dims(d)
        return B(lambda m, z: op(z, dims, keep), f"dims={dims} keep={keep}")
    return build


def _max_dim(op: Any) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        dim, keep = d.dim(4), d.bool()
        return B(lambda m, z: op(z, dim, keep)[0], f"dim={dim} keep={keep}")
    return build


def _mean_dim(d: Draw) -> Block:
    dims, keep = _reduce_dims(d)
    dtype = d.pick(None, None, torch.float64, torch.float16)
    return B(lambda m, z: A.mean.dim(z, dims, keep, dtype=dtype), f"dims={dims} keep={keep} dtype={dtype}")


def _sum_dim(d: Draw) -> Block:
    dims, keep = _reduce_dims(d)
    dtype = d.pick(None, None, torch.float64, torch.int32)
    return B(lambda m, z: A.sum.dim_IntList(z, dims, keep, dtype=dtype), f"dims={dims} keep={keep} dtype={dtype}")


def _adaptive(op: Any, nd: int, indices: bool = False) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        size = [d.int(1, 6) for _ in range(nd)]
        src = _flat1d if nd == 1 else (lambda z: z)
        if indices:
            return B(lambda m, z: op(src(z), size)[0], f"size={size}")
        return B(lambda m, z: op(src(z), size), f"size={size}")
    return build


def _split(op: str) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        dim = d.int(1, 3)
        n = (2, C, H, W)[dim]
        if op == "split":
            size = d.int(1, n)
            return B(lambda m, z: _split_back(A.split.Tensor(z, size, dim)), f"{size} dim={dim}")
        if op == "split_with_sizes":
            cut = d.int(0, n)
            return B(lambda m, z: _split_back(A.split_with_sizes.default(z, [cut, n - cut], dim)), f"{cut} dim={dim}")
        if op == "chunk":
            k = d.int(1, n + 1)
            return B(lambda m, z: _split_back(A.chunk.default(z, k, dim)), f"{k} dim={dim}")
        if op == "tensor_split.sections":
            k = d.int(1, n + 1)
            return B(lambda m, z: _split_back(A.tensor_split.sections(z, k, dim)), f"{k} dim={dim}")
        if op == "tensor_split.indices":
            idx = sorted(d.int(0, n) for _ in range(2))
            return B(lambda m, z: _split_back(A.tensor_split.indices(z, idx, dim)), f"{idx} dim={dim}")
        return B(lambda m, z: A.stack.default(list(A.unbind.int(z, dim))[::-1], dim), f"dim={dim}")
    return build


def _getitem(d: Draw) -> Block:
    i = d.int(0, 1)
    return B(lambda m, z: A.split.Tensor(z, 2, 2)[i], f"piece {i}")


def _slice(d: Draw) -> Block:
    dim = d.dim(4, batch=0.05)
    start, end, step = d.pick(None, 0, 1, -2), d.pick(None, 3, -1, 100), d.int(1, 3)
    return B(lambda m, z: A.slice.Tensor(z, dim, start, end, step), f"dim={dim} {start}:{end}:{step}")


def _squeeze(kind: str) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        at = d.int(1, 4)
        if kind == "default":
            return B(lambda m, z: A.squeeze.default(z.unsqueeze(at)), f"at={at}")
        if kind == "dim":
            dim = d.pick(at, 1)
            return B(lambda m, z: A.squeeze.dim(z.unsqueeze(at), dim), f"at={at} dim={dim}")
        return B(lambda m, z: A.squeeze.dims(z.unsqueeze(at), [at, 0]), f"at={at}")
    return build


def _cos_like(op: Any) -> Callable[[Draw], Block]:
    def build(d: Draw) -> Block:
        s = d.pick(1.0, 10.0)
        return B(lambda m, z: op(z * s), f"s={s}")
    return build


#: op key → builder.  Must be exactly the rule registry (tests/test_fuzz_rules.py checks it).
CASES: dict[str, Callable[[Draw], Block]] = {
    # shape
    "aten._unsafe_view.default": lambda d: B(lambda m, z: A._unsafe_view.default(z, [z.shape[0], -1, W])),
    "aten.alias.default": _unary(A.alias.default),
    "aten.clone.default": _unary(A.clone.default),
    "aten.contiguous.default": _unary(lambda z: A.contiguous.default(z.transpose(2, 3))),
    "aten.detach.default": _unary(A.detach.default),
    "aten.lift_fresh_copy.default": _unary(A.lift_fresh_copy.default),
    "aten.expand.default": lambda d: (lambda c: B(lambda m, z: A.expand.default(z[:, :1], [-1, c, H, W]), f"c={c}"))(
        d.int(1, 4)),
    "aten.flatten.using_ints": lambda d: (lambda s, e: B(lambda m, z: A.flatten.using_ints(z, s, e)
                                                         .reshape(z.shape[0], -1), f"{s}..{e}"))(
        *sorted((d.dim(4, 0.1), d.int(1, 3)))),
    "aten.flip.default": lambda d: (lambda ds: B(lambda m, z: A.flip.default(z, ds), f"{ds}"))(d.dims(4, 0.05)),
    "aten.index_select.default": _index_select,
    "aten.narrow.default": lambda d: (lambda dim, s: B(lambda m, z: A.narrow.default(z, dim, s, 2), f"{dim} {s}"))(
        d.int(1, 3), d.int(0, 0)),
    "aten.permute.default": lambda d: (lambda p: B(lambda m, z: A.permute.default(z, p).reshape(z.shape[0], -1),
                                                   f"{p}"))([0] + [int(i) for i in d.rng.permutation([1, 2, 3])]),
    "aten.repeat.default": lambda d: (lambda r: B(lambda m, z: A.repeat.default(z, r), f"{r}"))(
        [1, d.int(1, 3), d.int(1, 2), d.int(1, 2)]),
    "aten.repeat_interleave.self_int": lambda d: (lambda r, dim: B(
        lambda m, z: A.repeat_interleave.self_int(z, r, dim), f"{r} dim={dim}"))(d.int(1, 4), d.int(1, 3)),
    "aten.repeat_interleave.self_Tensor": _repeat_interleave_tensor,
    "aten.reshape.default": lambda d: B(lambda m, z: A.reshape.default(z, [z.shape[0], C * H, W])),
    "aten.view.default": lambda d: B(lambda m, z: A.view.default(z, [z.shape[0], -1])),
    "aten.roll.default": lambda d: (lambda sh, dims: B(lambda m, z: A.roll.default(z, sh, dims), f"{sh} {dims}"))(
        [d.int(-3, 3)], [d.dim(4, 0.05)]),
    "aten.select.int": lambda d: (lambda dim: B(lambda m, z: A.select.int(z, dim, -1), f"dim={dim}"))(d.int(1, 3)),
    "aten.slice.Tensor": _slice,
    "aten.split.Tensor": _split("split"),
    "aten.split_with_sizes.default": _split("split_with_sizes"),
    "aten.chunk.default": _split("chunk"),
    "aten.tensor_split.indices": _split("tensor_split.indices"),
    "aten.tensor_split.sections": _split("tensor_split.sections"),
    "aten.unbind.int": _split("unbind"),
    "getitem": _getitem,
    "aten.squeeze.default": _squeeze("default"),
    "aten.squeeze.dim": _squeeze("dim"),
    "aten.squeeze.dims": _squeeze("dims"),
    "aten.unsqueeze.default": lambda d: (lambda at: B(lambda m, z: A.unsqueeze.default(z, at), f"{at}"))(
        d.int(0, 4)),
    "aten.stack.default": _stack,
    "aten.cat.default": _cat,
    "aten.t.default": lambda d: B(lambda m, z: A.t.default(A.t.default(z.flatten(1)))),
    "aten.transpose.int": lambda d: (lambda a, b: B(lambda m, z: A.transpose.int(z, a, b), f"{a} {b}"))(
        d.dim(4, 0.05), d.int(1, 3)),
    "aten.unflatten.int": lambda d: B(lambda m, z: A.unflatten.int(z.flatten(1), 1, [C * H, W])),
    "aten.to.device": _to_dtype("to.device"),
    "aten.to.dtype": _to_dtype("to.dtype"),
    "aten.to.dtype_layout": _to_dtype("to.dtype_layout"),
    "aten._to_copy.default": _to_dtype("_to_copy"),
    "aten.type_as.default": _to_dtype("type_as"),
    "aten.constant_pad_nd.default": lambda d: (lambda p, v: B(lambda m, z: A.constant_pad_nd.default(z, p, v),
                                                              f"{p} value={v}"))(d.pads(4), d.pick(0.0, 3.0)),
    "aten.pad.default": _pad,
    "aten.reflection_pad1d.default": _reflect(A.reflection_pad1d.default, 1),
    "aten.reflection_pad2d.default": _reflect(A.reflection_pad2d.default, 2),
    "aten.reflection_pad3d.default": _reflect(A.reflection_pad3d.default, 3),
    "aten.replication_pad1d.default": _reflect(A.replication_pad1d.default, 1),
    "aten.replication_pad2d.default": _reflect(A.replication_pad2d.default, 2),
    "aten.replication_pad3d.default": _reflect(A.replication_pad3d.default, 3),
    "aten.dropout.default": _dropout(A.dropout.default),
    "aten.alpha_dropout.default": _dropout(A.alpha_dropout.default),
    "aten.feature_dropout.default": _dropout(A.feature_dropout.default),
    "aten.native_dropout.default": _dropout(A.native_dropout.default, native=True),
    # elementwise
    "aten.relu.default": _unary(A.relu.default),
    "aten.relu6.default": _unary(A.relu6.default),
    "aten.abs.default": _unary(A.abs.default),
    "aten.neg.default": _unary(A.neg.default),
    "aten.sigmoid.default": _unary(A.sigmoid.default),
    "aten.tanh.default": _unary(A.tanh.default),
    "aten.atan.default": _unary(A.atan.default),
    "aten.sin.default": _cos_like(A.sin.default),
    "aten.cos.default": _cos_like(A.cos.default),
    "aten.erf.default": _unary(A.erf.default),
    "aten.silu.default": _unary(A.silu.default),
    "aten.mish.default": _unary(A.mish.default),
    "aten.selu.default": _unary(A.selu.default),
    "aten.log_sigmoid.default": _unary(A.log_sigmoid.default),
    "aten.hardsigmoid.default": _unary(A.hardsigmoid.default),
    "aten.hardswish.default": _unary(A.hardswish.default),
    "aten.square.default": lambda d: (lambda dims: B(lambda m, z: A.sqrt.default(
        A.sum.dim_IntList(A.square.default(z), dims, True) + 1e-3), f"dims={dims}"))(d.dims(4, 0.05)),
    "aten.sqrt.default": _sqrt,
    "aten.pow.Tensor_Scalar": _pow,
    "aten.celu.default": _activation_kw(A.celu.default, alpha=(1.0, 0.5, 3.0, -1.0, 0.0)),
    "aten.elu.default": _elu,
    "aten.gelu.default": _activation_kw(A.gelu.default, approximate=("none", "tanh")),
    "aten.hardtanh.default": _activation_kw(A.hardtanh.default, min_val=(-1.0, 0.5, 2.0), max_val=(1.0, -2.0, 3.0)),
    "aten.leaky_relu.default": _activation_kw(A.leaky_relu.default, negative_slope=(0.01, 0.5, -2.0, 3.0, -0.5)),
    "aten.softplus.default": _softplus,
    "aten.prelu.default": _prelu(A.prelu.default),
    "aten._prelu_kernel.default": _prelu(A._prelu_kernel.default),
    "aten.clamp.default": _activation_kw(A.clamp.default, min=(None, -0.5, 1.0), max=(None, 0.5, -1.0, 2.0)),
    "aten.clamp.Tensor": _clamp_tensor,
    "aten.clamp_min.default": _activation_kw(A.clamp_min.default, min=(-0.5, 0.0, 1.0)),
    "aten.clamp_max.default": _activation_kw(A.clamp_max.default, max=(0.5, 0.0, -1.0)),
    "aten.fmax.default": _binary(A.fmax.default),
    "aten.fmin.default": _binary(A.fmin.default),
    "aten.maximum.default": _binary(A.maximum.default),
    "aten.minimum.default": _binary(A.minimum.default),
    "aten.max.other": _binary(A.max.other),
    "aten.min.other": _binary(A.min.other),
    "aten.where.self": _where,
    # arithmetic
    "aten.add.Tensor": _arith(A.add.Tensor, alpha=True, scalar=False),
    "aten.add.Scalar": _arith(A.add.Scalar, alpha=True, scalar=True),
    "aten.sub.Tensor": _arith(A.sub.Tensor, alpha=True, scalar=False),
    "aten.sub.Scalar": _arith(A.sub.Scalar, alpha=True, scalar=True),
    "aten.rsub.Tensor": _arith(A.rsub.Tensor, alpha=True, scalar=False),
    "aten.rsub.Scalar": _arith(A.rsub.Scalar, alpha=True, scalar=True),
    "aten.mul.Tensor": _mul_tensor,
    "aten.mul.Scalar": _arith(A.mul.Scalar, alpha=False, scalar=True),
    "aten.div.Tensor": _div_tensor,
    "aten.div.Scalar": _arith(A.div.Scalar, alpha=False, scalar=True),
    "aten.div.Tensor_mode": _div_mode,
    # linear
    "aten.linear.default": _matmul("linear"),
    "aten.addmm.default": _matmul("addmm"),
    "aten.mm.default": _matmul("mm"),
    "aten.matmul.default": _matmul("matmul"),
    "aten.conv1d.default": conv_case("conv1d.default"),
    "aten.conv1d.padding": conv_case("conv1d.padding"),
    "aten.conv2d.default": conv_case("conv2d.default"),
    "aten.conv2d.padding": conv_case("conv2d.padding"),
    "aten.convolution.default": conv_case("convolution.default"),
    "aten._convolution.default": conv_case("_convolution.default"),
    # pooling
    "aten.avg_pool1d.default": avg_pool(1),
    "aten.avg_pool2d.default": avg_pool(2),
    "aten.max_pool1d.default": max_pool(A.max_pool1d.default, 1, False),
    "aten.max_pool2d.default": max_pool(A.max_pool2d.default, 2, False),
    "aten.max_pool1d_with_indices.default": max_pool(A.max_pool1d_with_indices.default, 1, True),
    "aten.max_pool2d_with_indices.default": max_pool(A.max_pool2d_with_indices.default, 2, True),
    "aten.adaptive_avg_pool1d.default": _adaptive(A.adaptive_avg_pool1d.default, 1),
    "aten.adaptive_avg_pool2d.default": _adaptive(A.adaptive_avg_pool2d.default, 2),
    "aten._adaptive_avg_pool2d.default": _adaptive(A._adaptive_avg_pool2d.default, 2),
    "aten.adaptive_max_pool1d.default": _adaptive(A.adaptive_max_pool1d.default, 1, indices=True),
    "aten.adaptive_max_pool2d.default": _adaptive(A.adaptive_max_pool2d.default, 2, indices=True),
    "aten.upsample_nearest1d.default": _upsample("nearest1d"),
    "aten.upsample_nearest1d.vec": _upsample("nearest1d.vec"),
    "aten.upsample_nearest2d.default": _upsample("nearest2d"),
    "aten.upsample_nearest2d.vec": _upsample("nearest2d.vec"),
    "aten.upsample_bilinear2d.default": _upsample("bilinear2d"),
    "aten.upsample_bilinear2d.vec": _upsample("bilinear2d.vec"),
    # reductions
    "aten.sum.default": _unary(lambda z: A.sum.default(z).reshape(1, 1).expand(z.shape[0], 1)),
    "aten.sum.dim_IntList": _sum_dim,
    "aten.mean.default": _unary(lambda z: A.mean.default(z).reshape(1, 1).expand(z.shape[0], 1)),
    "aten.mean.dim": _mean_dim,
    "aten.amax.default": _reduction(A.amax.default),
    "aten.amin.default": _reduction(A.amin.default),
    "aten.max.default": _unary(lambda z: A.max.default(z).reshape(1, 1).expand(z.shape[0], 1)),
    "aten.min.default": _unary(lambda z: A.min.default(z).reshape(1, 1).expand(z.shape[0], 1)),
    "aten.max.dim": _max_dim(A.max.dim),
    "aten.min.dim": _max_dim(A.min.dim),
    "aten.logsumexp.default": _reduction(A.logsumexp.default),
    "aten.linalg_vector_norm.default": _vector_norm,
    "aten.norm.ScalarOpt_dim": _norm_scalaropt,
    "aten.cdist.default": _cdist(False),
    "aten._cdist_forward.default": _cdist(True),
    # normalization
    "aten.batch_norm.default": _bn("batch_norm"),
    "aten.native_batch_norm.default": _bn("native"),
    "aten._native_batch_norm_legit_no_training.default": _bn("legit"),
}


# --------------------------------------------------------------------------- one trial


@dataclass
class Trial:
    op: str
    seed: int
    net: Net
    desc: str
    exported: Any = None  #: the torch.export program (dynamic batch), exported once for every check

    def __repr__(self) -> str:
        n = self.net
        return f"{self.op} seed={self.seed} [{self.desc}] mode={n.mode} alpha={n.alpha} act={n.act} tight={n.tight}"


def build(op: str, seed: int) -> Trial | None:
    """A random network around ``op``; None when the drawn arguments make torch itself reject it."""
    d = Draw(seed)
    block = CASES[op](d)
    mode = d.pick("plain", "plain", "residual", "rsub", "relu-after")
    alpha = float(d.pick(-1.0, -3.0, 1.0, 0.5, 3.0))
    act = d.pick("none", "none", "relu", "two-sided")
    tight = bool(d.rng.random() < 0.4)
    try:
        net = Net(block, mode, alpha, act, d.gen, tight).eval()
        with torch.no_grad():
            out = net(torch.rand(3, *SHAPE, generator=d.gen))
    except Exception:  # noqa: BLE001 - torch refuses the drawn arguments: nothing to analyse
        return None
    if out.shape != (3, CLASSES):
        return None
    try:
        ep = torch.export.export(net, (torch.zeros(3, *SHAPE),),
                                 dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    except Exception:  # noqa: BLE001 - specialises on the batch size: lipcert exports per size itself
        ep = None
    return Trial(op, seed, net, block.desc, ep)


def loaded(net: nn.Module, exported: Any = None) -> LoadedModel:
    return LoadedModel(module=net, format="nn.Module", path="<fuzz>", sha256="0",
                       metadata=ModelMetadata(input_shape=SHAPE), exported=exported)


def graph_ops(trial: Trial) -> set[str]:
    """The op keys of the graphs lipcert analyses for this trial (none when it cannot export it)."""
    try:
        found = graphs(loaded(trial.net, trial.exported), SHAPE)
    except GraphError:
        return set()
    return {op_key(n.target) for g in found for n in g.program.graph.nodes if n.op == "call_function"}


# --------------------------------------------------------------------------- the truth


@dataclass(frozen=True)
class Truth:
    """Lower bounds on the true constants (float64): global, per logit and per pair."""

    glob: float
    per_logit: np.ndarray
    pairs: np.ndarray


def _jac_norms(j: torch.Tensor, norm: str) -> tuple[float, np.ndarray, np.ndarray]:
    q = 2 if norm == "l2" else 1
    per = torch.linalg.vector_norm(j, ord=q, dim=1)
    pairs = torch.linalg.vector_norm(j.unsqueeze(1) - j.unsqueeze(0), ord=q, dim=2)
    glob = torch.linalg.matrix_norm(j, ord=2) if norm == "l2" else per.max()
    return float(glob), per.numpy(), pairs.numpy()


def truth(net: nn.Module, norm: str, seed: int, points: int = 24, ascent: int = 8) -> Truth:
    """Exact float64 Jacobian norms at random points of the box, refined by gradient ascent (for
    smooth graphs; piecewise-linear ones are covered by the random points)."""
    f64 = copy.deepcopy(net).double().eval()
    gen = torch.Generator().manual_seed(seed)
    d = int(np.prod(SHAPE))
    xs = torch.rand(points, d, generator=gen, dtype=torch.float64)

    def fn(v: torch.Tensor) -> torch.Tensor:
        return f64(v.reshape(1, *SHAPE))[0]

    k = int(f64(xs[:1].reshape(1, *SHAPE)).shape[1])
    glob, per, pairs = 0.0, np.zeros(k), np.zeros((k, k))
    for i, x in enumerate(xs):
        x = x.clone()
        for step in range(ascent + 1):
            xr = x.detach().requires_grad_(step < ascent)
            try:
                j = torch.autograd.functional.jacobian(fn, xr, create_graph=step < ascent)
            except RuntimeError:  # no gradient path (detach): the difference quotients check it
                break
            if not torch.isfinite(j).all():
                break
            g, p, pr = _jac_norms(j.detach(), norm)
            glob, per, pairs = max(glob, g), np.maximum(per, p), np.maximum(pairs, pr)
            if step == ascent or i % 3:  # ascent on a third of the points
                break
            obj = torch.linalg.vector_norm(j, ord=2 if norm == "l2" else 1, dim=1).max()
            if not obj.requires_grad:
                break
            try:
                (grad,) = torch.autograd.grad(obj, xr, allow_unused=True)
            except (RuntimeError, NotImplementedError):  # no second derivative (cdist, some pools)
                break
            if grad is None or not torch.isfinite(grad).all() or float(grad.abs().max()) == 0.0:
                break
            x = (x + 0.05 * grad / grad.norm()).clamp(0, 1).detach()
    return Truth(glob, per, pairs)


def difference_quotients(net: nn.Module, norm: str, seed: int, forward: Any, n: int = 32
                         ) -> list[tuple[float, np.ndarray, float]]:
    """(‖δ‖, |f(x+δ) − f(x)| per logit (float64), allowance = a(x) + a(x+δ) of the certified
    forward pass) for random nearby pairs inside the box."""
    f64 = copy.deepcopy(net).double().eval()
    gen = torch.Generator().manual_seed(seed + 7)
    x = 0.1 + 0.8 * torch.rand(n, *SHAPE, generator=gen, dtype=torch.float64)
    delta = torch.randn(n, *SHAPE, generator=gen, dtype=torch.float64)
    scale = torch.tensor([1e-3, 1e-2, 0.1, 0.3], dtype=torch.float64).repeat(n // 4 + 1)[:n]
    flat = delta.flatten(1)
    size = flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)
    delta = delta * (scale / size).view(-1, *([1] * len(SHAPE)))
    y = (x + delta).clamp(0, 1)
    step = (y - x).flatten(1)
    dist = step.norm(dim=1) if norm == "l2" else step.abs().amax(dim=1)
    with torch.no_grad():
        fx, fy = f64(x), f64(y)
        _, ax, _ = forward(x.float())
        _, ay, _ = forward(y.float())
    diff = (fy - fx).abs().numpy()
    allow = (ax.double() + ay.double()).numpy()
    return [(float(dist[i]), diff[i], float(allow[i])) for i in range(n)]
