"""Documented sanity flags (after AutoAttack's ``checks.py`` and ``flags_doc.md``; listed in docs/flags.md).

Each flag has an ID and a documentation entry saying when it is raised and
what it means; ``docs/flags.md`` is generated from :data:`FLAG_DOCS` and a
test keeps the two in step.  Flags are warnings about the evaluation, not
errors: a certificate broken by an attack is a hard error, never a flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

FLAG_DOCS: dict[str, str] = {
    "outputs-look-like-probabilities": (
        "Raised when every output row lies in [0, 1] and sums to 1. Margins and gaps of softmax "
        "outputs are not logit margins, certificates computed from them are meaningless, and "
        "gradient attacks get vanishing gradients. Export the model without its final softmax."
    ),
    "model-ends-in-softmax": (
        "Raised when a converted ONNX model's last op is a Softmax (or LogSoftmax). lipcert converts "
        "it, but margins of probabilities are not logit margins: certificates are computed for the "
        "probabilities, and the analyser has no Lipschitz rule for softmax, so the model is unverifiable. "
        "Export the model without its final softmax."
    ),
    "model-in-training-mode": (
        "Raised when the model, or one of its submodules, is still in training mode after loading. "
        "Dropout and batch statistics make outputs depend on the batch; lipcert calls eval(), so this "
        "means a module overrides it."
    ),
    "randomized-outputs": (
        "Raised when two forward passes on the same batch give different logits. A randomized "
        "defence needs EOT-style attacks; deterministic attacks overestimate its robustness."
    ),
    "zero-gradients": (
        "Raised when the input gradient of the loss is exactly zero for a sizeable share of the "
        "points. Gradient-based attacks cannot make progress: this often means gradient masking "
        "(saturated outputs, non-differentiable preprocessing), so robust accuracy is likely overestimated."
    ),
    "nan-gradients": (
        "Raised when input gradients contain NaN or Inf. Attacks that follow them are unreliable."
    ),
    "robust-accuracy-still-falling": (
        "Raised by iteration scaling when robust accuracy at the largest attack budget is still "
        "clearly below the previous budget. The defence may only look robust: run more iterations "
        "or restarts ([L2NNN] Tables 1 and 2)."
    ),
    "lipschitz-assumed": (
        "Raised when a certificate rests on a Lipschitz property that lipcert did not verify from "
        "the weights (declared in metadata or requested with --assume-lipschitz). The radii are "
        "only as true as that assumption."
    ),
}


@dataclass(frozen=True)
class Flag:
    id: str
    message: str

    def __post_init__(self) -> None:
        assert self.id in FLAG_DOCS, f"undocumented flag {self.id}"


def flags_markdown() -> str:
    lines = ["# Sanity flags", "", "lipcert raises these flags in results (`flags` in the JSON).", ""]
    for fid, doc in FLAG_DOCS.items():
        lines += [f"## `{fid}`", "", doc, ""]
    return "\n".join(lines)


def check_outputs(out: "torch.Tensor", out_again: "torch.Tensor | None" = None) -> list[Flag]:
    """Flags visible from model outputs on one batch (run twice for randomness)."""
    import torch

    flags: list[Flag] = []
    y = out.detach().to(torch.float64)
    if y.numel() and bool((y >= 0).all() and (y <= 1).all()):
        if bool(torch.allclose(y.sum(dim=1), torch.ones(y.shape[0], dtype=y.dtype, device=y.device), atol=1e-3)):
            flags.append(Flag("outputs-look-like-probabilities",
                              "every output row is in [0, 1] and sums to 1: these look like softmax outputs, not logits"))
    if out_again is not None and not torch.equal(out.detach(), out_again.detach()):
        diff = float((out.detach() - out_again.detach()).abs().max())
        flags.append(Flag("randomized-outputs", f"two passes on the same batch differ by up to {diff:.3g}"))
    return flags


def check_training_mode(module: "torch.nn.Module") -> list[Flag]:
    names = [name or "<root>" for name, m in module.named_modules() if m.training]
    if not names:
        return []
    return [Flag("model-in-training-mode", f"{len(names)} submodule(s) in training mode, e.g. {names[0]}")]


def check_softmax_ending(module: "torch.nn.Module") -> list[Flag]:
    """The ``model-ends-in-softmax`` flag for modules that say so (converted ONNX models do)."""
    if getattr(module, "ends_in_softmax", False) is True:
        return [Flag("model-ends-in-softmax", "the ONNX model's last op is a softmax: its outputs are "
                                              "probabilities, not logits")]
    return []
