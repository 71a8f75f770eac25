"""Early stop and batch compaction, chosen per device (docs/determinism.md; defaults in :data:`DEFAULT_EARLY_STOP`).

Stopping a point as soon as it is adversarial and dropping it from the batch ("compaction") wins on the
CPU, where work is proportional to the batch.  On a GPU, knowing which points to drop needs a
device→host sync that stalls the kernel queue, and a smaller batch is barely faster: there PGD keeps
each point's first adversarial iterate on the device every step, and looks and compacts only now and then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from certify.defaults import DEFAULT_EARLY_STOP


@dataclass(frozen=True)
class EarlyStop:
    every: int  #: steps between looks at which points are done (each look is one device→host sync)
    compact_below: float  #: drop the done points when at most this fraction of the batch is still running

    @property
    def eager(self) -> bool:
        """Look every step and drop every hit at once (the CPU policy)."""
        return self.every == 1 and self.compact_below >= 1.0

    def looks_at(self, step: int) -> bool:
        return (step + 1) % self.every == 0


def early_stop_for(device: Any) -> EarlyStop:
    """The policy for a device (``torch.device``, or its type as a string); unknown types use the CUDA one."""
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    every, below = DEFAULT_EARLY_STOP.get(kind, DEFAULT_EARLY_STOP["cuda"])
    return EarlyStop(every, below)
