"""Optimizers by name, weight-decay groups, per-step schedules and weight initialization."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from cnnlab.engine.optim import (
    ONECYCLE_START,
    create_optimizer,
    create_scheduler,
    init_weights,
    lr_multiplier,
)
from cnnlab.errors import OptionError, UnknownNameError


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )


def test_weight_decay_shrinks_weights_but_not_biases_or_batch_norm() -> None:
    net = _net()
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    optimizer = create_optimizer(net, "sgd", lr=0.1, weight_decay=0.5)
    for parameter in net.parameters():
        parameter.grad = torch.zeros_like(parameter)  # only the decay moves anything
    optimizer.step()
    for name, parameter in net.named_parameters():
        if parameter.ndim > 1:  # conv and linear weights: w <- w - lr * wd * w
            torch.testing.assert_close(parameter, before[name] * (1 - 0.1 * 0.5))
        else:  # biases, BN scale and shift
            assert torch.equal(parameter, before[name]), name


def test_frozen_parameters_are_left_out() -> None:
    net = _net()
    net[0].requires_grad_(False)
    optimizer = create_optimizer(net, "adam", lr=1e-3)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(net[0].weight) not in optimized and id(net[4].weight) in optimized


@pytest.mark.parametrize(
    ("name", "kind", "settings"),
    [
        ("sgd", torch.optim.SGD, {"momentum": 0, "nesterov": False}),
        ("momentum", torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
        ("adam", torch.optim.Adam, {}),
        ("adamw", torch.optim.AdamW, {}),
        ("adagrad", torch.optim.Adagrad, {}),
    ],
)
def test_optimizers_by_name(name: str, kind: type, settings: dict) -> None:
    nesterov = name == "momentum"
    optimizer = create_optimizer(_net(), name, lr=0.01, momentum=0.8, nesterov=nesterov)
    assert type(optimizer) is kind
    for key, value in settings.items():
        assert optimizer.defaults[key] == value


def test_bad_optimizer_choices_are_refused() -> None:
    with pytest.raises(UnknownNameError, match="unknown optimizer 'rmsprop'; choose one of"):
        create_optimizer(_net(), "rmsprop", lr=0.1)
    with pytest.raises(OptionError, match="nesterov needs optimizer 'momentum'"):
        create_optimizer(_net(), "adam", lr=0.1, nesterov=True)
    with pytest.raises(UnknownNameError, match="unknown schedule 'linear'"):
        lr_multiplier("linear", total_steps=10, steps_per_epoch=5)


def _curve(name: str, total: int = 100, per_epoch: int = 10, **options: float) -> list[float]:
    factor = lr_multiplier(name, total_steps=total, steps_per_epoch=per_epoch, **options)
    return [factor(step) for step in range(total)]


def test_constant_with_linear_warmup() -> None:
    curve = _curve("constant", warmup_epochs=1)  # 10 warm-up steps
    assert curve[:10] == pytest.approx([(step + 1) / 11 for step in range(10)])
    assert curve[10:] == [1.0] * 90


def test_step_schedule_decays_at_epoch_boundaries() -> None:
    curve = _curve("step", step_size=3, gamma=0.5)
    assert curve[29] == 1.0 and curve[30] == 0.5 and curve[59] == 0.5 and curve[60] == 0.25
    default = _curve("step", total=90, per_epoch=10)  # a third of the 9 epochs
    assert default[29] == 1.0 and default[30] == pytest.approx(0.1)


def test_cosine_falls_from_one_to_zero_after_warmup() -> None:
    curve = _curve("cosine", warmup_epochs=2)
    assert max(curve) == curve[20] == 1.0
    assert all(a >= b for a, b in zip(curve[20:], curve[21:], strict=False))
    assert curve[60] == pytest.approx(0.5 * (1 + math.cos(math.pi * 40 / 80)))
    assert curve[-1] < 0.001


def test_onecycle_rises_from_a_25th_then_anneals() -> None:
    curve = _curve("onecycle")
    peak = curve.index(max(curve))
    assert curve[0] == pytest.approx(ONECYCLE_START) and peak == 30
    assert all(a < b for a, b in zip(curve[:peak], curve[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(curve[peak:], curve[peak + 1 :], strict=False))
    assert _curve("onecycle", warmup_epochs=1).index(1.0) == 10


def test_scheduler_steps_per_iteration_and_its_state_survives_a_safe_load() -> None:
    optimizer = create_optimizer(_net(), "momentum", lr=0.2)
    scheduler = create_scheduler(optimizer, "cosine", epochs=4, steps_per_epoch=5)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    expected = 0.2 * 0.5 * (1 + math.cos(math.pi * 7 / 20))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh_optimizer = create_optimizer(_net(), "momentum", lr=0.2)
    fresh = create_scheduler(fresh_optimizer, "cosine", epochs=4, steps_per_epoch=5)
    fresh.load_state_dict(state)
    fresh_optimizer.step()
    fresh.step()
    assert fresh.get_last_lr()[0] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 8 / 20)))


def test_xavier_init_is_uniform_within_the_glorot_bound() -> None:
    net = nn.Linear(300, 200)
    init_weights(net, "xavier")
    bound = math.sqrt(6 / (300 + 200))
    assert net.weight.abs().max() <= bound and net.weight.abs().max() > 0.95 * bound
    assert torch.count_nonzero(net.bias) == 0


def test_kaiming_init_has_the_he_standard_deviation() -> None:
    net = nn.Conv2d(64, 128, 3)
    init_weights(net, "kaiming")
    fan_in = 64 * 3 * 3
    assert net.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    assert torch.count_nonzero(net.bias) == 0


def test_pytorch_init_is_uniform_within_one_over_root_fan_in_for_weights_and_biases() -> None:
    net = nn.Conv2d(16, 32, 5)
    nn.init.zeros_(net.weight)
    init_weights(net, "pytorch")
    bound = 1 / math.sqrt(16 * 5 * 5)
    for values in (net.weight, net.bias):
        assert values.abs().max() <= bound and values.abs().max() > 0.9 * bound


def test_default_init_keeps_the_model_weights_and_batch_norm_is_untouched() -> None:
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    init_weights(net, "default")
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    init_weights(net, "kaiming")
    assert torch.equal(net[1].weight, torch.ones(4)) and torch.equal(net[1].bias, torch.zeros(4))
    with pytest.raises(UnknownNameError, match="unknown init 'orthogonal'"):
        init_weights(net, "orthogonal")
