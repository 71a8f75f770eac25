"""The op-rule registry: one :class:`Rule` per ATen overload, with a check for every argument.

A rule is registered for exact overloads (``"aten.max.dim"``, not ``max``), and it
must name every argument of the overload's schema with a :data:`Check`.  So a
rule can never silently ignore an argument that changes the op's Lipschitz
constant (a threshold, an order, a scale, a divisor, a repeat count): adding an
overload whose schema has an argument the rule does not list fails at import
time, and a value a check refuses makes the node unverifiable, naming the op,
the argument and the node.

Checks receive the argument's concrete value (``VAR`` arguments may depend on
the input; every other argument must be a constant of the graph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

if TYPE_CHECKING:
    from .analyser import Analyser, Var


class NoRule(Exception):
    """The op has no sound rule for these arguments; ``str`` says which argument and why."""


#: An argument check: returns normally when the value is acceptable, raises :class:`NoRule` otherwise.
Check = Callable[[Any], None]


def VAR(value: Any) -> None:
    """The argument may depend on the input (the rule handles it)."""


def CONST(value: Any) -> None:
    """Any constant value; the rule reads it."""


def NO_EFFECT(value: Any) -> None:
    """A constant that cannot change the values computed (layout, device, memory format, pinning)."""


def _same(value: Any, allowed: Any) -> bool:
    if value is None or allowed is None or isinstance(value, bool) or isinstance(allowed, bool):
        return value is allowed
    return type(value) is type(allowed) and value == allowed


def eq(*allowed: Any) -> Check:
    def check(value: Any) -> None:
        if not any(_same(value, a) for a in allowed):
            raise NoRule(f"only {' or '.join(map(repr, allowed))} is supported, got {_short(value)}")
    check.__doc__ = f"one of {allowed!r}"
    return check


def finite(value: Any) -> None:
    if not _is_number(value) or not math.isfinite(float(value)):
        raise NoRule(f"expected a finite number, got {_short(value)}")


def positive(value: Any) -> None:
    if not _is_number(value) or not float(value) > 0 or not math.isfinite(float(value)):
        raise NoRule(f"expected a positive finite number, got {_short(value)}")


def nonnegative(value: Any) -> None:
    if not _is_number(value) or not float(value) >= 0 or not math.isfinite(float(value)):
        raise NoRule(f"expected a non-negative finite number, got {_short(value)}")


def optional(check: Check) -> Check:
    def inner(value: Any) -> None:
        if value is not None:
            check(value)
    return inner


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


RuleFn = Callable[["Analyser", "Bound"], "Var"]
#: Batch check: True when output row i depends only on input example i (see the analyser docs).
BatchFn = Callable[["Analyser", "Bound"], bool]


@dataclass(frozen=True)
class Bound:
    """A node's arguments bound to its schema: ``raw`` (fx nodes or constants) and concrete ``values``."""

    node: Any
    raw: Mapping[str, Any]
    values: Mapping[str, Any]
    out: Any  #: the node's computed value

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


@dataclass(frozen=True)
class Rule:
    op: str  #: ``aten.relu.default``
    family: str  #: the module that defines it
    args: Mapping[str, Check]
    fn: RuleFn
    batch: BatchFn


#: op key → rule.  Public: the fuzzer and the docs enumerate it.
RULES: dict[str, Rule] = {}


def op_key(target: Any) -> str:
    """``aten.relu.default`` for ATen overloads, ``getitem`` for ``operator.getitem``."""
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._overloadpacket.__name__}.{target._overloadname}"
    return getattr(target, "__name__", str(target))


def short_name(target: Any) -> str:
    """The op's name as users know it (``relu``, ``max_pool2d``)."""
    packet = getattr(target, "_overloadpacket", None)
    return packet.__name__ if packet is not None else getattr(target, "__name__", str(target))


def schema_args(op: str) -> list[str]:
    ns, name, overload = op.split(".")
    target = getattr(getattr(getattr(torch.ops, ns), name), overload)
    return [a.name for a in target._schema.arguments]


def rule(*ops: str, args: Mapping[str, Check], batch: BatchFn) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` for ``ops``; ``args`` must name exactly the schema's arguments."""

    def deco(fn: RuleFn) -> RuleFn:
        family = fn.__module__.rsplit(".", 1)[-1]
        for op in ops:
            if op in RULES:
                raise RuntimeError(f"two rules for {op}")
            if op != "getitem":
                names = schema_args(op)
                if sorted(names) != sorted(args):
                    raise RuntimeError(f"rule for {op} checks {sorted(args)} but the schema has {sorted(names)}")
            RULES[op] = Rule(op, family, dict(args), fn, batch)
        return fn

    return deco


def bind(node: Any, values_of: Callable[[Any], Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Map a node's args and kwargs onto its schema's argument names, defaults filled in."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        raw = {f"arg{i}": a for i, a in enumerate(node.args)}
        return raw, {k: values_of(v) for k, v in raw.items()}
    raw: dict[str, Any] = {}
    arguments = target._schema.arguments
    if len(node.args) > len(arguments):
        raise NoRule("more positional arguments than the schema has")
    for arg, value in zip(arguments, node.args):
        raw[arg.name] = value
    for name, value in node.kwargs.items():
        if name in raw:
            raise NoRule(f"argument {name} given twice")
        raw[name] = value
    known = {a.name for a in arguments}
    unknown = set(raw) - known
    if unknown:
        raise NoRule(f"arguments {sorted(unknown)} are not in the schema")
    for arg in arguments:
        if arg.name not in raw:
            if not arg.has_default_value():
                raise NoRule(f"argument {arg.name} is missing")
            raw[arg.name] = arg.default_value
    return raw, {k: values_of(v) for k, v in raw.items()}
