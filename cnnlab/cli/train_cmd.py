"""`cnnlab train`: one training run from options, a YAML config, or a run folder to resume.

Values come from, in rising precedence: `TrainConfig`'s defaults, the `--config` file (or, with
`--resume DIR` and no `--config`, the run's own `config.yaml`), then the options given on the
command line. Exit codes: 0 when training completes, 2 for a usage error, 3 when the loss
diverges, 130 when interrupted (the last finished epoch stays resumable).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cnnlab.cli import app, error_console
from cnnlab.cli.options import parse_options
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.trainer import train
from cnnlab.errors import OptionError

DIVERGED_EXIT_CODE = 3
INTERRUPTED_EXIT_CODE = 130
# Command-line parameters that are not `TrainConfig` fields.
_NOT_CONFIG = ("config", "resume", "model_opt", "quiet")


@app.command("train")
def train_command(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", "-m", help="Model name (`cnnlab models`)."),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Dataset: mnist-5k, mnist, fashion-mnist, cifar10, folder:PATH."
    ),
    epochs: int | None = typer.Option(None, "--epochs", "-e", min=1),
    batch_size: int | None = typer.Option(
        None, "--batch-size", "-b", min=1, help="Global batch (split over DDP processes)."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    optimizer: str | None = typer.Option(
        None, "--optimizer", help="sgd, momentum, adam, adamw or adagrad."
    ),
    momentum: float | None = typer.Option(None, "--momentum"),
    nesterov: bool | None = typer.Option(None, "--nesterov/--no-nesterov"),
    weight_decay: float | None = typer.Option(
        None, "--weight-decay", help="L2 penalty on conv/linear weights (not biases or BN)."
    ),
    schedule: str | None = typer.Option(
        None, "--schedule", help="constant, step, cosine or onecycle (stepped every batch)."
    ),
    warmup_epochs: float | None = typer.Option(None, "--warmup-epochs", min=0.0),
    lr_step_size: int | None = typer.Option(
        None, "--lr-step-size", help="Epochs between decays of the step schedule."
    ),
    lr_gamma: float | None = typer.Option(None, "--lr-gamma", help="Decay factor of `step`."),
    init: str | None = typer.Option(
        None, "--init", help="default (the model's own), xavier, kaiming or pytorch."
    ),
    augment: str | None = typer.Option(
        None, "--augment", help="e.g. flip,crop:4 (also translate:N, cutout:N, jitter:S)."
    ),
    multi_scale: str | None = typer.Option(
        None, "--multi-scale", help="Train each batch at a side drawn from e.g. 24,28,32."
    ),
    label_smoothing: float | None = typer.Option(None, "--label-smoothing"),
    seed: int | None = typer.Option(None, "--seed"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda or mps."),
    amp: bool | None = typer.Option(
        None, "--amp/--no-amp", help="Mixed precision: bf16 on CPU, fp16 on CUDA."
    ),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last"),
    image_size: int | None = typer.Option(
        None, "--image-size", min=1, help="Resize the images once, at load time."
    ),
    channels: int | None = typer.Option(None, "--channels", help="1 (grayscale) or 3 (RGB)."),
    mean: str | None = typer.Option(
        None,
        "--mean",
        help="Normalization mean per channel, e.g. 0.5,0.5,0.5 (default: the data's).",
    ),
    std: str | None = typer.Option(
        None,
        "--std",
        help="Normalization std per channel; --mean 0 --std 1 feeds raw [0, 1] pixels.",
    ),
    val_fraction: float | None = typer.Option(
        None, "--val-fraction", help="Test share of datasets without a test split."
    ),
    download: bool | None = typer.Option(None, "--download/--no-download"),
    out: str | None = typer.Option(
        None, "--out", "-o", help="Run folder (default runs/<model>-<data>-<hash>)."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="A YAML TrainConfig."),
    model_opt: list[str] | None = typer.Option(
        None, "--model-opt", help="A model option key=value, e.g. activation=relu (repeatable)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the run in this folder from its last.pt."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or epoch lines."),
) -> None:
    """Train a model; the run folder gets metrics, curves.png, last.pt and best.pt."""
    run_config = _resolve_config(ctx.params)
    try:
        result = train(run_config, resume=resume, progress=not quiet)
    except KeyboardInterrupt:
        folder = resume or run_config.run_dir
        error_console.print(f"interrupted; continue with: cnnlab train --resume {folder}")
        raise typer.Exit(INTERRUPTED_EXIT_CODE) from None
    if result.status == "diverged":
        if os.environ.get("RANK", "0") == "0":
            error_console.print(
                f"[bold red]diverged:[/] the loss became NaN/inf in epoch {result.final['epoch']} "
                f"(lr {run_config.lr:g}); lower --lr or add --warmup-epochs",
                highlight=False,
            )
        raise typer.Exit(DIVERGED_EXIT_CODE)


def _resolve_config(params: dict) -> TrainConfig:
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
    changes = {k: v for k, v in params.items() if k not in _NOT_CONFIG and v is not None}
    if params["model_opt"]:
        changes["model_options"] = {**base.model_options, **parse_options(params["model_opt"])}
    return base.replace(**changes)
