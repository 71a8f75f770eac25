"""The ``lipcert`` group: turns library errors into one ``Error: …`` line and a documented exit code
(0 ok, 1 gate failed, 2 usage or bad input, 3 runtime failure), naming the invoked command's flags."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .._version import __version__
from ..errors import EXIT_RUNTIME, LipcertError, in_terms_of
from .output import interrupt_on_sigterm

# --------------------------------------------------------------------------- group & errors


class LipcertGroup(click.Group):
    """Turns library errors into ``Error: …`` + exit code (tracebacks only with --debug)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Usage errors too are one line: ``Error: … (see 'lipcert CMD --help')``."""
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as err:
            cmd = err.ctx.command_path if err.ctx is not None else "lipcert"
            fail(f"{err.format_message()} (see '{cmd} --help')", err.exit_code)
        except click.ClickException as err:
            fail(err.format_message(), err.exit_code)
        except click.exceptions.Abort:
            fail("interrupted", 130)
        except click.exceptions.Exit as err:
            sys.exit(err.exit_code)
        return None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LipcertError as err:
            if _debug(ctx):
                raise
            fail(in_terms_of(err, self._flags(ctx)), err.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except MemoryError:
            fail("out of memory; lower --batch-size or --limit", EXIT_RUNTIME)
        except Exception as err:  # unexpected: one line, traceback with --debug
            if _debug(ctx):
                raise
            msg = str(err).strip().splitlines()
            fail(f"internal error: {type(err).__name__}: {msg[0] if msg else ''} (rerun with --debug for a traceback)",
                  EXIT_RUNTIME)


    def _flags(self, ctx: click.Context) -> dict[str, str]:
        """The invoked command's options by Python name: ``{"eps": "--eps", "data_source": "--data"}``."""
        cmd = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
        params = cmd.params if cmd is not None else []
        flags: dict[str, str] = {}
        for p in params:
            shown = max(p.opts, key=len) if isinstance(p, click.Option) else p.human_readable_name
            names = [p.name] + [o.lstrip("-").replace("-", "_") for o in p.opts if o.startswith("--")]
            flags.update({n: shown for n in names if n})  # --resume (resume_path) is "resume" too
        for library_name, option in LIBRARY_NAMES.items():  # the library's name for a value an option gives
            if option in flags:
                flags.setdefault(library_name, flags[option])
        return flags


#: Library parameter names that differ from the option's: load_dataset(source) is --data.
LIBRARY_NAMES = {"source": "data_source"}


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.meta.get("lipcert.debug")) or os.environ.get("LIPCERT_DEBUG") == "1"


def fail(message: str, code: int) -> None:
    """``Error: message`` on stderr and exit ``code``; under torchrun a rank other than 0 says which it
    is, and every rank leaves its message for the ranks waiting on it (:func:`certify.distributed.note_failure`)."""
    from ..distributed import SINGLE, note_failure, world_from_env

    try:
        world = world_from_env()
    except LipcertError:  # torchrun's variables are malformed: that is the message being shown
        world = SINGLE
    if world.distributed:
        note_failure(message, world)
        if not world.is_main:
            message = f"rank {world.rank}: {message}"
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(cls=LipcertGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lipcert")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """lipcert: how robust is a PyTorch classifier, provably and empirically?

    Exit codes: 0 ok, 1 gate failed, 2 usage or bad input, 3 runtime failure.
    """
    ctx.meta["lipcert.debug"] = debug
    ctx.with_resource(interrupt_on_sigterm())
