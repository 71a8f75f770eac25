"""Sound Lipschitz analysis of torch.export graphs ([L2NNN] §2, [LINF-DIST] §3; ``docs/soundness.md``).

The model becomes a torch.export graph (:mod:`.graph`); the analyser (:mod:`.analyser`) walks it
with one rule per ATen overload (:mod:`.registry`, families in :mod:`.rules`), each checking
every argument of its op; anything without a rule makes the model *unverifiable*, naming the op,
the argument and the node.  Besides the Lipschitz bounds, the analysis bounds the floating-point
error of the forward pass (:mod:`.rounding`), which every certificate subtracts from its margins.
The certificate plan built on these bounds lives in :mod:`certify.certificates.plan`.
"""

from __future__ import annotations

from ..threat import NORMS
from .analysis import analyse
from .graph import example_shape
from .registry import RULES
from .report import LayerBound, LipschitzReport

__all__ = ["NORMS", "RULES", "LayerBound", "LipschitzReport", "analyse", "example_shape"]
