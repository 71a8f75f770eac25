"""The device rule (docs/api.md, "Devices"): one resolved device for the model, every batch and every tensor lipcert makes.

- The CLI resolves ``--device`` once (:func:`resolve_device`) and loads the model there.
- Library functions take ``device=None`` to mean "the model's device" (:func:`run_device`); a device
  that differs from the model's is refused with :class:`BadInputError` rather than moved silently.
- Tensors are created with an explicit ``device=`` (``tests/test_device_guard.py`` enforces it).

torch is imported lazily, so that ``lipcert --help`` and usage errors stay fast.
"""

from __future__ import annotations

import contextlib
import random
import re
from typing import TYPE_CHECKING, Any, Iterator

from .errors import BadInputError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_spec(spec: str) -> str:
    """Validate ``--device`` without importing torch: auto, cpu, cuda or cuda:N."""
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise BadInputError(f"expected device auto, cpu, cuda or cuda:N, got {spec!r}", param="device")
    return spec


def resolve_device(spec: "str | torch.device") -> "torch.device":
    """``auto`` → CUDA when available, else CPU; ``cuda`` without CUDA is an error."""
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    check_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BadInputError("device cuda was requested but CUDA is not available; use cpu or auto", param="device")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BadInputError(f"device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible", param="device")
        return dev
    return torch.device("cpu")


def model_device(module: Any) -> "torch.device":
    """The device of a module's parameters and buffers (CPU for a module that has none)."""
    import torch

    module = getattr(module, "module", module)  # a LoadedModel or an nn.Module
    devices = {t.device for t in list(module.parameters()) + list(module.buffers())}
    if len(devices) > 1:
        raise BadInputError(f"the model's tensors are spread over several devices ({sorted(map(str, devices))}); "
                            "move it to one device first")
    return devices.pop() if devices else torch.device("cpu")


def _same(a: "torch.device", b: "torch.device") -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    import torch

    def index(d: "torch.device") -> int:
        return d.index if d.index is not None else torch.cuda.current_device()

    return index(a) == index(b)


def run_device(model: Any, device: "str | torch.device | None" = None) -> "torch.device":
    """The one device a run uses: the model's, or ``device`` when it agrees with the model's.

    ``device=None`` → the model's device.  A different device is a :class:`BadInputError`: move the
    model (``load_model(..., device=...)`` or ``module.to(...)``) instead.
    """
    here = model_device(model)
    if device is None:
        return here
    wanted = resolve_device(device) if isinstance(device, str) else device
    if not _same(wanted, here):
        raise BadInputError(f"the model is on {here} but device {wanted} was requested; load the model with "
                            f"device={str(wanted)!r} or pass device=None to use the model's device")
    return here


@contextlib.contextmanager
def certificate_precision(device: "torch.device | str") -> Iterator[None]:
    """Forward passes behind a certificate use algorithms the floating-point bound covers
    (``docs/soundness.md``): no TF32, no reduced-precision autocast, no transform-based
    convolutions (cuDNN may pick Winograd or FFT, NNPACK uses them), fp32 matmul precision "highest"."""
    import torch

    dev = torch.device(device)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.autocast(dev.type, enabled=False))
            stack.enter_context(torch.backends.nnpack.flags(enabled=False))
            if dev.type == "cuda":
                stack.enter_context(torch.backends.cudnn.flags(enabled=False, allow_tf32=False))
                old_tf32 = torch.backends.cuda.matmul.allow_tf32
                torch.backends.cuda.matmul.allow_tf32 = False
                stack.callback(setattr, torch.backends.cuda.matmul, "allow_tf32", old_tf32)
            yield
    finally:
        torch.set_float32_matmul_precision(previous)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA or CPU allocation failure (torch raises several types for it)."""
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    if oom_type and isinstance(err, oom_type):
        return True
    text = str(err)
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(err, MemoryError))


def smaller_batch(batch_size: int, err: BaseException) -> int:
    """Half the batch after an out-of-memory error; give up below one example."""
    import torch

    from .errors import RuntimeFailure

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if batch_size <= 1:
        raise RuntimeFailure(f"out of memory even with batch size 1: {str(err).splitlines()[0][:160]}") from err
    return max(1, batch_size // 2)
