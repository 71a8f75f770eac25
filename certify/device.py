"""Choosing the compute device and seeding."""

from __future__ import annotations

import random

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
