"""The ``lipcert`` command line: thin wrappers over the library.

Commands parse options, call library functions, and hand the returned dataclasses to
:mod:`certify.results` (JSON) and :mod:`certify.reporting` (tables, reports).  Library errors
(:class:`~certify.errors.LipcertError`) become one ``Error: …`` line on stderr, with the library's
parameter names replaced by this command's flags, and a documented exit code: 0 ok, 1 gate failed,
2 usage or bad input, 3 runtime failure.

:mod:`.app` is the group and its error handling; :mod:`.options` and :mod:`.output` are shared by
the commands, one module per command group (``*_cmd``).  Importing a command module registers it.
"""

from __future__ import annotations

from . import analyze_cmd, attack_cmd, certify_cmd, demo_cmd, lipschitz_cmd, suite_cmd, verify_cmd  # noqa: F401  (register)
from .app import main

__all__ = ["main"]
