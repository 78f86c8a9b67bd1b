"""Transfer learning: train on new data starting from trained weights, in one of three modes.

`transfer(source, data, mode)` resolves the source (`sources`), builds a `TrainConfig` whose
model, input size, channels and normalization follow the source unless overridden, and runs
`train` with a `TransferHook` (`hook`) that loads the weights, swaps the classifier and
freezes what the mode keeps. Everything `train` writes (metrics, checkpoints, curves) and
reads (`resume`) works as for any run; `cnnlab eval`/`predict` take the run folder.
`transfer.yaml` is one of the engine's run-folder plugins (`cnnlab.engine.hooks`), so
`train(resume=RUN)` itself resumes a transferred RUN with `resume_hook`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cnnlab.data.memory import DataSplits
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.hooks import TrainHook
from cnnlab.engine.trainer import TrainResult, train
from cnnlab.errors import OptionError
from cnnlab.transfer.hook import SPEC_FILE, TransferHook, TransferSpec, trainable_modules
from cnnlab.transfer.sources import SourceWeights, resolve_source

__all__ = [
    "SourceWeights",
    "TransferHook",
    "TransferSpec",
    "is_transferred",
    "prepare_transfer",
    "resolve_source",
    "resume_hook",
    "trainable_modules",
    "transfer",
    "transfer_config",
]


def transfer_config(weights: SourceWeights, config: TrainConfig) -> TrainConfig:
    """`config` with the source's model and options; image size, channels and normalization
    set to the source's where `config` leaves them at None."""
    if config.model_options.get("num_classes") or config.model_options.get("in_channels"):
        raise OptionError("num_classes and in_channels come from the data in a transfer")
    options = {
        key: value
        for key, value in weights.model_options.items()
        if key not in ("num_classes", "in_channels")
    }
    source_channels, side, _ = weights.image_shape
    channels = config.channels or source_channels
    model_options = {**options, **config.model_options}
    image_size = config.image_size or side
    sized_for = options.get("image_size")  # LeNet-5's fully connected layers: one input size
    if sized_for is not None and {image_size, model_options["image_size"]} != {sized_for}:
        raise OptionError(
            f"{weights.model_name}'s classifier is sized for {sized_for}x{sized_for} inputs, so "
            f"its weights transfer at that size only: use --image-size {sized_for} (the default)"
        )
    changes: dict = {
        "model": weights.model_name,
        "model_options": model_options,
        "image_size": image_size,
        "channels": channels,
    }
    if config.mean is None and config.std is None:
        changes["mean"] = _spread(weights.mean, channels)
        changes["std"] = _spread(weights.std, channels)
    return config.replace(**changes)


def _spread(values: Sequence[float], channels: int) -> list[float]:
    """Per-channel statistics for `channels` channels: averaged down to one, or repeated."""
    values = list(values)
    if len(values) == channels:
        return values
    if channels == 1:
        return [sum(values) / len(values)]
    return values[:1] * channels


def prepare_transfer(spec: TransferSpec, config: TrainConfig) -> tuple[TrainConfig, TransferHook]:
    """The run config (model and input from the source) and the hook that starts it from the
    weights `spec.source` names."""
    weights = resolve_source(spec.source)
    return transfer_config(weights, config), TransferHook(spec, weights)


def is_transferred(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a transferred run (which resumes with `resume_hook`)."""
    return (Path(run_dir) / SPEC_FILE).is_file()


def resume_hook(run_dir: str | Path) -> TransferHook:
    """The hook that continues the transferred run in `run_dir` (from its `transfer.yaml`)."""
    return TransferHook(TransferSpec.load(Path(run_dir)), None)


def transfer(
    source: str | Path,
    data: str | None = None,
    mode: str = "head",
    *,
    head_hidden: int = 0,
    backbone_lr_scale: float = 1.0,
    config: TrainConfig | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    splits: DataSplits | None = None,
    hooks: Sequence[TrainHook] = (),
    force: bool = False,
    **options: object,
) -> TrainResult:
    """Fine-tune the weights `source` names on `data` in `mode` (`full`, `last:K`, `head`).

    `source` is a checkpoint or run folder, a built-in weights name (`resnet20.cifar10`) or a
    torchvision weights name (`resnet18.IMAGENET1K_V1`, read from the local hub cache).
    `config` and `options` (any `TrainConfig` field: epochs, lr, image_size, ...) set the
    training; the model comes from the source. `splits` trains on already-loaded data (its
    images taken as they are) instead of loading `data`. `resume` continues the transferred run
    in that folder with its saved config and spec (`source`, `mode` and the rest are then
    ignored; `options` may change what a resume allows, e.g. more `epochs`). `force` replaces
    a run already in the output folder, as `train(force=True)` does.
    """
    changes = dict(options, **({"data": data} if data is not None else {}))
    if resume is not None:
        saved = config or TrainConfig.from_yaml(Path(resume) / "config.yaml")
        run_config, hook = saved.replace(**changes), resume_hook(resume)
    else:
        spec = TransferSpec(str(source), mode, head_hidden, backbone_lr_scale)
        run_config, hook = prepare_transfer(spec, (config or TrainConfig()).replace(**changes))
    hooks = [hook, *hooks]
    return train(
        run_config, resume=resume, progress=progress, data=splits, hooks=hooks, force=force
    )
