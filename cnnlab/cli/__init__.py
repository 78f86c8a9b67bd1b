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
from rich.table import Table
from typer.core import TyperGroup

from cnnlab.errors import CnnlabError, CnnlabWarning

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
    """Runs the commands; a `CnnlabError` becomes one red line on stderr and its exit code.

    Handled here rather than around `app()` so that `typer.testing.CliRunner` sees it too.
    """

    def invoke(self, ctx: typer.Context) -> object:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", CnnlabWarning)
                warnings.showwarning = _one_line_warnings(warnings.showwarning)
                return super().invoke(ctx)
        except CnnlabError as error:
            error_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(error.exit_code) from None


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
