"""The command line's lazy loading: `cnnlab --help`, a mistyped command and a bad flag answer
without importing torch or any command module; running a command imports its module alone; the
group's table of commands says what the commands themselves say."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest
import typer
import typer.main
import typer.testing

import cnnlab.cli
from cnnlab.cli import COMMANDS, app

# Prints whether torch is imported and which command modules are, after the given arguments.
PROBE = """
import sys
from typer.testing import CliRunner
from cnnlab.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
print(result.exit_code)
print("torch" in sys.modules)
print(sorted(name for name in sys.modules if name.endswith("_cmd")))
"""


def _probe(*arguments: str) -> tuple[int, bool, str]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *arguments], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    code, torch_imported, modules = run.stdout.splitlines()[-3:]
    return int(code), torch_imported == "True", modules


@pytest.mark.parametrize(
    ("arguments", "exit_code"),
    [(["--help"], 0), ([], 2), (["trian"], 2), (["--no-such-flag"], 2)],
    ids=["help", "no arguments", "unknown command", "bad flag"],
)
def test_the_top_level_answers_without_importing_torch(arguments, exit_code) -> None:
    assert _probe(*arguments) == (exit_code, False, "[]")


def test_a_bad_top_level_flag_is_one_red_line() -> None:
    result = typer.testing.CliRunner().invoke(app, ["--no-such-flag"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: No such option: --no-such-flag; see cnnlab --help"
    ]


def test_a_command_imports_its_own_module_alone() -> None:
    for command in ("data", "models"):
        code, _, modules = _probe(command, "--help")
        assert (code, modules) == (0, f"['cnnlab.cli.{command}_cmd']")


def test_the_help_lists_every_command_with_its_one_line_help() -> None:
    result = typer.testing.CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.replace("│", " ").split())  # rows wrapped in a box
    for name, (_, short_help) in COMMANDS.items():
        assert f" {name} {short_help} " in words


def _first_paragraph(command) -> str:
    """The help `cnnlab --help` shows for `command` when it is loaded: its first paragraph."""
    text = inspect.cleandoc(command.short_help or command.help or "")
    return " ".join(text.split("\n\n")[0].split())


def test_the_table_of_commands_matches_the_commands() -> None:
    """Every command module imported: each command it registers is in the table, with its
    module, and the table's one-line help is the first paragraph of the command's own help."""
    for module in pkgutil.iter_modules(cnnlab.cli.__path__):
        if module.name.endswith("_cmd"):
            importlib.import_module(f"cnnlab.cli.{module.name}")
    registered = {info.name: info.callback.__module__ for info in app.registered_commands}
    for group in app.registered_groups:
        registered[group.name] = group.typer_instance.registered_commands[0].callback.__module__
    assert registered == {name: f"cnnlab.cli.{module}" for name, (module, _) in COMMANDS.items()}
    group = typer.main.get_command(app)
    context = typer.Context(group)
    for name, (_, short_help) in COMMANDS.items():
        assert short_help == _first_paragraph(group.get_command(context, name)), name
