"""Docs that are generated from the code stay in step with it.

Regenerate with:  LIPCERT_REGEN_DOCS=1 python -m pytest tests/test_docs.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
from click.testing import CliRunner

from certify.cli import main
from certify.flags import flags_markdown

REPO = Path(__file__).resolve().parents[1]
REGEN = os.environ.get("LIPCERT_REGEN_DOCS") == "1"


def cli_reference() -> str:
    parts = ["# CLI reference", "", "Generated from `--help`; `tests/test_docs.py` keeps it in step.", ""]
    runner = CliRunner()
    commands: list[list[str]] = [[]]
    ctx = click.Context(main)
    commands += [[name] for name in main.list_commands(ctx)]
    for cmd in commands:
        res = runner.invoke(main, [*cmd, "--help"], terminal_width=100, prog_name="lipcert")
        assert res.exit_code == 0, res.output
        title = " ".join(["lipcert", *cmd])
        parts += [f"## `{title}`", "", "```", res.output.rstrip(), "```", ""]
    return "\n".join(parts)


def check(path: Path, text: str) -> None:
    if REGEN:
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, f"{path} is stale: LIPCERT_REGEN_DOCS=1 pytest tests/test_docs.py"


def test_cli_reference_is_current():
    check(REPO / "docs" / "cli.md", cli_reference())


def test_flags_doc_is_current():
    check(REPO / "docs" / "flags.md", flags_markdown())


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    cmds = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(cmds) == 2, "the README opens with exactly two commands"
    test_cmd = cmds[1].split("&&")[-1].strip()
    pytest_args = test_cmd.split("-m pytest", 1)[1].strip()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert f"python -m pytest {pytest_args}" in ci
