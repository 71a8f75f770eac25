"""Deciding a VNN-LIB property on a model: ``sat``, ``unsat``, ``unknown`` or ``timeout``.

Scoring in VNN-COMP punishes a wrong answer far more than it rewards a right one ([SCIENCE] §7),
so each answer has one source:

- ``sat`` only with a counterexample that :func:`certify.vnnlib.falsify.recheck` accepted (in the
  box exactly, unsafe in exact arithmetic on the model's own float32 outputs, and on
  onnxruntime's for an ONNX model).
- ``unsat`` only from a sound certificate: :mod:`certify.vnnlib.proof` (the ℓ∞ Lipschitz plan of
  :mod:`certify.certificates` over the ball that contains the box), else, for robustness properties,
  :mod:`certify.vnnlib.bound_proof` (CROWN, then α-CROWN while time is left, over the same ball).
- ``timeout`` when the time limit passed before an answer; ``unknown`` when neither the attack
  budget nor the certificate decided it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import LoadedModel
from ..device import model_device
from ..errors import BadInputError
from .falsify import DEFAULT_BUDGET, Checker, Counterexample, SearchBudget, search
from .parser import Property
from .bound_proof import prove_by_bounds
from .proof import ball_of, prove

RESULTS = ("sat", "unsat", "unknown", "timeout")


@dataclass(frozen=True)
class VerifyResult:
    """One property's answer, how it was reached and how long it took."""

    result: str  #: sat, unsat, unknown or timeout
    seconds: float
    method: str  #: "attack" (sat), "lipschitz-linf", "crown" or "alpha-crown" (unsat), "" (unknown, timeout)
    reason: str
    counterexample: Counterexample | None = None

    def vnncomp(self) -> str:
        """The answer in VNN-COMP's result-file format."""
        if self.result != "sat" or self.counterexample is None:
            return self.result + "\n"
        ce = self.counterexample
        rows = [f"(X_{i} {v!r})" for i, v in enumerate(ce.x)] + [f"(Y_{j} {v!r})" for j, v in enumerate(ce.y)]
        return "sat\n(" + "\n ".join(rows) + ")\n"

    def to_dict(self) -> dict[str, Any]:
        ce = self.counterexample
        return {"result": self.result, "seconds": self.seconds, "method": self.method, "reason": self.reason,
                "counterexample": None if ce is None else {"x": list(ce.x), "y": list(ce.y),
                                                           "checked_by": list(ce.checked_by)}}


def verify(model: LoadedModel, prop: Property, timeout: float, *, seed: int = 0,
           budget: SearchBudget = DEFAULT_BUDGET) -> VerifyResult:
    """Decide ``prop`` on ``model`` within ``timeout`` seconds (see the module docs)."""
    if not (timeout > 0 and math.isfinite(timeout)):
        raise BadInputError(f"timeout must be a positive number of seconds, got {timeout}", param="timeout")
    start = time.monotonic()
    deadline = start + timeout
    shape = example_shape(model, prop)
    run = _runner(model, shape)
    _check_outputs(run, prop)
    others = _onnxruntime_checker(model)
    quick = dataclasses.replace(budget, rounds=1)
    found, out_of_time = search(run, prop, quick, deadline, seed, others)
    if found is not None:
        return _done("sat", start, timeout, "attack", "counterexample found by PGD and re-checked", found)
    if out_of_time:
        return _done("timeout", start, timeout, "", f"no answer within {timeout:g} s")
    proved, why = prove(model, prop, shape)
    if proved:
        return _done("unsat", start, timeout, "lipschitz-linf", why)
    proved, how, method = prove_by_bounds(model, prop, shape, ball_of(prop), deadline)
    if proved:
        return _done("unsat", start, timeout, method, how)
    why = f"{why}; {how}"
    if budget.rounds > 1:
        rest = dataclasses.replace(budget, rounds=budget.rounds - 1)
        found, out_of_time = search(run, prop, rest, deadline, seed + 1, others)
        if found is not None:
            return _done("sat", start, timeout, "attack", "counterexample found by PGD and re-checked", found)
    if out_of_time or time.monotonic() > deadline:
        return _done("timeout", start, timeout, "", f"no answer within {timeout:g} s ({why})")
    return _done("unknown", start, timeout, "", why)


def _done(result: str, start: float, timeout: float, method: str, reason: str,
          ce: Counterexample | None = None) -> VerifyResult:
    seconds = time.monotonic() - start
    if seconds > timeout and result != "timeout":  # an answer after the limit does not count
        return VerifyResult("timeout", seconds, "", f"answered {result} after the {timeout:g} s limit")
    return VerifyResult(result, seconds, method, reason, ce)


def example_shape(model: LoadedModel, prop: Property) -> tuple[int, ...]:
    """The shape one example has for the model; X_0 … X_{n−1} fill it in row-major order."""
    shape = model.metadata.input_shape
    inner = getattr(model.module, "inner", model.module)
    if shape is None and hasattr(inner, "declared"):
        shape = inner.declared  # a converted ONNX model: its declared input
    if shape is None and model.exported is not None:
        from ..lipschitz.graph import example_shape as program_shape

        shape = program_shape(model, None)
    if shape is None:
        raise BadInputError("the model's input shape is unknown; give input_shape", param="input_shape")
    if math.prod(shape) != prop.num_inputs:
        raise BadInputError(f"the property declares {prop.num_inputs} inputs but the model takes {tuple(shape)} "
                            f"({math.prod(shape)} values)", param="property")
    return tuple(int(s) for s in shape)


def _runner(model: LoadedModel, shape: tuple[int, ...]) -> Any:
    """Inputs and outputs on the CPU; the model runs on its own device."""
    device = model_device(model.module)

    def run(x: torch.Tensor) -> torch.Tensor:
        y = model.module(x.to(device).reshape((x.shape[0],) + shape))
        return y.reshape(y.shape[0], -1).cpu()
    return run


def _check_outputs(run: Any, prop: Property) -> None:
    with torch.no_grad():
        y = run(torch.zeros((1, prop.num_inputs), device="cpu"))
    if y.shape[1] != prop.num_outputs:
        raise BadInputError(f"the property declares {prop.num_outputs} outputs but the model gives {y.shape[1]}",
                            param="property")


def _onnxruntime_checker(model: LoadedModel) -> dict[str, Checker]:
    """onnxruntime as a second runtime for counterexamples of an ONNX model (when installed)."""
    if model.format != "onnx":
        return {}
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return {}
    inner = getattr(model.module, "inner", model.module)
    sess, name = _session(model.path, model.sha256)
    declared = (1,) + tuple(inner.declared)

    def check(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: x.reshape(declared).astype(np.float32)})[0]
    return {"onnxruntime": check}


@functools.lru_cache(maxsize=4)
def _session(path: str, sha256: str) -> tuple[Any, str]:
    """One onnxruntime session per model, built from the bytes lipcert's ONNX reader checked when the
    model was loaded (same sha256), so onnxruntime reads nothing else (no external data)."""
    import hashlib

    import onnxruntime as ort

    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BadInputError(f"model {path!r} changed on disk since it was loaded; load it again", param="model")
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess, sess.get_inputs()[0].name
