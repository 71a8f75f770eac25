"""Every default lipcert uses lives here (CONVENTIONS item 5).

The CLI's ``show_default=True`` options, the dataclass defaults and the YAML
suite schema all read these names, so a default is changed in one place.
"""

from __future__ import annotations

DEFAULT_BATCH_SIZE = 256
DEFAULT_SPLIT = "test"
DEFAULT_DEVICE = "auto"
DEFAULT_SEED = 0
DEFAULT_CERTIFICATE = "auto"
DEFAULT_LIPSCHITZ_CONSTANT = 1.0
DEFAULT_NORM = "l2"

#: Where ``--data fashion-mnist`` looks when ``--data-root`` is not given
#: (Debian's ``dataset-fashion-mnist`` package installs it there).
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Floating-point safety margin subtracted from every confidence gap before it
#: becomes a radius.  Logits come out of a float32 (or float64) forward pass;
#: rounding can make a computed gap larger than the true one.  We subtract
#: ``FLOAT_SAFETY_ULPS * finfo(dtype).eps * (1 + max_k |y_k|)`` from the gap
#: (computed in float64).  For float32 logits of magnitude ~10 this is ~8e-5,
#: far below any radius worth reporting, and it keeps a point that sits
#: exactly on the boundary (radius == eps) uncertified.
FLOAT_SAFETY_ULPS = 64

#: A progress bar is drawn when a run has at least this many examples.
PROGRESS_MIN_EXAMPLES = 512

#: ``lipcert demo``: certified accuracy is reported at these ε (pixel space,
#: Fashion-MNIST in [0, 1]); the brief attack runs at the largest of each.
DEMO_L2_EPS = (0.1, 0.3, 0.5)
DEMO_LINF_EPS = (0.1,)
DEMO_ATTACK_STEPS = 20
