"""`cnnlab train`: one training run from options, a YAML config, or a run folder to resume.

Values come from, in rising precedence: `TrainConfig`'s defaults, the `--config` file (or, with
`--resume DIR` and no `--config`, the run's own `config.yaml`), then the options given on the
command line. Exit codes: 0 when training completes, 2 for a usage error, 3 when the loss
diverges, 130 when interrupted by Ctrl-C or SIGTERM (the last finished epoch stays resumable).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import signal
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from cnnlab.cli import app, error_console
from cnnlab.cli.options import parse_options
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.trainer import TrainResult, train
from cnnlab.errors import CnnlabWarning, OptionError

DIVERGED_EXIT_CODE = 3
INTERRUPTED_EXIT_CODE = 130
# Command-line parameters that are not `TrainConfig` fields.
_COMMAND_OPTIONS = {
    "config": (Path | None, typer.Option(None, "--config", "-c", help="A YAML TrainConfig.")),
    "model_opt": (
        list[str] | None,
        typer.Option(
            None, "--model-opt", help="A model option key=value, e.g. activation=relu (repeatable)."
        ),
    ),
    "resume": (
        Path | None,
        typer.Option(None, "--resume", help="Continue the run in this folder from its last.pt."),
    ),
    "force": (
        bool,
        typer.Option(
            False,
            "--force",
            help="Replace the run in --out: its checkpoints, metrics, plots and eval files go.",
        ),
    ),
    "quiet": (
        bool,
        typer.Option(
            False, "--quiet", "-q", help="No progress bar, epoch lines or skipped-file warnings."
        ),
    ),
}


def train_command(ctx: typer.Context, **params: object) -> None:
    """Train a model; the run folder gets metrics, curves.png, last.pt and best.pt."""
    run_config = resolve_config(ctx.params)
    resume, quiet = ctx.params["resume"], ctx.params["quiet"]
    run_to_the_end(  # a transferred run resumes with its freezing (train's run-folder plugins)
        lambda: train(run_config, resume=resume, progress=not quiet, force=ctx.params["force"]),
        run_config,
        Path(resume or run_config.run_dir),
        quiet=quiet,
    )


def run_to_the_end(
    start: Callable[[], TrainResult],
    config: TrainConfig,
    folder: Path,
    *,
    quiet: bool,
    command: str = "cnnlab train",
) -> None:
    """Run the training `start` begins; an interrupt (Ctrl-C, SIGTERM) or a diverged run ends
    the command with its exit code, saying how `command` goes on from `folder`."""
    try:
        with _signals_as_interrupt(), warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore", CnnlabWarning)
            result = start()
    except KeyboardInterrupt:
        message = _interrupted_message(folder, command)
        error_console.print(message, highlight=False, soft_wrap=True)
        raise typer.Exit(INTERRUPTED_EXIT_CODE) from None
    if result.status == "diverged":
        if os.environ.get("RANK", "0") == "0":
            error_console.print(
                f"[bold red]diverged:[/] the loss became NaN/inf in epoch {result.final['epoch']} "
                f"(lr {config.lr:g}); lower --lr or add --warmup-epochs",
                highlight=False,
            )
        raise typer.Exit(DIVERGED_EXIT_CODE)


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler or `kill` stopping the run) and SIGINT handled as Ctrl-C is.

    SIGINT is set explicitly: a shell starts background jobs (`cnnlab train ... &`) with it
    ignored, and `kill -INT` must still stop the run with its last epoch saved.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {
        signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupted_message(folder: Path, command: str) -> str:
    """What survived an interrupted run, and the command that goes on from there."""
    if (folder / "last.pt").is_file():
        return f"interrupted; the last finished epoch is saved: {command} --resume {folder}"
    return (
        f"interrupted before the first epoch ended: nothing was saved in {folder}; "
        "start again with the same options and --force"
    )


def _config_parameter(item: dataclasses.Field) -> tuple[object, object]:
    """The CLI type and `typer.Option` of a `TrainConfig` field, from its type and metadata.

    Every option defaults to None (not given), so the config file or the resumed run's values
    stay unless a flag overrides them. Lists are given comma-separated (`--augment flip,crop:4`).
    """
    hint = typing.get_type_hints(TrainConfig)[item.name]
    base = hint
    if isinstance(hint, types.UnionType):  # `int | None`: the option takes an int
        base = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    flag = "--" + item.name.replace("_", "-")
    names = [f"{flag}/--no-{flag[2:]}"] if base is bool else [flag]
    if item.metadata.get("short"):
        names.append(item.metadata["short"])
    cli_type = str if typing.get_origin(base) is list else base
    return cli_type | None, typer.Option(None, *names, help=item.metadata["help"])


def train_parameters() -> dict[str, tuple[object, object]]:
    """`cnnlab train`'s options as {name: (type, typer.Option)}: one per `TrainConfig` field,
    then the command's own."""
    parameters = {
        item.name: _config_parameter(item)
        for item in dataclasses.fields(TrainConfig)
        if item.metadata.get("cli", True)
    }
    return parameters | _COMMAND_OPTIONS


def set_parameters(command: Callable, parameters: dict[str, tuple[object, object]]) -> None:
    """Give `command(ctx, **params)` the signature typer reads its options from."""
    context = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
    )
    command.__signature__ = inspect.Signature(
        [context]
        + [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind
            )
            for name, (kind, default) in parameters.items()
        ]
    )
    command.__annotations__ = {"ctx": typer.Context} | {
        name: kind for name, (kind, _) in parameters.items()
    }


def resolve_config(params: dict) -> TrainConfig:
    """Defaults, then the config file (or the resumed run's), then the command-line options."""
    if params["config"] is not None:
        base = TrainConfig.from_yaml(params["config"])
    elif params["resume"] is not None:
        saved = Path(params["resume"]) / "config.yaml"
        if not saved.is_file():
            raise OptionError(f"{params['resume']} is not a cnnlab run folder (no config.yaml)")
        base = TrainConfig.from_yaml(saved)
    else:
        base = TrainConfig()
    changes = {k: v for k, v in params.items() if k not in _COMMAND_OPTIONS and v is not None}
    if params["model_opt"]:
        changes["model_options"] = {**base.model_options, **parse_options(params["model_opt"])}
    return base.replace(**changes)


set_parameters(train_command, train_parameters())
app.command("train")(train_command)
