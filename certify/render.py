"""Moved: the results JSON to :mod:`certify.results`, its rendering to :mod:`certify.reporting`.

This alias keeps old imports (``from certify.render import gate_junit``) working: every name of
the old module is re-exported from its new home, the same objects.
"""
from . import results as _results
from .reporting import examples_csv as _examples_csv
from .reporting import junit as _junit
from .reporting import markdown as _markdown
from .reporting import strings as _strings
from .reporting import tables as _tables
from .reporting.examples_csv import *  # noqa: F401,F403
from .reporting.junit import *  # noqa: F401,F403
from .reporting.markdown import gate_markdown  # noqa: F401
from .reporting.strings import gate_failure_message, gate_rows, pct  # noqa: F401
from .reporting.tables import *  # noqa: F401,F403
from .results import *  # noqa: F401,F403

for _moved in (_strings, _markdown, _junit, _examples_csv, _tables, _results):
    globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
del _moved
