"""The docs say what the CLI does (in the style of sqlite-utils' tests/test_docs.py).

Every `orchestrate ...` command line shown in README.md and docs/cli.md (in ```sh blocks and
in inline code) parses with the real parser and answers `--help`; those with `--dry-run` run
for real against the example jobs.yaml.  docs/cli.md documents every command with exactly its
options.  Lines added to these files later are picked up by the same extraction.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from orchestrator.cli import _parser
from orchestrator.config import load_config
from orchestrator.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "cli.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
HEADING = re.compile(r"^## `orchestrate (\w+)(.*)`$", re.MULTILINE)


def _command(text: str) -> str:
    """A shell line without its trailing comment."""
    return shlex.join(shlex.split(text, comments=True))


def command_lines() -> list[tuple[str, str]]:
    """(document, command line) of every `orchestrate` or `scripts/...` command in the docs."""
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        shell = [line for lang, body in FENCE.findall(text) if lang in ("sh", "bash", "console")
                 for line in body.splitlines()]
        prose = FENCE.sub("", text)
        inline = [span for span in INLINE.findall(prose) if "[" not in span]  # synopses are checked below
        for line in [*shell, *inline]:
            line = line.strip()
            if line.startswith(("orchestrate ", "scripts/")):
                found.append((doc.name, _command(line)))
    return sorted(set(found))


LINES = command_lines()


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """The long options of a command, its subcommands' included (`classifier train --out`)."""
    found = {o for a in parser._actions for o in a.option_strings if o.startswith("--")} - {"--help"}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
    return found


def test_the_docs_show_commands():
    """The extraction finds what it must (a regex gone wrong would make every test below vacuous)."""
    lines = {line for _, line in LINES}
    assert {"orchestrate submit jobs.yaml --dry-run", "orchestrate retry jobs.yaml --wait", "scripts/demo",
            "scripts/test"} <= lines
    assert len(LINES) >= 10


@pytest.fixture
def example(tmp_path, monkeypatch, make_clips):
    """The repository's example jobs.yaml as ./jobs.yaml, one recording for its inputs and an
    empty manifest (so that `retry --dry-run` has one to read)."""
    shutil.copyfile(ROOT / "jobs.yaml", tmp_path / "jobs.yaml")
    make_clips(tmp_path / "demo" / "media", 1)
    monkeypatch.chdir(tmp_path)
    Manifest(load_config(tmp_path / "jobs.yaml").manifest_path, create=True).close()
    return tmp_path


@pytest.mark.parametrize("doc, line", LINES, ids=[f"{doc}: {line}" for doc, line in LINES])
def test_every_command_line_in_the_docs_works(doc, line, example, cli, capsys):
    argv = shlex.split(line)
    if argv[0].startswith("scripts/"):
        script = ROOT / argv[0]
        assert script.is_file() and os.access(script, os.X_OK), f"{doc} shows {line}: no script {argv[0]}"
        return
    try:
        args = _parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{doc} shows `{line}`, which the parser rejects (exit {exc.code}): {capsys.readouterr().err}")
    with pytest.raises(SystemExit) as help_exit:
        _parser().parse_args([*argv[1:], "--help"])
    assert help_exit.value.code == 0 and f"usage: orchestrate {args.command}" in capsys.readouterr().out
    if getattr(args, "dry_run", False):
        run = cli(*argv[1:])
        assert run.code == 0, f"{doc} shows `{line}`: exit {run.code}\n{run.out}{run.err}"
        assert "dry run: nothing" in run.out


def test_cli_md_documents_every_command_with_exactly_its_options():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    headings = HEADING.findall(text)
    commands = _subparsers()
    assert sorted(name for name, _ in headings) == sorted(commands)
    sections = {m.group(1): part for part in re.split(r"^(?=## )", text, flags=re.MULTILINE)
                if (m := HEADING.match(part))}
    for name, synopsis in headings:
        parser = commands[name]
        assert set(re.findall(r"--[\w-]+", synopsis)) == _options(parser), f"docs/cli.md: the synopsis of {name}"
        mentioned = set(re.findall(r"(?<![\w-])--\w[\w-]*", sections[name]))
        assert mentioned <= _options(parser), f"docs/cli.md, {name}: options it does not have: {mentioned - _options(parser)}"
        choices = re.findall(r"\{([\w,]+)\}", synopsis)
        for group in choices:
            positional = [a for a in parser._actions if a.choices and not a.option_strings]
            assert [sorted(group.split(","))] == [sorted(a.choices) for a in positional], f"docs/cli.md: {name}"
