"""VNN-LIB properties ([SCIENCE] §7): parse the classification-robustness subset and verify it.

=====================  ==================================================================
module                 owns
=====================  ==================================================================
:mod:`~.parser`        :func:`read_vnnlib`, :class:`Property` (input box, unsafe region in DNF)
:mod:`~.falsify`       PGD on the property's violation objective, and the exact re-check
:mod:`~.verify`        :func:`verify` → :class:`VerifyResult` (sat / unsat / unknown / timeout)
:mod:`~.instances`     VNN-COMP benchmark folders (``instances.csv``) and result files
=====================  ==================================================================
"""

from __future__ import annotations

from .parser import Atom, Property, parse_vnnlib, read_vnnlib

__all__ = ["Atom", "Property", "parse_vnnlib", "read_vnnlib"]
