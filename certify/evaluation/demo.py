"""``lipcert demo``: certify and briefly attack the four shipped models, no downloads.

The models live in ``examples/models/`` of the source tree (trained by
``examples/train.py`` with the small CPU configs); the data is the embedded
``demo`` set (the first 1,000 Fashion-MNIST test images).  The result is one
frozen :class:`DemoReport` that :func:`certify.reporting.tables.demo_table` draws.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .analyses import forward_examples
from ..certificates import certify
from ..certificates.plan import claim_certificate
from ..checkpoints import LoadedModel, load_model
from ..data import Dataset, ProgressFn
from ..defaults import DEFAULT_BATCH_SIZE, DEMO_ATTACK_STEPS, DEMO_L2_EPS, DEMO_LINF_EPS
from ..errors import BadInputError, CertificateViolation
from ..threat import Norm


#: (row label, file name) of the shipped models, in table order.
DEMO_MODELS: tuple[tuple[str, str], ...] = (
    ("multi-L2NNN", "fmnist_l2nnn.pt2"),
    ("ℓ∞-dist Net", "fmnist_linf_dist.pt2"),
    ("CNN", "fmnist_baseline.pt2"),
    ("CNN + PGD training", "fmnist_baseline_adv.pt2"),
)


def default_models_dir() -> Path:
    """``examples/models`` next to the installed ``certify`` package (a source checkout)."""
    return Path(__file__).resolve().parents[2] / "examples" / "models"


def find_models(models_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    missing = [name for _, name in DEMO_MODELS if not (root / name).is_file()]
    if missing:
        raise BadInputError(
            f"shipped demo models not found in {str(root)!r} (missing {', '.join(missing)}); run lipcert from a "
            "source checkout installed with 'pip install -e .', or pass models_dir DIR holding them "
            "(examples/train.py trains them)", param="models_dir")
    return [(label, root / name) for label, name in DEMO_MODELS]


@dataclass(frozen=True)
class DemoRow:
    label: str
    path: str
    certificate: str | None  #: the rule the declared claim supports (None: no claim)
    clean_accuracy: float
    mean_gap: float
    #: "l2@0.5" → certified accuracy; None when the model declares no Lipschitz property
    certified: dict[str, float | None]
    #: "l2@0.5" → accuracy under the brief PGD attack
    robust: dict[str, float]
    #: attacks that succeeded inside a certified radius (must stay 0)
    violations: int


@dataclass(frozen=True)
class DemoReport:
    rows: tuple[DemoRow, ...]
    n: int
    data_source: str
    l2_eps: tuple[float, ...]
    linf_eps: tuple[float, ...]
    attack: str
    attack_steps: int
    seconds: float


def key(norm: str, eps: float) -> str:
    return f"{norm}@{eps:g}"


def run_demo(data: Dataset, *, models_dir: str | Path | None = None, l2_eps: Sequence[float] = DEMO_L2_EPS,
             linf_eps: Sequence[float] = DEMO_LINF_EPS, attack_steps: int = DEMO_ATTACK_STEPS,
             batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str = "cpu", seed: int = 0,
             progress: ProgressFn | None = None) -> DemoReport:
    """Certify and attack every shipped model on ``data``."""
    if attack_steps < 0:
        raise BadInputError(f"attack_steps must be ≥ 0, got {attack_steps}", param="attack_steps")
    start = time.perf_counter()
    models = find_models(models_dir)
    rows = []
    for i, (label, path) in enumerate(models):
        torch.manual_seed(seed)
        model = load_model(path, device=device)
        rows.append(_demo_row(label, model, data, tuple(l2_eps), tuple(linf_eps), attack_steps, batch_size, device))
        if progress is not None:
            progress(i + 1, len(models))
    return DemoReport(tuple(rows), len(data), data.source, tuple(l2_eps), tuple(linf_eps), attack_name(),
                      attack_steps, time.perf_counter() - start)


def _demo_row(label: str, model: LoadedModel, data: Dataset, l2_eps: tuple[float, ...],
              linf_eps: tuple[float, ...], steps: int, batch_size: int, device: Any) -> DemoRow:
    claim = model.metadata.lipschitz
    radii: dict[str, torch.Tensor] = {}
    certified: dict[str, float | None] = {}
    for norm, eps in ((Norm.L2, l2_eps), (Norm.LINF, linf_eps)):
        if claim is None:
            certified.update({key(norm, e): None for e in eps})
            continue
        rep = certify(model, data, norm=norm, eps=eps, batch_size=batch_size, device=device)
        radii[norm] = torch.from_numpy(rep.examples.radius)
        certified.update({key(norm, r.eps): r.certified_accuracy for r in rep.results})
    correct, gaps = _clean(model, data, batch_size, device)
    robust, violations = {}, 0
    for norm, eps in ((Norm.L2, max(l2_eps)), (Norm.LINF, max(linf_eps))):
        fooled = _attack(model, data, norm, eps, steps, batch_size, device) & correct
        robust[key(norm, eps)] = float((correct & ~fooled).float().mean())
        if norm in radii:
            violations += int((fooled & (radii[norm] > eps)).sum())
    if violations:
        raise CertificateViolation(f"{label}: {violations} attacks succeeded inside certified radii; "
                                   "the model's declared Lipschitz property is false or lipcert has a bug")
    return DemoRow(label, model.path, _certificate_name(claim), float(correct.float().mean()), float(gaps.mean()),
                   certified, robust, violations)


def _certificate_name(claim: Any) -> str | None:
    """The rule a declared claim certifies with in L2 (an ℓ∞ claim: linf-dist)."""
    return claim_certificate(claim, Norm.L2)


def _clean(model: LoadedModel, data: Dataset, batch_size: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct-mask and gaps of the clean pass (certify's batched loop)."""
    ex = forward_examples(model, data, batch_size=batch_size, device=device)
    return torch.from_numpy(ex.label == ex.prediction), torch.from_numpy(ex.gap)


# --------------------------------------------------------------------------- the brief attack


def attack_name() -> str:
    return "lipcert PGD (cross-entropy, random start, early stop)"


def _attack(model: LoadedModel, data: Dataset, norm: Norm, eps: float, steps: int, batch_size: int,
            device: Any) -> torch.Tensor:
    """Boolean mask: the attack found a misclassified point within ``eps``.

    Every point is attacked (no certify-first), so the caller can check that
    no attack ever lands inside a certified radius.
    """
    if steps == 0:
        return torch.zeros(len(data), dtype=torch.bool, device="cpu")
    from attacks import evaluate

    report = evaluate(model, data, norm=norm, eps=[eps], attacks=["pgd"], steps=(steps,), certify_first=False,
                      min_distance=False, batch_size=batch_size, device=device)
    return torch.from_numpy(~report.examples.robust[:, 0])
