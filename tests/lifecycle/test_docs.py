"""The README's lifecycle section and client snippet work as written."""

from __future__ import annotations

import re
import shlex

import pytest

from lifecycle.cli import build_parser

from ..conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
LIFECYCLE_DOC = (ROOT / "docs" / "lifecycle.md").read_text(encoding="utf-8")


def _commands(text: str) -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [shlex.split(line.split("#")[0]) for block in blocks for line in block.splitlines()
            if line.startswith("insurance ")]


@pytest.mark.parametrize("source", ["README.md", "docs/lifecycle.md"])
def test_every_insurance_command_shown_parses(source):
    text = README if source == "README.md" else LIFECYCLE_DOC
    commands = _commands(text)
    assert len(commands) >= 8
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv[1:])
        assert callable(args.func), argv


@pytest.mark.slow
def test_readme_client_snippet_runs(server, capsys):
    snippet = re.search(r"```python\n(from insurance_client import InsuranceClient\n.*?)```", README, re.S).group(1)
    snippet = snippet.replace("http://127.0.0.1:8080", server.http)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["lead"].decision in ("accept", "reject") and scope["claim"].decision.startswith("ML_")
    assert scope["same"].vertical == "auto"
