"""Exceptions with exit codes.

Every user-facing failure is one of these.  The CLI turns them into a single
``Error: …`` line and the exit code below (documented in the README).

====  ==========================================
code  meaning
====  ==========================================
0     ok
1     gate failed
2     usage or bad input
3     runtime failure (including a violated certificate)
====  ==========================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3


class LipcertError(Exception):
    """Base class: ``str(err)`` is the one line shown to the user.

    The library speaks in values: when one argument was wrong, ``param`` names it (the Python
    parameter, e.g. ``"eps"``) and the message names it the same way.  The CLI swaps that name
    for its flag (``--eps``) with :func:`in_terms_of`, so only the CLI knows its flags.
    """

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str = "", *, param: str | tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.param = param


class BadInputError(LipcertError, ValueError):
    """The user gave something lipcert cannot use (exit code 2)."""

    exit_code = EXIT_USAGE


class UnsafeCheckpointError(BadInputError):
    """A checkpoint would need arbitrary unpickling (exit code 2)."""


class LipschitzUnverifiedError(BadInputError):
    """A Lipschitz property was requested or declared but could not be verified."""


class RuntimeFailure(LipcertError, RuntimeError):
    """Something went wrong while running (exit code 3)."""

    exit_code = EXIT_RUNTIME


class CertificateViolation(RuntimeFailure):
    """An attack succeeded inside a certified radius: a bug or a false Lipschitz claim."""


class GateFailed(LipcertError):
    """A robustness gate failed (exit code 1)."""

    exit_code = EXIT_GATE_FAILED


def short_repr(value: object, limit: int = 80) -> str:
    """``repr`` for error messages, cut to ``limit`` characters without building the whole repr.

    A hostile value (a YAML "billion laughs" alias bomb, a huge list) must not cost
    seconds or gigabytes just to be quoted in an error message.
    """
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = max(limit - 10, 10)
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 6
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def in_terms_of(err: LipcertError, flags: dict[str, str]) -> str:
    """``str(err)`` with its parameters' names replaced by the caller's names for them (CLI flags).

    ``flags`` maps Python parameter names to what the caller calls them (``{"eps": "--eps"}``).
    ``err.param`` is one name or a tuple of names.  For each, the first whole-word mention outside
    quotes and paths is replaced (so ``'/data/arch/m.pt'`` or ``norm.yaml`` stay as they are); a
    message that never mentions the first gets its name as a prefix, so the user always learns
    which input was wrong.
    """
    import re

    message = str(err)
    names = getattr(err, "param", None)
    names = (names,) if isinstance(names, str) else tuple(names or ())
    for k, name in enumerate(n for n in names if n in flags):
        pattern = re.compile(rf"(?<![\w./-]){re.escape(name)}(?![\w/-]|\.\w)")
        parts = re.split(r"('[^']*'|\"[^\"]*\")", message)  # odd parts are quoted
        for j in range(0, len(parts), 2):
            if pattern.search(parts[j]):
                parts[j] = pattern.sub(lambda _: flags[name], parts[j], count=1)
                break
        else:
            if k == 0:
                parts[0] = f"{flags[name]}: {parts[0]}"
        message = "".join(parts)
    return message
