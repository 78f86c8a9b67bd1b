"""The `cnnlab` command line: a thin typer app over the library.

Each command group lives in its own module and registers itself on `app`. Errors a user can
cause (`CnnlabError`) become one red line and exit code 2; anything else is a bug and keeps
its traceback. Warnings for the user (`CnnlabWarning`) print as one yellow line each.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from cnnlab.errors import CnnlabError, CnnlabWarning

try:  # typer 0.29 and later parse with their own copy of click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:
    from click.exceptions import NoArgsIsHelpError, UsageError

console = Console()
error_console = Console(stderr=True)


def print_table(table: Table) -> None:
    """Print `table` at the terminal's width, or at its natural width into a pipe or file.

    Rich assumes 80 columns when the output is not a terminal and would cut paths and numbers.
    """
    if console.is_terminal:
        console.print(table)
        return
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    Console(file=console.file, width=natural).print(table)


class _CnnlabGroup(TyperGroup):
    """Runs the commands; a `CnnlabError` or a usage error (unknown option, missing argument)
    becomes one red line on stderr and its exit code.

    Handled here rather than around `app()` so that `typer.testing.CliRunner` sees it too.
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, fill_optional_values(args))

    def invoke(self, ctx: typer.Context) -> object:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", CnnlabWarning)
                warnings.showwarning = _one_line_warnings(warnings.showwarning)
                return super().invoke(ctx)
        except CnnlabError as error:
            _print_error(str(error))
            raise typer.Exit(error.exit_code) from None
        except NoArgsIsHelpError:
            raise  # `cnnlab data` alone shows the group's help
        except UsageError as error:  # an unknown option, a missing argument, a bad value
            where = f"; see {error.ctx.command_path} --help" if error.ctx else ""
            _print_error(error.format_message().rstrip(".") + where)
            raise typer.Exit(error.exit_code) from None


# Options whose value may be left out, and the value they then take (typer has no such option).
OPTIONAL_VALUES = {"--ray": "local"}


def fill_optional_values(args: list[str]) -> list[str]:
    """`--ray` given last or before another option becomes `--ray=local`."""
    filled = list(args)
    for index, arg in enumerate(args):
        following = args[index + 1] if index + 1 < len(args) else "-"
        if arg in OPTIONAL_VALUES and following.startswith("-"):
            filled[index] = f"{arg}={OPTIONAL_VALUES[arg]}"
    return filled


def _print_error(message: str) -> None:
    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _one_line_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """`warnings.showwarning` printing a `CnnlabWarning` as one yellow line (no source line)."""

    def show_warning(message: Warning | str, category: type[Warning], *args, **kwargs) -> None:
        if issubclass(category, CnnlabWarning):
            error_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
        else:
            show(message, category, *args, **kwargs)

    return show_warning


app = typer.Typer(
    cls=_CnnlabGroup,
    name="cnnlab",
    help="Build, train, compare, ablate, transfer and diagnose the landmark CNNs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules register themselves on `app` when imported.
from cnnlab.cli import (  # noqa: E402,F401
    bench_cmd,
    compare_cmd,
    data_cmd,
    deploy_cmd,
    eval_cmd,
    explain_cmd,
    models_cmd,
    study_cmd,
    train_cmd,
    transfer_cmd,
)

__all__ = ["app", "console", "error_console", "print_table"]
