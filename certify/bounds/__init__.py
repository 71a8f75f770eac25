"""Sound bound propagation for ordinary networks: IBP, CROWN and α-CROWN, and certified radii
(``docs/bounds.md``)."""

from .graph import UnverifiableOpError, network_from_module, network_from_program
from .inputs import InputSet
from .layers import Network
from .radius import (
           METHODS,
           BoundSettings,
           certified,
           certified_radii,
           margin_bounds,
           specification,
)

__all__ = ["METHODS", "BoundSettings", "InputSet", "Network", "UnverifiableOpError", "certified",
           "certified_radii", "margin_bounds", "network_from_module", "network_from_program", "specification"]
