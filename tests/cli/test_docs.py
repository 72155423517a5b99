"""The documentation is tested: commands documented, Python blocks run, the diagram current."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from installengine.statemachine.cli import cli
from installengine.statemachine.lifecycle import STATES, TRANSITIONS

from .conftest import installengine

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

#: a fenced block, with the HTML comment on the line before it if there is one
_FENCE = re.compile(r"(?:^(?P<mark><!--[^\n]*-->)\n)?^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$",
                    re.M | re.S)


def blocks(path: Path, lang: str) -> list[tuple[str | None, str]]:
    return [(m["mark"], m["body"]) for m in _FENCE.finditer(path.read_text())
            if m["lang"] == lang]


def test_every_command_is_documented_and_has_help(invoke):
    text = (DOCS / "cli.md").read_text()
    for name, command in sorted(cli.commands.items()):
        assert re.search(rf"^## {re.escape(name)}$", text, re.M), f"docs/cli.md has no ## {name}"
        assert f"installengine {name}" in text
        assert (command.help or "").strip(), f"{name} has no help"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts} has no help"
            else:  # an argument: its metavar is in the command's synopsis in the docs
                assert f"installengine {name} {param.metavar}" in text, param
        result = invoke(name, "--help")
        assert result.exit_code == 0
        assert result.stdout.startswith(
            f"Usage: installengine {name}")


def test_every_documented_command_exists():
    text = (DOCS / "cli.md").read_text()
    documented = set(re.findall(r"^## ([a-z]+)$", text, re.M)) - {"exit"}
    assert documented <= set(cli.commands)


def test_markdown_files_have_python_blocks_to_test():
    assert len(MARKDOWN) >= 7
    assert sum(len(blocks(p, "python")) for p in MARKDOWN) >= 10


@pytest.mark.parametrize("path", [p for p in MARKDOWN if blocks(p, "python")],
                         ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    """Every Python block runs, in order, in one namespace per file, in a fresh directory.

    A block marked `<!-- not-runnable: why -->` on the line before its fence is skipped.
    """
    found = blocks(path, "python")
    runnable = [body for mark, body in found if not (mark and "not-runnable" in mark)]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for i, body in enumerate(runnable):
        exec(compile(body, f"{path.name}, Python block {i + 1}", "exec"), namespace)


def test_not_runnable_blocks_are_rare():
    marks = [mark for p in MARKDOWN for mark, _ in blocks(p, "python")
             if mark and "not-runnable" in mark]
    assert len(marks) <= 3
    assert all(re.fullmatch(r"<!-- not-runnable: .+ -->", m) for m in marks), marks


def test_lifecycle_doc_holds_the_output_of_installengine_diagram():
    [(_, mermaid)] = blocks(DOCS / "lifecycle.md", "mermaid")
    done = installengine("diagram")
    assert done.returncode == 0
    # Trailing blanks are not compared: editors strip them, Mermaid ignores them.
    assert [line.rstrip() for line in mermaid.splitlines()] == [
        line.rstrip() for line in done.stdout.splitlines()]


def test_the_documented_diagram_has_every_state_and_transition():
    [(_, mermaid)] = blocks(DOCS / "lifecycle.md", "mermaid")
    nodes = set(re.findall(r'^\s*state "(\w+)" as \w+$', mermaid, re.M))
    edges = set(re.findall(r"^\s*(\w+) --> (\w+): (\w+)$", mermaid, re.M))
    assert nodes == set(STATES)
    expected = {(source, t["dest"], t["trigger"]) for t in TRANSITIONS
                for source in (t["source"] if isinstance(t["source"], list) else [t["source"]])}
    assert edges == expected


def test_readme_keeps_the_test_command_marker_and_the_demo_command():
    text = (ROOT / "README.md").read_text()
    after = text[text.index("<!-- test-command -->"):]
    command = after.split("```sh\n", 1)[1].split("\n```", 1)[0]
    assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install")
    assert "pytest" in command
    assert "pip install -q . && installengine demo" in text
