"""Reading the VNN-LIB subset used for classification robustness into a :class:`Property`.

Supported (anything else is refused with a :class:`~certify.errors.BadInputError` naming the
construct and its line):

- ``(declare-const X_i Real)`` and ``(declare-const Y_j Real)``, indices 0..n−1 without gaps;
- input bounds ``(assert (<= X_i c))``, ``(assert (>= X_i c))`` (either side may be the constant),
  also inside a top-level ``(and …)``; every X_i needs both bounds;
- output constraints: linear (in)equalities ``<= >= < >`` between linear terms over Y
  (constants, ``Y_j``, ``(+ …)``, ``(- …)``, ``(* c e)``), combined by ``and`` and ``or``.  Several
  output assertions are a conjunction.  They describe the **unsafe** region ([SCIENCE] §7).

The output condition is kept in disjunctive normal form: a tuple of clauses, each a tuple of
:class:`Atom` (``a·Y ≤ b``, or ``<`` when strict), with exact rational coefficients.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

from ..errors import BadInputError, short_repr

#: The most clauses a property's output condition may expand to (and/or products).
MAX_CLAUSES = 10_000
#: The largest magnitude of a constant or coefficient (beyond it, float conversions overflow).
MAX_CONSTANT = Fraction(10) ** 30
#: The deepest nesting of parentheses read.
MAX_DEPTH = 64
#: The largest property file read.
MAX_FILE_BYTES = 64 << 20

Sexp = Union[str, list]  # an atom or a list, each list carrying its line in _LINES


@dataclass(frozen=True)
class Atom:
    """``Σ coeffs[j]·Y_j ≤ bound`` (``<`` when ``strict``), exact rationals."""

    coeffs: tuple[tuple[int, Fraction], ...]  #: (j, coefficient), sorted by j, no zeros
    bound: Fraction
    strict: bool

    def holds(self, y: Any) -> bool:
        """Exact check on the values ``y`` (floats are read exactly as rationals)."""
        lhs = sum((c * Fraction(float(y[j])) for j, c in self.coeffs), Fraction(0))
        return lhs < self.bound if self.strict else lhs <= self.bound


@dataclass(frozen=True)
class Property:
    """An input box and an unsafe output region (see the module docs)."""

    path: str
    lower: tuple[Fraction, ...]  #: per input X_i, exactly as written
    upper: tuple[Fraction, ...]
    num_outputs: int
    clauses: tuple[tuple[Atom, ...], ...]  #: unsafe iff some clause has all its atoms true

    @property
    def num_inputs(self) -> int:
        return len(self.lower)

    def box(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The input box in float64, rounded outwards (it contains the exact box)."""
        return tuple(_down(v) for v in self.lower), tuple(-_down(-v) for v in self.upper)

    def contains(self, x: Any) -> bool:
        """Whether the inputs ``x`` lie in the exact box."""
        return all(lo <= Fraction(float(v)) <= hi for v, lo, hi in zip(x, self.lower, self.upper))

    def unsafe(self, y: Any) -> bool:
        """Whether the outputs ``y`` lie in the unsafe region (exact arithmetic)."""
        return any(all(a.holds(y) for a in clause) for clause in self.clauses)

    def robustness_label(self) -> int | None:
        """c when every clause is one atom ``Y_j ≥ Y_c`` (or ``>``) with j ≠ c: a robustness property."""
        labels = set()
        for clause in self.clauses:
            if len(clause) != 1 or clause[0].bound != 0 or len(clause[0].coeffs) != 2:
                return None
            (j1, c1), (j2, c2) = clause[0].coeffs
            if sorted((c1, c2)) != [-1, 1]:
                return None
            labels.add(j1 if c1 == 1 else j2)  # Y_c − Y_j ≤ 0
        return labels.pop() if len(labels) == 1 else None


def _down(v: Fraction) -> float:
    f = float(v)
    return f if Fraction(f) <= v else math.nextafter(f, -math.inf)


def read_vnnlib(path: str | os.PathLike[str]) -> Property:
    """Parse a ``.vnnlib`` file (see the module docs)."""
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"property {str(p)!r} does not exist or is not a file", param="property")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise BadInputError(f"property {str(p)!r} is over {MAX_FILE_BYTES >> 20} MiB", param="property")
    data = p.read_bytes()
    if data[:2] == b"\x1f\x8b":  # VNN-COMP ships many properties gzipped
        data = gunzip(data, MAX_FILE_BYTES, str(p))
    return parse_vnnlib(data.decode("utf-8", errors="replace"), str(p))


def gunzip(data: bytes, limit: int, where: str) -> bytes:
    """Decompress gzip ``data``, refusing more than ``limit`` bytes of output (no gzip bomb)."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as err:
        raise BadInputError(f"{where!r} is a damaged gzip file ({err})") from err
    if len(out) > limit:
        raise BadInputError(f"{where!r} decompresses to over {limit >> 20} MiB")
    return out


def parse_vnnlib(text: str, where: str = "<property>") -> Property:
    return _Builder(where).build(_sexps(text, where))


_TOKEN = re.compile(r"\s*(?:(;[^\n]*)|(\()|(\))|([^\s()]+))")


class _List(list):  # type: ignore[type-arg]
    line = 0


def _sexps(text: str, where: str) -> list[Sexp]:
    stack: list[_List] = [_List()]
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            break
        line += text.count("\n", pos, m.end())
        pos = m.end()
        if m.group(2):
            if len(stack) > MAX_DEPTH:
                raise BadInputError(f"{where}:{line}: nesting deeper than {MAX_DEPTH} levels", param="property")
            new = _List()
            new.line = line
            stack[-1].append(new)
            stack.append(new)
        elif m.group(3):
            if len(stack) == 1:
                raise BadInputError(f"{where}:{line}: unbalanced ')'", param="property")
            stack.pop()
        elif m.group(4):
            stack[-1].append(m.group(4))
    if len(stack) != 1:
        raise BadInputError(f"{where}: unbalanced '(' (opened at line {stack[-1].line})", param="property")
    return stack[0]


_VAR = re.compile(r"([XY])_(\d+)\Z")


def _number(tok: Any) -> Fraction | None:
    if not isinstance(tok, str) or _VAR.match(tok):
        return None
    try:
        value = Fraction(tok)
    except (ValueError, ZeroDivisionError):
        return None
    return value


class _Builder:
    def __init__(self, where: str):
        self.where = where
        self.declared: dict[str, set[int]] = {"X": set(), "Y": set()}
        self.lower: dict[int, Fraction] = {}
        self.upper: dict[int, Fraction] = {}
        self.dnf: list[tuple[Atom, ...]] = [()]

    def refuse(self, sexp: Any, what: str) -> BadInputError:
        line = getattr(sexp, "line", 0)
        return BadInputError(f"{self.where}:{line}: {what} is not in the supported VNN-LIB subset (declare-const, "
                             "input bounds, linear output constraints with and/or)", param="property")

    def build(self, top: list[Sexp]) -> Property:
        for form in top:
            if not isinstance(form, list) or not form or not isinstance(form[0], str):
                raise self.refuse(form, f"top-level {short_repr(form, 40)}")
            head = form[0]
            if head == "declare-const":
                self._declare(form)
            elif head == "assert" and len(form) == 2:
                self._assert(form[1])
            else:
                raise self.refuse(form, f"'({head} …)'")
        return self._property()

    def _declare(self, form: list[Sexp]) -> None:
        m = _VAR.match(form[1]) if len(form) == 3 and isinstance(form[1], str) else None
        if m is None or form[2] != "Real":
            raise self.refuse(form, f"declaration {short_repr(form, 60)} (expected X_i or Y_j of sort Real)")
        index = int(m.group(2))
        if index in self.declared[m.group(1)]:
            raise BadInputError(f"{self.where}:{form.line}: {form[1]} is declared twice", param="property")  # type: ignore[union-attr]
        self.declared[m.group(1)].add(index)

    def _assert(self, e: Sexp) -> None:
        if self._input_bound(e):
            return
        if isinstance(e, list) and e and e[0] == "and" and all(self._is_input_bound(a) for a in e[1:]):
            for a in e[1:]:
                self._input_bound(a)
            return
        clauses = self._dnf(e)
        product = [c + d for c in self.dnf for d in clauses]
        if len(product) > MAX_CLAUSES:
            raise self.refuse(e, f"an output condition of over {MAX_CLAUSES} clauses")
        self.dnf = product

    def _is_input_bound(self, e: Sexp) -> bool:
        return (isinstance(e, list) and len(e) == 3 and e[0] in ("<=", ">=")
                and any(isinstance(t, str) and t.startswith("X_") for t in e[1:]))

    def _input_bound(self, e: Sexp) -> bool:
        if not self._is_input_bound(e):
            return False
        op, a, b = e  # type: ignore[misc]
        var, const, var_left = (a, _number(b), True) if _number(a) is None else (b, _number(a), False)
        m = _VAR.match(var) if isinstance(var, str) else None
        if m is None or m.group(1) != "X" or const is None:
            raise self.refuse(e, f"input constraint {short_repr(e, 60)} (expected (<= X_i c) or (>= X_i c))")
        if abs(const) > MAX_CONSTANT:
            raise self.refuse(e, f"an input bound beyond ±1e30 in {short_repr(e, 60)}")
        index = int(m.group(2))
        upper = (op == "<=") == var_left
        table = self.upper if upper else self.lower
        table[index] = min(table[index], const) if (upper and index in table) else \
            max(table[index], const) if index in table else const
        return True

    def _dnf(self, e: Sexp) -> list[tuple[Atom, ...]]:
        if isinstance(e, list) and e and e[0] in ("and", "or"):
            parts = [self._dnf(a) for a in e[1:]]
            if not parts:
                raise self.refuse(e, f"an empty ({e[0]})")
            if e[0] == "or":
                return [c for part in parts for c in part]
            out: list[tuple[Atom, ...]] = [()]
            for part in parts:
                out = [c + d for c in out for d in part]
                if len(out) > MAX_CLAUSES:
                    raise self.refuse(e, f"an output condition of over {MAX_CLAUSES} clauses")
            return out
        return [(self._atom(e),)]

    def _atom(self, e: Sexp) -> Atom:
        if not (isinstance(e, list) and len(e) == 3 and e[0] in ("<=", ">=", "<", ">")):
            what = f"'({e[0]} …)'" if isinstance(e, list) and e and isinstance(e[0], str) else short_repr(e, 40)
            raise self.refuse(e, what)
        left, right = self._linear(e[1]), self._linear(e[2])
        diff = {j: left.get(j, 0) - right.get(j, 0) for j in set(left) | set(right)}
        const = diff.pop(-1, Fraction(0))
        if e[0] in (">=", ">"):
            diff, const = {j: -c for j, c in diff.items()}, -const
        coeffs = tuple(sorted((j, c) for j, c in diff.items() if c != 0))  # Σ c·Y + const ≤ 0
        if any(abs(v) > MAX_CONSTANT for v in [const] + [c for _, c in coeffs]):
            raise self.refuse(e, f"a constant or coefficient beyond ±1e30 in {short_repr(e, 60)}")
        return Atom(coeffs=coeffs, bound=-const, strict=e[0] in ("<", ">"))

    def _linear(self, e: Sexp) -> dict[int, Fraction]:
        """A linear term over Y as {j: coefficient, -1: constant}."""
        value = _number(e)
        if value is not None:
            return {-1: value}
        if isinstance(e, str):
            m = _VAR.match(e)
            if m is None or m.group(1) != "Y":
                raise self.refuse(e, f"the term {short_repr(e, 40)} in an output constraint")
            return {int(m.group(2)): Fraction(1)}
        if not e or e[0] not in ("+", "-", "*"):
            raise self.refuse(e, f"'({e[0] if e else ''} …)' in an output constraint")
        terms = [self._linear(a) for a in e[1:]]
        if e[0] == "*":
            return self._product(e, terms)
        if e[0] == "-" and len(terms) == 1:
            return {j: -c for j, c in terms[0].items()}
        out: dict[int, Fraction] = {}
        for k, t in enumerate(terms):
            sign = -1 if (e[0] == "-" and k > 0) else 1
            for j, c in t.items():
                out[j] = out.get(j, Fraction(0)) + sign * c
        return out

    def _product(self, e: Sexp, terms: list[dict[int, Fraction]]) -> dict[int, Fraction]:
        out = {-1: Fraction(1)}
        for t in terms:
            if set(t) == {-1}:
                out = {j: c * t[-1] for j, c in out.items()}
            elif set(out) == {-1}:
                out = {j: c * out[-1] for j, c in t.items()}
            else:
                raise self.refuse(e, "a product of two variables (non-linear)")
        return out

    def _property(self) -> Property:
        xs, ys = self.declared["X"], self.declared["Y"]
        for name, idx in (("X", xs), ("Y", ys)):
            if not idx or idx != set(range(len(idx))):
                raise BadInputError(f"{self.where}: the {name}_i declared must be {name}_0 … {name}_(n−1) without gaps",
                                    param="property")
        used = {i for i in list(self.lower) + list(self.upper)} - xs
        if used:
            raise BadInputError(f"{self.where}: X_{min(used)} is bounded but not declared", param="property")
        for i in sorted(xs):
            if i not in self.lower or i not in self.upper:
                raise BadInputError(f"{self.where}: X_{i} needs both a lower and an upper bound", param="property")
            if self.lower[i] > self.upper[i]:
                raise BadInputError(f"{self.where}: X_{i} has an empty range [{float(self.lower[i])}, "
                                    f"{float(self.upper[i])}]", param="property")
        bad = [j for clause in self.dnf for a in clause for j, _ in a.coeffs if j not in ys]
        if bad:
            raise BadInputError(f"{self.where}: Y_{bad[0]} is used but not declared", param="property")
        if self.dnf == [()]:
            raise BadInputError(f"{self.where}: the property has no output constraint", param="property")
        n = len(xs)
        return Property(path=self.where, lower=tuple(self.lower[i] for i in range(n)),
                        upper=tuple(self.upper[i] for i in range(n)), num_outputs=len(ys),
                        clauses=tuple(self.dnf))
