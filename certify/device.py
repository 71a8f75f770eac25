"""Choosing the compute device and seeding."""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

from .errors import BadInputError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(spec: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without CUDA is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BadInputError("--device cuda was requested but CUDA is not available; use --device cpu or auto")
        return torch.device(spec)
    if spec == "cpu":
        return torch.device("cpu")
    raise BadInputError(f"expected --device auto, cpu or cuda, got {spec!r}")


@contextlib.contextmanager
def certificate_precision(device: torch.device | str) -> Iterator[None]:
    """Forward passes behind a certificate use algorithms the floating-point bound covers
    (``docs/soundness.md``): no TF32, no reduced-precision autocast, no transform-based
    convolutions (cuDNN may pick Winograd or FFT, NNPACK uses them), fp32 matmul precision "highest"."""
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
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA or CPU allocation failure (torch raises several types for it)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    if oom_type and isinstance(err, oom_type):
        return True
    text = str(err)
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(err, MemoryError))


def smaller_batch(batch_size: int, err: BaseException) -> int:
    """Half the batch after an out-of-memory error; give up below one example."""
    from .errors import RuntimeFailure

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if batch_size <= 1:
        raise RuntimeFailure(f"out of memory even with batch size 1: {str(err).splitlines()[0][:160]}") from err
    return max(1, batch_size // 2)
