"""Docs that cannot go stale: public surface, docstring examples, CLI help, README commands."""
import inspect
import re
from pathlib import Path

import click
import pytest

import skintrack
from skintrack.cli import main

ROOT = Path(__file__).parent.parent


def test_all_is_the_public_surface():
    public = {n for n in dir(skintrack) if not n.startswith("_") and not inspect.ismodule(getattr(skintrack, n))}
    assert set(skintrack.__all__) == public


@pytest.mark.parametrize("name", skintrack.__all__)
def test_public_names_have_docstrings(name):
    obj = getattr(skintrack, name)
    assert inspect.getdoc(obj), name
    if inspect.isfunction(obj):
        assert "Example" in inspect.getdoc(obj) or "Example" in inspect.getdoc(inspect.getmodule(obj)), name


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield " ".join(prefix + (name,)), cmd


@pytest.mark.parametrize("name, cmd", list(_commands(main)))
def test_every_command_has_help_with_an_example(name, cmd):
    assert cmd.help and "Example: skintrack " + name in cmd.help, name
    assert all(p.help for p in cmd.params if isinstance(p, click.Option) and p.name not in ("help",)), name


def test_readme_gives_the_two_commands_first_and_every_command():
    readme = (ROOT / "README.md").read_text()
    first = readme.index("make demo"), readme.index("make test")
    assert max(first) < readme.index("## ")
    for name, _ in _commands(main):
        assert f"skintrack {name}" in readme, name


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^test:", (ROOT / "Makefile").read_text(), re.M)
