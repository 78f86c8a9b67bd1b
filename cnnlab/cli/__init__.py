"""The `cnnlab` command line: a thin typer app over the library.

Each command group lives in its own module and registers itself on `app` when imported.
`COMMANDS` names each command's module and one-line help, so `cnnlab --help` lists the commands
and a mistyped one is refused without importing any (nor torch); running `cnnlab NAME`, or
`cnnlab NAME --help`, imports NAME's module alone (click's lazily loading group). Errors a user can
cause (`CnnlabError`) become one red line and exit code 2; anything else is a bug and keeps
its traceback. Warnings for the user (`CnnlabWarning`) print as one yellow line each.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Callable, Iterator
from typing import NoReturn

import typer
import typer.main
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from cnnlab.errors import CnnlabError, CnnlabWarning

try:  # typer 0.29 and later parse with their own copy of click
    from typer._click import Command
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:
    from click import Command
    from click.exceptions import NoArgsIsHelpError, UsageError

# Each command: its module in `cnnlab.cli` and its one-line help (the first paragraph of its own
# help, which a test keeps equal), in the order `cnnlab --help` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": (
        "models_cmd",
        "List the registered models; an exact model name also shows its options.",
    ),
    "summary": (
        "models_cmd",
        "Per-layer output shapes, parameters, MACs and activations, with totals and memory.",
    ),
    "data": ("data_cmd", "Inspect datasets."),
    "train": (
        "train_cmd",
        "Train a model; the run folder gets metrics, curves.png, last.pt and best.pt.",
    ),
    "transfer": (
        "transfer_cmd",
        "Fine-tune trained weights on new data; the run folder is that of `cnnlab train`.",
    ),
    "eval": (
        "eval_cmd",
        "Top-1/top-k accuracy, per-class accuracy and the confusion matrix on a split.",
    ),
    "predict": ("eval_cmd", "The most probable classes of each image, with their probabilities."),
    "compare": (
        "compare_cmd",
        "Train each model with a recipe suited to it; report error, size, cost and time.",
    ),
    "study": ("study_cmd", "Ablation studies: factor sweeps over repeated seeds."),
    "explain": (
        "explain_cmd",
        "Heat maps of where the network looks, over each photo at its own size: per image and "
        "method a figure and the bare overlay, and a grid comparing the methods when several "
        "are given.",
    ),
    "features": (
        "explain_cmd",
        "A grid of one layer's feature maps per image with their mean over the photo at its own "
        "size, and/or the first layer's filters.",
    ),
    "bench": (
        "bench_cmd",
        "Images/s (train and inference), peak memory and FLOP/s; ratio to torchvision's models.",
    ),
    "export": (
        "deploy_cmd",
        "Export a trained network to ONNX and check it against PyTorch in onnxruntime.",
    ),
    "serve": (
        "deploy_cmd",
        "Serve a web page and a JSON API that classify and explain uploaded images.",
    ),
}

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
    """Loads and runs the commands; a `CnnlabError` or a usage error (unknown option, missing
    argument) becomes one red line on stderr and its exit code.

    Handled here rather than around `app()` so that `typer.testing.CliRunner` sees it too.
    """

    listing_help = False

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Command | None:
        """The command `cmd_name`, its module imported on first use; while the group's help is
        being written, a stand-in with the command's one-line help (nothing is imported)."""
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            module, short_help = COMMANDS[cmd_name]
            if self.listing_help:
                return TyperCommand(cmd_name, short_help=short_help)
            importlib.import_module(f"{__name__}.{module}")
            self.commands[cmd_name] = _click_command(cmd_name)
        return self.commands[cmd_name]

    def format_help(self, ctx: typer.Context, formatter) -> None:
        with self._listing():
            super().format_help(ctx, formatter)

    @contextlib.contextmanager
    def _listing(self) -> Iterator[None]:
        self.listing_help = True
        try:
            yield
        finally:
            self.listing_help = False

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
            _exit_on_usage_error(error)

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        """The group's own options; a mistake there (`cnnlab --no-such-flag`) is one line too.

        A bare `--ray` anywhere on the line takes its default value (`fill_optional_values`).
        """
        try:
            return super().parse_args(ctx, fill_optional_values(args))
        except NoArgsIsHelpError:
            raise  # `cnnlab` alone shows the help
        except UsageError as error:
            _exit_on_usage_error(error)


def _exit_on_usage_error(error: UsageError) -> NoReturn:
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


@app.callback()
def _no_options() -> None:
    """Makes `app` a group before any command module has registered a command on it."""


def _click_command(name: str) -> Command:
    """The click command of `app`'s command or command group `name` (its module imported)."""
    for info in app.registered_commands:
        if info.name == name:
            return typer.main.get_command_from_info(
                info,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
            )
    for group in app.registered_groups:
        if group.name == name:
            return typer.main.get_group_from_info(
                group,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
                suggest_commands=app.suggest_commands,
            )
    raise LookupError(f"cnnlab.cli.{COMMANDS[name][0]} registers no command {name!r}")


__all__ = ["COMMANDS", "app", "console", "error_console", "print_table"]
