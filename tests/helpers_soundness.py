"""Networks that are Lipschitz by construction, and a harness that attacks them inside their
certified radii (for tests/test_soundness.py; no conftest: imported explicitly).

Every family is built from plain torch ops, so torch.export keeps it and the analyser
(certify.lipschitz) verifies the declared claim from the weights before certify uses it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attacks import run_batched
from attacks.foolbox_attacks import DDN, FMN, CarliniWagner
from attacks.pgd import PGD, MarginPGD
from certify import operator_norms as on
from certify.certificates import certify
from certify.checkpoints import LipschitzClaim, LoadedModel
from certify.data import Dataset
from certify.defaults import CHECK_EPS_FRACTION

from .helpers_attacks import loaded, orthonormal_rows


# --------------------------------------------------------------------------- families


class OrthonormalMLP(nn.Module):
    """Linear layers with orthonormal rows (σ = 1) and ReLU: the logit vector is 1-Lipschitz L2→L2."""

    def __init__(self, d_in: int, widths: list[int], classes: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        dims = [d_in, *widths, classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        with torch.no_grad():
            for lin in self.layers:
                lin.weight.copy_(orthonormal_rows(lin.out_features, lin.in_features, gen))
                lin.bias.copy_(torch.randn(lin.out_features, generator=gen) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)
        for i, lin in enumerate(self.layers):
            z = lin(z) if i == len(self.layers) - 1 else torch.relu(lin(z))
        return z


class L2NNNStyle(nn.Module):
    """[L2NNN]-style: weights W/√b(W), two-sided ReLU x ↦ [relu(x), relu(−x)]: each logit 1-Lipschitz in L2."""

    def __init__(self, d_in: int, widths: list[int], classes: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        ins = [d_in] + [2 * w for w in widths]
        outs = [*widths, classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(ins, outs))
        with torch.no_grad():
            for lin in self.layers:
                w = torch.randn(lin.out_features, lin.in_features, generator=gen, dtype=torch.float64)
                lin.weight.copy_((w / on.b_bound(w)).float())
                lin.bias.copy_(torch.randn(lin.out_features, generator=gen) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)
        for i, lin in enumerate(self.layers):
            z = lin(z)
            if i < len(self.layers) - 1:
                z = torch.cat([torch.relu(z), torch.relu(-z)], dim=1)
        return z


class NormalisedConv(nn.Module):
    """Convolutions scaled by a sound operator-norm bound (certify.operator_norms), ReLU, orthonormal head."""

    def __init__(self, shape: tuple[int, int, int], channels: list[int], classes: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        c, h, w = shape
        self.convs = nn.ModuleList()
        for out_c in channels:
            conv = nn.Conv2d(c, out_c, 3, padding=1)
            k = torch.randn(out_c, c, 3, 3, generator=gen, dtype=torch.float64)
            spec = on.ConvSpec(k, (1, 1), (1, 1), (1, 1), 1, (c, h, w))
            bound = min(on.conv_circulant_bound(spec), on.conv_l2nnn_bound(spec))
            with torch.no_grad():
                conv.weight.copy_((k / bound).float())
                conv.bias.copy_(torch.randn(out_c, generator=gen) * 0.1)
            self.convs.append(conv)
            c = out_c
        self.head = nn.Linear(c * h * w, classes)
        with torch.no_grad():
            self.head.weight.copy_(orthonormal_rows(classes, c * h * w, gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(x.flatten(1))


class LinfDistNet(nn.Module):
    """ℓ∞-dist neurons u(z) = max_i |z_i − w_i| + b ([LINF-DIST]): 1-Lipschitz ℓ∞→ℓ∞; logits −u."""

    def __init__(self, d_in: int, widths: list[int], classes: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        dims = [d_in, *widths, classes]
        self.depth = len(dims) - 1
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            self.register_buffer(f"w{i}", torch.rand(b, a, generator=gen) * (0.5 if i else 1.0))
            self.register_buffer(f"b{i}", torch.randn(b, generator=gen) * 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)
        for i in range(self.depth):
            z = (z.unsqueeze(1) - getattr(self, f"w{i}")).abs().amax(dim=2) + getattr(self, f"b{i}")
        return -z


@dataclass(frozen=True)
class Spec:
    """One model of the suite: family, size, seed and whether to declare the claim."""

    family: str
    width: int
    depth: int
    seed: int
    declare: bool = True  #: False: no claim, certify's auto picks the verified pairwise rule

    def __repr__(self) -> str:
        return f"{self.family}-w{self.width}-d{self.depth}-s{self.seed}{'' if self.declare else '-pairwise'}"


SHAPE = (1, 4, 4)
CLASSES = 4
#: family → (norm, claim, certificate used when declared)
FAMILIES: dict[str, tuple[str, LipschitzClaim, str]] = {
    "orthonormal-mlp": ("l2", LipschitzClaim("l2", "vector"), "l2-single"),
    "l2nnn-style": ("l2", LipschitzClaim("l2", "per-logit"), "l2-multi"),
    "normalised-conv": ("l2", LipschitzClaim("l2", "vector"), "l2-single"),
    "linf-dist": ("linf", LipschitzClaim("linf", "vector"), "linf-dist"),
}


def build(spec: Spec) -> nn.Module:
    d = int(np.prod(SHAPE))
    widths = [spec.width] * spec.depth
    if spec.family == "orthonormal-mlp":
        return OrthonormalMLP(d, widths, CLASSES, spec.seed).eval()
    if spec.family == "l2nnn-style":
        return L2NNNStyle(d, widths, CLASSES, spec.seed).eval()
    if spec.family == "normalised-conv":
        return NormalisedConv(SHAPE, [max(1, spec.width // 8)] * max(1, spec.depth), CLASSES, spec.seed).eval()
    if spec.family == "linf-dist":
        return LinfDistNet(d, widths, CLASSES, spec.seed).eval()
    raise ValueError(spec.family)


def save_and_load(spec: Spec, directory: Path) -> LoadedModel:
    _, claim, _ = FAMILIES[spec.family]
    return loaded(build(spec), directory / f"{spec!r}.pt2", SHAPE, claim if spec.declare else None)


def points(module: nn.Module, n: int, seed: int) -> Dataset:
    """Uniform points inside the box, labelled with the model's own predictions (so all are correct)."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.6 * torch.rand(n, *SHAPE, generator=gen)
    with torch.no_grad():
        y = module(x).argmax(dim=1)
    return Dataset(x, y, "soundness", "test")


# --------------------------------------------------------------------------- harness


@dataclass(frozen=True)
class Soundness:
    """What one model's run found."""

    spec: Spec
    certificate: str
    verified: bool
    attacked: int  #: certified points attacked (each by every attack)
    violations: tuple[str, ...]
    closest: float  #: smallest (adversarial distance / certified radius) any min-norm attack reached
    seconds: float


def attacks_for(norm: str, steps: int, restarts: int, strong: bool) -> list[tuple[str, object]]:
    """PGD (CE and margin loss) at fixed ε, plus minimum-norm attacks: C&W in L2 (foolbox FMN's L2
    mode stops far from the boundary on these models), FMN in ℓ∞; DDN too in L2 when ``strong``."""
    out: list[tuple[str, object]] = [("pgd", PGD(steps=steps, restarts=restarts)),
                                     ("pgd-margin", MarginPGD(steps=steps, restarts=restarts))]
    if norm == "l2":
        out.append(("cw", CarliniWagner(steps=steps)))
        if strong:
            out.append(("ddn", DDN(steps=steps)))
    else:
        out.append(("fmn", FMN(steps=steps)))
    return out


def check_model(spec: Spec, directory: Path, n: int, steps: int, restarts: int = 1, strong: bool = False,
                seed: int = 0) -> Soundness:
    """Certify ``n`` points, then attack every certified one at ε = 0.999·radius (fixed-ε attacks)
    and with minimum-norm attacks (a success closer than the radius is a violation)."""
    t0 = time.perf_counter()
    model = save_and_load(spec, directory)
    norm, _, declared_cert = FAMILIES[spec.family]
    data = points(model.module, n, seed=spec.seed + 1)
    report = certify(model, data, norm=norm, eps=[1e-3], certificate=declared_cert if spec.declare else "auto")
    ex = report.examples
    idx = np.flatnonzero(ex.correct & np.isfinite(ex.radius) & (ex.radius > 0))
    radius = torch.from_numpy(ex.radius[idx])
    t = torch.from_numpy(idx)
    x, y = data.x[t].float(), data.y[t]
    violations: list[str] = []
    closest = float("inf")
    for name, attack in attacks_for(norm, steps, restarts, strong):
        eps = None if attack.minimization else CHECK_EPS_FRACTION * radius
        out = run_batched(attack, model.module, x, y, norm=norm, eps=eps, bounds=model.metadata.bounds,
                          seed=seed, batch_size=512, device=torch.device("cpu"))
        dist = out.distance
        bad = out.success & (dist < radius)
        violations += [f"{spec!r} point {int(idx[j])}: {name} found an adversarial at {float(dist[j]):.6g} "
                       f"inside the certified radius {float(radius[j]):.6g}" for j in np.flatnonzero(bad.numpy())]
        if attack.minimization and bool(out.success.any()):
            closest = min(closest, float((dist[out.success] / radius[out.success]).min()))
    return Soundness(spec, report.plan.certificate, report.plan.lipschitz_verified, len(idx), tuple(violations),
                     closest, time.perf_counter() - t0)
