"""Moved: the PDF report to :mod:`certify.reporting.pdf`, the Markdown report to
:mod:`certify.reporting.markdown`, the strings they share to :mod:`certify.reporting.strings`.

This alias keeps old imports (``from certify.report import write_pdf``) working: every name of
the old module is re-exported from its new home, the same objects.
"""
from .reporting import markdown as _markdown
from .reporting import pdf as _pdf
from .reporting import strings as _strings
from .reporting.markdown import markdown, md_table  # noqa: F401
from .reporting.pdf import *  # noqa: F401,F403
from .reporting.strings import *  # noqa: F401,F403
from .threat import Norm as _Norm

for _moved in (_strings, _markdown, _pdf):
    globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
del _moved

#: The axis unit of each norm (now :func:`certify.reporting.pdf.distance_label`).
UNITS = {n.value: _pdf.distance_label(n) for n in _Norm}
