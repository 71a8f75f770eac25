"""A guard for the device rule (docs/api.md, "Devices"): no tensor factory in lipcert's code may rely on the default device.

CI has no GPU, so a tensor created on the default device (CPU) next to a model on CUDA cannot fail
there.  :func:`explicit_devices` makes it fail on CPU: while it is active, a factory call
(``torch.zeros``, ``torch.rand``, ``torch.tensor``, ...) made *from lipcert's own modules* without a
``device=`` argument raises :class:`ImplicitDevice`.  Calls from torch, foolbox or the tests
themselves are left alone.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[1]
#: lipcert's own code: the two packages and the example scripts.
LIBRARY_DIRS = tuple(str(ROOT / d) + "/" for d in ("certify", "attacks", "examples"))

#: Factories that put their result on the default device unless given ``device=``.
FACTORIES = frozenset(getattr(torch, name) for name in (
    "zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm", "arange", "range", "linspace",
    "logspace", "eye", "tensor", "as_tensor", "scalar_tensor", "empty_strided", "normal", "tril_indices",
    "triu_indices", "sparse_coo_tensor", "bernoulli",
) if hasattr(torch, name))
#: ``normal`` and ``bernoulli`` with tensor arguments inherit their device; only their size form is a factory.
NEEDS_SIZE_FORM = frozenset(getattr(torch, n) for n in ("normal", "bernoulli") if hasattr(torch, n))


class ImplicitDevice(AssertionError):
    """A lipcert factory call without ``device=``."""


def _caller() -> Any:
    """The frame that called the factory (factories are C functions: no frame of their own).
    Factory calls made inside torch (``torch.export.load``, ...) have a torch frame here and pass."""
    return sys._getframe(3)


class ExplicitDeviceMode(TorchFunctionMode):
    def __init__(self, strict: bool = True) -> None:
        super().__init__()
        self.strict = strict
        self.calls = 0  #: factory calls outside lipcert's code (left alone)
        self.violations: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None and not self._inherits(func, args):
            frame = _caller()
            where = frame.f_code.co_filename if frame is not None else "?"
            if where.startswith(LIBRARY_DIRS):
                message = f"torch.{func.__name__} without device= at {where}:{frame.f_lineno}"
                self.violations.append(message)
                if self.strict:
                    raise ImplicitDevice(message)
            else:
                self.calls += 1
        return func(*args, **kwargs)

    @staticmethod
    def _inherits(func: Any, args: tuple) -> bool:
        if func in NEEDS_SIZE_FORM:
            return any(isinstance(a, torch.Tensor) for a in args)
        return False


@contextlib.contextmanager
def explicit_devices(strict: bool = True) -> Iterator[ExplicitDeviceMode]:
    """Fail any factory call in lipcert's code that leaves the device to the default
    (``strict=False``: only record them in ``mode.violations``)."""
    with ExplicitDeviceMode(strict) as mode:
        yield mode
