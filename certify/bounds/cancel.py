"""Cooperative stopping of a long bound computation (a spent ``--certificate-budget``).

:func:`stop_when` installs a predicate for the computations inside its ``with`` block; every backward
pass (:func:`.crown.backward`, so every CROWN chunk and every α-CROWN step) first calls
:func:`checkpoint`, which raises :class:`BoundsStopped` once the predicate says so.  Whoever set the
predicate catches it and keeps only results that were complete before it: a stopped computation
never yields a bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_STOP: ContextVar[Callable[[], bool] | None] = ContextVar("lipcert_bounds_stop", default=None)


class BoundsStopped(Exception):
    """Raised inside a bound computation whose stop predicate came true (not an error: a budget)."""


@contextmanager
def stop_when(stop: Callable[[], bool] | None) -> Iterator[None]:
    token = _STOP.set(stop)
    try:
        yield
    finally:
        _STOP.reset(token)


def checkpoint() -> None:
    stop = _STOP.get()
    if stop is not None and stop():
        raise BoundsStopped
