"""Optimizers, learning-rate schedules and weight initialization, chosen by name.

Weight decay applies to the weights of convolutions and linear layers only. Biases and the
scale/shift of normalization layers (every parameter with fewer than two dimensions) are
exempt, as in the ResNet/timm recipes: decaying them only fights the normalization and can
drive a BN scale to zero.

Schedules are multipliers of the base learning rate evaluated once per optimizer step (not
per epoch), so a schedule behaves the same with few long epochs or many short ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from cnnlab.errors import OptionError, UnknownNameError

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adagrad")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
INITS = ("default", "xavier", "xavier_weights", "kaiming", "pytorch")

# One-cycle (Smith & Topin 2019) starts at lr / 25 and spends 30% of the run rising.
ONECYCLE_START = 1 / 25
ONECYCLE_RISE = 0.3


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed group (weights) and an undecayed one.

    Parameters with fewer than two dimensions (biases, normalization scales and shifts) get no
    weight decay; frozen parameters (`requires_grad=False`) are left out.
    """
    decayed, undecayed = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decayed if parameter.ndim > 1 else undecayed).append(parameter)
    groups = [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": undecayed, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def create_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    groups: list[dict] | None = None,
) -> Optimizer:
    """Optimizer `name` over the trainable parameters of `model` (or over `groups`).

    `groups` are explicit parameter groups (each may set its own `lr` and `weight_decay`);
    None splits the trainable parameters by `parameter_groups`.

    `sgd` is plain SGD; `momentum` is SGD with (optionally Nesterov) momentum; `adam`, `adamw`
    (decoupled weight decay) and `adagrad` use PyTorch's defaults for their other settings.
    """
    if name not in OPTIMIZERS:
        raise UnknownNameError("optimizer", name, OPTIMIZERS)
    if nesterov and name != "momentum":
        raise OptionError("nesterov needs optimizer 'momentum' (SGD with momentum)")
    if groups is None:
        groups = parameter_groups(model, weight_decay)
    if not groups:
        raise OptionError("the model has no trainable parameters")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.Adagrad(groups, lr=lr)


def lr_multiplier(
    name: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    step_size: int = 0,
    gamma: float = 0.1,
) -> Callable[[int], float]:
    """The factor on the base learning rate at each optimizer step (0-based) of a run.

    - `constant`: 1.
    - `step`: times `gamma` every `step_size` epochs (0: a third of the run).
    - `cosine`: half a cosine from 1 down to 0 over the steps after the warm-up.
    - `onecycle`: linear rise from 1/25 to 1 over the warm-up (30% of the run unless
      `warmup_epochs` is set), then half a cosine down to 0.
    For the first three, `warmup_epochs` adds a linear warm-up from near 0 that multiplies them.
    """
    if name not in SCHEDULES:
        raise UnknownNameError("schedule", name, SCHEDULES)
    warmup = min(round(warmup_epochs * steps_per_epoch), total_steps)
    epochs = max(1, total_steps // max(1, steps_per_epoch))
    decay_steps = max(1, step_size or epochs // 3) * steps_per_epoch

    def cosine_from(start: int, step: int) -> float:
        progress = min(1.0, max(0.0, (step - start) / max(1, total_steps - start)))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    if name == "onecycle":
        rise = warmup or round(ONECYCLE_RISE * total_steps)

        def onecycle(step: int) -> float:
            if step < rise:
                return ONECYCLE_START + (1.0 - ONECYCLE_START) * step / rise
            return cosine_from(rise, step)

        return onecycle

    shapes: dict[str, Callable[[int], float]] = {
        "constant": lambda step: 1.0,
        "step": lambda step: gamma ** (step // decay_steps),
        "cosine": lambda step: cosine_from(warmup, step),
    }
    shape = shapes[name]

    def with_warmup(step: int) -> float:
        ramp = (step + 1) / (warmup + 1) if step < warmup else 1.0
        return ramp * shape(step)

    return with_warmup


def create_scheduler(
    optimizer: Optimizer,
    name: str,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    step_size: int = 0,
    gamma: float = 0.1,
) -> LambdaLR:
    """A scheduler for `optimizer` to be stepped after every optimizer step (see `lr_multiplier`).

    Its state dict holds plain values only (the multiplier is rebuilt from the config), so it
    fits a `weights_only` checkpoint.
    """
    multiplier = lr_multiplier(
        name,
        total_steps=epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=warmup_epochs,
        step_size=step_size,
        gamma=gamma,
    )
    return LambdaLR(optimizer, multiplier)


def init_weights(model: nn.Module, scheme: str, *, seed: int | None = None) -> None:
    """Re-initialize the convolution and linear layers of `model` in place.

    `default` keeps the model's own initialization; `xavier` is Glorot & Bengio (2010),
    uniform; `kaiming` is He et al. (2015), normal with fan-in for ReLU units; both zero the
    biases. `pytorch` is PyTorch's own layer default (weights and biases uniform within
    1/sqrt(fan_in)), what plain PyTorch code trains with. `xavier_weights` is what the textbook
    recipe (d2l) does: PyTorch's defaults, then Xavier-uniform weights, biases left at their
    defaults. Normalization layers keep their unit scale and zero shift.

    With `seed`, the draws start from `torch.manual_seed(seed)` on a forked CPU generator (the
    global one is left as it was): the weights then depend on the seed alone, exactly as in a
    script that seeds and then builds its network layer by layer.
    """
    if scheme not in INITS:
        raise UnknownNameError("init", scheme, INITS)
    if scheme == "default":
        return
    if seed is None:
        _draw_weights(model, scheme)
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _draw_weights(model, scheme)


def _draw_weights(model: nn.Module, scheme: str) -> None:
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if scheme in ("pytorch", "xavier_weights"):
        # Every layer's defaults first, in construction order, as building the network draws them.
        for layer in layers:
            layer.reset_parameters()
        if scheme == "pytorch":
            return
    for layer in layers:
        if scheme == "kaiming":
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        else:
            nn.init.xavier_uniform_(layer.weight)
        if scheme != "xavier_weights" and layer.bias is not None:
            nn.init.zeros_(layer.bias)
