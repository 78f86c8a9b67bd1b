"""The transfer modes as a `TrainHook`: load the source weights, swap the classifier, freeze.

- `full`: every parameter trains (the backbone optionally at `backbone_lr_scale` times the lr).
- `last:K`: only the last K stages train (`model.named_stages()`; the classifier is the last).
- `head`: only the new classifier trains (with a hidden layer first if `head_hidden`).

The new classifiers (the main one and any auxiliary head's) always train. Batch-norm layers
whose parameters are all frozen are put back in eval mode at the start of every epoch, so their
running statistics stay those of the source. The spec is saved in the run folder
(`transfer.yaml`) and in every checkpoint (`transfer`, and `classifier_hidden`, which
`model_from_checkpoint` uses to rebuild the head), so a transferred run resumes exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml
from torch import nn

from cnnlab.engine.hooks import TrainHook
from cnnlab.errors import CheckpointError, OptionError
from cnnlab.fileio import atomic_write_text
from cnnlab.models.layers import ClassifierNet

if TYPE_CHECKING:
    from cnnlab.engine.trainer import Trainer
    from cnnlab.transfer.sources import SourceWeights

SPEC_FILE = "transfer.yaml"


@dataclass(frozen=True)
class TransferSpec:
    """What a transferred run starts from and what it trains."""

    source: str
    mode: str = "head"
    head_hidden: int = 0
    backbone_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        self.last_stages()  # validates the mode
        if self.head_hidden < 0:
            raise OptionError(f"head_hidden must be >= 0, got {self.head_hidden}")
        if not self.backbone_lr_scale >= 0:  # also refuses NaN
            raise OptionError(f"backbone_lr_scale must be >= 0, got {self.backbone_lr_scale}")

    def last_stages(self) -> int | None:
        """K of `last:K`; None for `full` and `head`."""
        if self.mode in ("full", "head"):
            return None
        kind, _, count = self.mode.partition(":")
        if kind != "last" or not count.isdigit() or int(count) < 1:
            raise OptionError(f"mode must be full, head or last:K with K >= 1, not '{self.mode}'")
        return int(count)

    def save(self, run_dir: Path) -> None:
        atomic_write_text(run_dir / SPEC_FILE, yaml.safe_dump(dataclasses.asdict(self)))

    @classmethod
    def load(cls, run_dir: Path) -> TransferSpec:
        path = Path(run_dir) / SPEC_FILE
        if not path.is_file():
            raise OptionError(f"{run_dir} is not a transferred run (no {SPEC_FILE})")
        return cls(**yaml.safe_load(path.read_text()))


class TransferHook(TrainHook):
    """Starts the trainer's model from `weights` (None when resuming: the checkpoint has them)."""

    def __init__(self, spec: TransferSpec, weights: SourceWeights | None) -> None:
        self.spec = spec
        self.weights = weights
        self.notes: list[str] = []
        self.frozen_norms: list[nn.Module] = []
        self.head_parameters: set[int] = set()
        self._announced = False

    def on_model_built(self, trainer: Trainer) -> None:
        model = trainer.model
        if not isinstance(model, ClassifierNet):
            raise OptionError(f"{type(model).__name__} has no classifier API to transfer with")
        if self.weights is not None:
            self.notes += load_backbone(model, self.weights)
            if trainer.context.is_main:
                trainer.out_dir.mkdir(parents=True, exist_ok=True)
                self.spec.save(trainer.out_dir)
        model.reset_classifier(model.num_classes, self.spec.head_hidden)
        model.to(trainer.device)
        self.head_parameters = {id(p) for head in new_heads(model) for p in head.parameters()}
        trainable = trainable_modules(model, self.spec)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for module in trainable:
            module.requires_grad_(True)
        self.frozen_norms = [
            module
            for module in model.modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            and not any(p.requires_grad for p in module.parameters())
        ]

    def param_groups(self, trainer: Trainer) -> list[dict] | None:
        """The default decay split, the backbone's groups at `backbone_lr_scale` times the lr."""
        if self.spec.backbone_lr_scale == 1.0:
            return None
        config = trainer.config
        groups = []
        for is_head, lr in ((False, config.lr * self.spec.backbone_lr_scale), (True, config.lr)):
            for decayed in (True, False):
                params = [
                    p
                    for p in trainer.model.parameters()
                    if p.requires_grad
                    and (id(p) in self.head_parameters) == is_head
                    and (p.ndim > 1) == decayed
                ]
                decay = config.weight_decay if decayed else 0.0
                groups.append({"params": params, "lr": lr, "weight_decay": decay})
        return [group for group in groups if group["params"]]

    def on_train_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        for module in self.frozen_norms:
            module.eval()
        if not self._announced:
            self._announced = True
            for note in self.notes:
                trainer.display.message(f"note: {note}")
            trainer.display.message(self.parameter_line(trainer.model))

    def on_checkpoint(self, trainer: Trainer, state: dict) -> None:
        state["transfer"] = dataclasses.asdict(self.spec)
        if self.spec.head_hidden:
            state["classifier_hidden"] = self.spec.head_hidden

    def parameter_line(self, model: nn.Module) -> str:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        return (
            f"transfer ({self.spec.mode}): {trainable:,} trainable parameters, {frozen:,} frozen "
            f"({len(self.frozen_norms)} batch-norm layers kept in eval mode)"
        )


def new_heads(model: ClassifierNet) -> list[nn.Module]:
    """The classifiers `reset_classifier` replaces: the main one and the auxiliary heads'."""
    aux_heads = model.aux_heads() if hasattr(model, "aux_heads") else []
    return [model.get_classifier(), *(head.get_classifier() for head in aux_heads)]


def trainable_modules(model: ClassifierNet, spec: TransferSpec) -> list[nn.Module]:
    """The modules whose parameters train in `spec.mode` (the new heads always do)."""
    if spec.mode == "full":
        return [model]
    count = spec.last_stages()
    if count is None:  # head
        return new_heads(model)
    stages = model.named_stages()
    if count > len(stages):
        names = ", ".join(name for name, _ in stages)
        raise OptionError(
            f"last:{count} asks for more stages than {model.model_name} has: {len(stages)} "
            f"({names}); use last:1 to last:{len(stages)} or full"
        )
    return [module for _, module in stages[-count:]] + new_heads(model)


def load_backbone(model: ClassifierNet, weights: SourceWeights) -> list[str]:
    """Copy every source tensor but the classifiers' into `model`; notes on what was adapted.

    A first convolution with another input channel count is adapted (averaged over the source's
    RGB kernels for grayscale input, a grayscale kernel spread over RGB for color input).
    """
    head_prefixes = tuple(f"{name}." for name in _head_names(model))
    state = {k: v for k, v in weights.state.items() if not k.startswith(head_prefixes)}
    notes = _adapt_first_conv(model, state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith(head_prefixes)]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        problem = "has no tensor for" if missing else "has a tensor the model lacks:"
        raise CheckpointError(
            f"{weights.source} does not fit {model.model_name} with these options: the source "
            f"{problem} {first} ({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    return notes


def _head_names(model: ClassifierNet) -> list[str]:
    names = [model.classifier_name]
    for aux in getattr(model, "aux_head_names", ()):
        head = getattr(model, aux)
        if head is not None:
            names.append(f"{aux}.{head.classifier_name}")
    return names


def _adapt_first_conv(model: nn.Module, state: dict) -> list[str]:
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    key = f"{name}.weight"
    kernel = state.get(key)
    if kernel is None or kernel.shape[1] == conv.in_channels:
        return []
    source_channels, channels = kernel.shape[1], conv.in_channels
    if channels == 1:  # the sum over RGB keeps the response to a gray image
        state[key] = kernel.sum(dim=1, keepdim=True)
        how = "summed over its input channels"
    elif source_channels == 1:  # each channel gets a share: same response to a gray image
        state[key] = kernel.expand(-1, channels, -1, -1) / channels
        how = f"spread over {channels} input channels"
    else:
        raise CheckpointError(
            f"cannot adapt {source_channels}-channel weights to {channels}-channel input; "
            f"pass --channels {source_channels}"
        )
    state[key] = state[key].contiguous().to(torch.float32)
    return [f"the first convolution ({name}) was trained on {source_channels}-channel input: {how}"]
