"""File input/output shared by every command: atomic writes and YAML reading.

Writes go to a temporary file in the same directory and are renamed into
place, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import BadInputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise BadInputError(f"output {str(target)!r} is a directory; give a file path")
    if not parent.exists():
        raise BadInputError(f"output directory {str(parent)!r} does not exist; create it first")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.tmp-", suffix=target.suffix, dir=parent)
    except OSError as err:
        raise BadInputError(f"cannot write {str(target)!r}: {err.strerror}; choose a writable path") from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give outputs the usual mode
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def load_yaml_file(path: str | os.PathLike[str]) -> Any:
    """Read a YAML file; syntax errors become one line naming the line number."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"YAML file {str(p)!r} does not exist or is not a file")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        raise BadInputError(f"{str(p)!r}: YAML syntax error at {where}: {err.problem}") from err
    except yaml.YAMLError as err:
        raise BadInputError(f"{str(p)!r}: YAML error: {err}") from err
