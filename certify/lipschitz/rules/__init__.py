"""Op rules, one module per family; importing this package fills :data:`~certify.lipschitz.registry.RULES`."""

from . import arithmetic, elementwise, linear, normalization, pooling, reductions, shape  # noqa: F401

FAMILIES = ("arithmetic", "elementwise", "linear", "normalization", "pooling", "reductions", "shape")
