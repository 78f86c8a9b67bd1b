"""`cnnlab transfer`: train on new data from trained weights, in mode full, last:K or head.

Takes every `cnnlab train` option except `--model` (the model is the source's); the image
size, channels and normalization follow the source unless given. `--resume RUN` continues a
transferred run with its saved source and mode.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cnnlab.cli import app
from cnnlab.cli.train_cmd import resolve_config, run_to_the_end, set_parameters, train_parameters
from cnnlab.engine.trainer import train
from cnnlab.errors import OptionError
from cnnlab.transfer import TransferSpec, prepare_transfer, resume_hook

_TRANSFER_OPTIONS = {
    "source": (
        str | None,
        typer.Option(
            None,
            "--from",
            help="A checkpoint or run folder, built-in weights (resnet20.cifar10) or torchvision "
            "weights (resnet18.IMAGENET1K_V1, from the local torch hub cache).",
        ),
    ),
    "mode": (
        str,
        typer.Option(
            "head",
            "--mode",
            help="full (all parameters), last:K (the last K stages, see `cnnlab models NAME`) "
            "or head (the new classifier only).",
        ),
    ),
    "head_hidden": (
        int,
        typer.Option(0, "--head-hidden", min=0, help="A hidden layer this wide in the new head."),
    ),
    "backbone_lr_scale": (
        float,
        typer.Option(
            1.0, "--backbone-lr-scale", min=0.0, help="The backbone's lr as a share of --lr."
        ),
    ),
}


def transfer_command(ctx: typer.Context, **params: object) -> None:
    """Fine-tune trained weights on new data; the run folder is that of `cnnlab train`."""
    options = dict(ctx.params)
    transfer_options = {name: options.pop(name) for name in _TRANSFER_OPTIONS}
    config = resolve_config(options)
    resume = options["resume"]
    if resume is not None:
        hook = resume_hook(resume)
    elif transfer_options["source"] is None:
        raise OptionError("say what to transfer from: --from CHECKPOINT|RUN|WEIGHTS")
    else:
        config, hook = prepare_transfer(TransferSpec(**transfer_options), config)
    quiet, force = options["quiet"], options["force"]
    run_to_the_end(
        lambda: train(config, resume=resume, progress=not quiet, force=force, hooks=[hook]),
        config,
        Path(resume or config.run_dir),
        quiet=quiet,
        command="cnnlab transfer",
    )


_parameters = {name: value for name, value in train_parameters().items() if name != "model"}
set_parameters(transfer_command, _TRANSFER_OPTIONS | _parameters)
app.command("transfer")(transfer_command)
