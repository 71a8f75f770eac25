"""The lipcert version, in a leaf module so that ``lipcert --version`` imports nothing heavy.

Kept equal to ``[project] version`` in ``pyproject.toml`` (``tests/test_cli_startup.py`` checks it).
"""

__version__ = "0.1.0"
