"""The analyser's results: per-layer factors and the model's guaranteed bounds."""

from __future__ import annotations

from dataclasses import dataclass

from ..threat import Norm


@dataclass(frozen=True)
class LayerBound:
    """One analysed node: its own Lipschitz factor and a power-iteration estimate (None if not computed)."""

    name: str
    op: str
    bound: float
    estimate: float | None = None
    #: how the bound was obtained, when a rule has several methods (e.g. "fourier", "cholesky")
    method: str | None = None
    #: True when the bound is one this installation proved and signed in an earlier run (the disk cache)
    reused: bool = False


@dataclass(frozen=True)
class LipschitzReport:
    norm: Norm
    verified: bool
    unverifiable_ops: tuple[str, ...]  #: ``op (node name)`` for each op without a rule
    global_bound: float  #: inf when unverifiable
    per_logit_bounds: tuple[float, ...]
    pair_bounds: tuple[tuple[float, ...], ...]  #: K×K, 0 on the diagonal
    layers: tuple[LayerBound, ...]
    source: str = "torch.export"  #: where the graph came from
    #: bound on the floating-point error of each logit, for every input in the model's input box
    float_error: float = float("inf")
    #: batch sizes the bounds hold for; () when the graph is the same for every batch size
    batch_sizes: tuple[int, ...] = ()

    @property
    def reason(self) -> str:
        if self.verified:
            return f"{self.norm} bound {self.global_bound:.6g} computed from the weights"
        return "unverifiable: " + ", ".join(self.unverifiable_ops)

    @property
    def float_allowance(self) -> float:
        """What a certificate subtracts from a margin: 4 × the logit error (the margin's error at
        the point and at the attacked point, ≤ 2 errors each)."""
        return 4.0 * self.float_error
