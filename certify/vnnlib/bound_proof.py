"""Proofs by bound propagation (``docs/onnx-vnnlib.md``): CROWN, then α-CROWN within the time left, for
robustness properties (every unsafe clause is ``Y_j ≥ Y_c``, j ≠ c).

The box is contained in the ℓ∞ ball of :func:`.proof.ball` (a float32 centre, radius rounded up, input
bounds widened to contain it), so a proof over the ball is one over the box.  The property is unsat when
:func:`certify.bounds.certified` shows y_c − y_j > 0 for every j ≠ c over the ball, for the model as it
runs in floating point (the bounds are sound lower bounds in float64 with rounding allowances,
``docs/bounds.md``).  Linear output constraints other than robustness are left to the Lipschitz proof.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import torch

from ..checkpoints import LoadedModel
from ..device import model_device
from ..threat import Norm
from .parser import Property

#: one network per module and input shape: properties on one model share the export
_NETWORKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _network(module: Any, shape: tuple[int, ...]) -> Any:
    """The :class:`certify.bounds.Network` of ``module``, or the refusal (an exception) to report."""
    from ..bounds import network_from_module
    from ..errors import LipschitzUnverifiedError

    per_module = _NETWORKS.setdefault(module, {})
    if shape not in per_module:
        try:
            per_module[shape] = network_from_module(module, shape)
        except LipschitzUnverifiedError as err:  # an op without a bound rule (UnverifiableOpError)
            per_module[shape] = err
    return per_module[shape]


def prove_by_bounds(model: LoadedModel, prop: Property, shape: tuple[int, ...], ball: Any,
                    deadline: float | None = None) -> tuple[bool, str, str]:
    """(proved, how or why not, method: ``crown`` or ``alpha-crown``, empty when not proved)."""
    from ..bounds import BoundSettings, certified

    label = prop.robustness_label()
    if label is None:
        return False, "bound propagation proves robustness properties only", ""
    net = _network(model.module, shape)
    if isinstance(net, Exception):
        return False, f"no bound propagation: {str(net).splitlines()[0]}", ""
    device = model_device(model.module)
    x = torch.from_numpy(ball.centre).reshape((1,) + shape).to(device)
    pred = torch.tensor([label], dtype=torch.int64, device=device)
    eps = torch.tensor([ball.eps], dtype=torch.float64, device=device)
    lo, hi = ball.bounds
    for method in ("crown", "alpha-crown"):
        if deadline is not None and time.monotonic() > deadline:
            return False, f"no time left for {method}", ""
        settings = BoundSettings(method=method, norm=Norm.LINF, lo=lo, hi=hi, eps_max=max(ball.eps, 1e-12))
        if bool(certified(net, x, pred, eps, settings)[0]):
            return True, f"{method} bounds y_{label} − y_j > 0 for every j over the ℓ∞ ball of radius {ball.eps:.6g}", \
                method
    return False, f"CROWN and α-CROWN leave some y_{label} − y_j ≤ 0 possible over the box", ""
