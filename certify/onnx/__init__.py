"""ONNX classifiers without onnx2torch: a direct converter for the classifier op set.

==========================  ===============================================================
module                      owns
==========================  ===============================================================
:mod:`~.reader`             parsing and checking the file (no code runs; external data refused)
:mod:`~.values`             the values passed between nodes, attribute checks
:mod:`~.ops`                one torch function per ONNX op (``OPS``)
:mod:`~.convert`            the ``nn.Module`` (input layout, batch check) and its torch.export program
==========================  ===============================================================

Only the ``onnx`` package (protobuf messages) is needed to read a model; ``onnxruntime`` is used by
the tests as the independent reference.  :func:`load_onnx` is what
:mod:`certify.checkpoints.readers` calls.
"""

from __future__ import annotations

import os

from torch import nn


def load_onnx(path: str | os.PathLike[str], input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """Read, check and convert an ONNX classifier (see :mod:`.convert` for ``input_shape``)."""
    from .convert import convert
    from .reader import read_onnx

    return convert(read_onnx(path), input_shape)


__all__ = ["load_onnx"]
