"""The :class:`Dataset` value: images read on demand (:mod:`certify.rowstore`) and their labels.

Loading is :mod:`certify.data`'s job (``load_dataset``); file formats are :mod:`certify.data_formats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .errors import BadInputError
from .rowstore import FloatRows, RowRange, Rows, as_float

#: ``progress(done, total)``: how long-running library functions report progress (the CLI draws it).
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Dataset:
    """Images (N×C×H×W, uint8 or float) and integer labels ``y``.

    ``rows`` holds the images: a tensor, or a :class:`~certify.rowstore.Rows` that reads the rows
    asked for from the file (the loaders' choice for files, so a torchrun rank reads its shard only).
    Read them with :meth:`batch`, :meth:`batches`, :meth:`take` or :meth:`subset`; ``x`` is every
    image as one tensor (it reads the whole file).
    """

    rows: torch.Tensor | Rows
    y: torch.Tensor
    source: str
    split: str
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def x(self) -> torch.Tensor:
        """Every image as one tensor (reads the whole file when the rows are read on demand)."""
        return self.rows if isinstance(self.rows, torch.Tensor) else self.rows.tensor()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.rows.shape[1:])

    @property
    def num_classes(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.y.max()) + 1 if len(self) else 0

    def as_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 → float32 in [0, 1]; float stays as it is (as float32) (:func:`certify.rowstore.as_float`)."""
        return as_float(x)

    def take(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """The images at ``indices`` (stored dtype, CPU), reading only those rows."""
        if isinstance(self.rows, torch.Tensor):
            return self.rows[torch.as_tensor(np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices,
                                                        dtype=np.int64), device=self.rows.device)]
        return self.rows.take(indices)

    def batch(self, start: int, stop: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        x = self.rows[start:stop].to(device, non_blocking=True)
        return self.as_float(x), self.y[start:stop].to(device, non_blocking=True)

    def batches(self, batch_size: int, device: torch.device | str = "cpu", start: int = 0
                ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield ``(offset, x, y)`` batches, x as float32 on ``device``."""
        if batch_size < 1:
            raise BadInputError(f"batch size must be at least 1, got {batch_size}")
        for lo in range(start, len(self), batch_size):
            x, y = self.batch(lo, lo + batch_size, device)
            yield lo, x, y

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "Dataset":
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.y.device)
        return Dataset(self.take(idx), self.y[idx], self.source, self.split, self.class_names)

    def in_memory(self) -> "Dataset":
        """The same dataset with every image read into one tensor (for passes that visit every row in a
        random order, like training); itself when it already is."""
        if isinstance(self.rows, torch.Tensor):
            return self
        return Dataset(self.rows.tensor(), self.y, self.source, self.split, self.class_names)

    def head(self, limit: int) -> "Dataset":
        """The first ``limit`` examples (read on demand when the rows are)."""
        rows = self.rows[:limit] if isinstance(self.rows, torch.Tensor) else RowRange(self.rows, 0, min(limit, len(self)))
        return Dataset(rows, self.y[:limit], self.source, self.split, self.class_names)

    def float_rows(self) -> torch.Tensor | FloatRows:
        """The images as float32 in [0, 1]: one tensor when they are in memory, else rows converted as
        they are read (what the attacks index, by chunk and by point)."""
        if isinstance(self.rows, torch.Tensor):
            return self.as_float(self.rows)
        return FloatRows(self.rows)

    def float_tensor(self) -> torch.Tensor:
        """The whole set as float32 in [0, 1] (for analyses that need all of it)."""
        return self.as_float(self.x)
