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
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give outputs the usual mode
            os.replace(tmp, target)
        except OSError as err:
            raise _write_error(target, err) from err
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


# --------------------------------------------------------------------------- output sets


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """Before any work: every output path is writable, no two outputs coincide, none is an input.

    ``outputs`` maps an option name (``--json``) to its path (None or ``-`` = not a file);
    ``inputs`` maps a description (``the model``) to the path it was read from.
    """
    seen: dict[str, str] = {}
    for flag, path in outputs.items():
        if not path or path == "-":
            continue
        target = Path(path)
        for what, src in inputs.items():
            if src and src != "-" and _same_file(target, Path(src)):
                raise BadInputError(f"{flag} {str(path)!r} is {what}: lipcert never overwrites an input; "
                                    "choose another output path")
        key = os.path.realpath(target)
        if key in seen:
            raise BadInputError(f"{flag} and {seen[key]} both write {str(path)!r}; give each output its own path")
        seen[key] = flag
        _check_writable(flag, target)


def _check_writable(flag: str, target: Path) -> None:
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise BadInputError(f"{flag} {str(target)!r} is a directory; give a file path")
    if not parent.is_dir():
        raise BadInputError(f"{flag}: output directory {str(parent)!r} does not exist; create it first")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lipcert-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise BadInputError(f"{flag}: cannot write in {str(parent)!r} ({err.strerror}); choose a writable path") \
            from err


class OutputSet:
    """Files staged next to their targets and moved into place together: all of them or none."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def path(self, target: str | os.PathLike[str]) -> Path:
        """A staging path for ``target`` (for writers that need a file name, like the PDF)."""
        t = Path(target)
        parent = t.parent if str(t.parent) else Path(".")
        if t.is_dir():
            raise BadInputError(f"output {str(t)!r} is a directory; give a file path")
        try:
            fd, name = tempfile.mkstemp(prefix=f".{t.stem}.tmp-", suffix=t.suffix, dir=parent)
        except OSError as err:
            raise _write_error(t, err) from err
        os.close(fd)
        self._staged.append((Path(name), t))
        return Path(name)

    def text(self, target: str | os.PathLike[str], text: str) -> None:
        tmp = self.path(target)
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as err:
            raise _write_error(Path(target), err) from err

    def commit(self) -> None:
        mode = 0o666 & ~_umask()
        for tmp, target in self._staged:
            os.chmod(tmp, mode)
        for tmp, target in self._staged:
            os.replace(tmp, target)
        self._staged = []

    def discard(self) -> None:
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._staged = []


@contextlib.contextmanager
def output_set() -> Iterator[OutputSet]:
    """``with output_set() as out: out.text(a, …); out.text(b, …)`` writes a and b, or neither."""
    out = OutputSet()
    try:
        yield out
    except BaseException:
        out.discard()
        raise
    try:
        out.commit()
    except OSError as err:
        out.discard()
        raise _write_error(Path("output"), err) from err


def _write_error(target: Path, err: OSError) -> Exception:
    import errno

    from .errors import RuntimeFailure

    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return RuntimeFailure(f"cannot write {str(target)!r}: no space left on the device; free some space and rerun "
                              "(no output was written)")
    return BadInputError(f"cannot write {str(target)!r}: {err.strerror or err}; choose a writable path")
