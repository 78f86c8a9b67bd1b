"""Seed batching: the ensemble trains each member exactly as its own run would."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from study_helpers import DATA, tiny_spec
from torch.func import stack_module_state

from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.models import create_model
from cnnlab.studies import StudySpec, run_study
from cnnlab.studies.batched import GroupedLayers
from cnnlab.studies.store import StudyStore


def _study(folder: Path, spec: dict, batched: bool, log=None):
    return run_study(
        StudySpec.from_dict(spec), folder, data=DATA, threads=1, batched_seeds=batched, log=log
    )


@pytest.mark.parametrize(
    "recipe",
    [
        {"optimizer": "sgd", "weight_decay": 0.0, "schedule": "constant"},
        # batch norm (running statistics as stacked buffers), momentum, decay on weights only,
        # the per-step one-cycle schedule
        {"optimizer": "momentum", "weight_decay": 5e-3, "schedule": "onecycle", "bn": True},
    ],
    ids=["plain-sgd", "bn-momentum-decay-onecycle"],
)
def test_k_batched_steps_equal_k_steps_of_each_member_alone(tmp_path: Path, recipe: dict) -> None:
    spec = tiny_spec(factors={"lr": [0.05]}, seeds=3)
    spec["base"]["model_options"]["batch_norm"] = recipe.pop("bn", False)
    spec["base"].update(recipe)
    _study(tmp_path / "batched", spec, batched=True)
    _study(tmp_path / "alone", spec, batched=False)
    for run in ("base-s0", "base-s1", "base-s2", "lr=0.05-s2"):
        batched = load_checkpoint(tmp_path / "batched" / "runs" / run / "last.pt")
        alone = load_checkpoint(tmp_path / "alone" / "runs" / run / "last.pt")
        assert batched["epoch"] == alone["epoch"] == 2  # 8 optimizer steps
        for name, tensor in alone["model_state"].items():  # weights and BN running statistics
            torch.testing.assert_close(batched["model_state"][name], tensor, atol=1e-5, rtol=1e-4)
        for key, state in alone["optimizer_state"]["state"].items():
            for name, value in state.items():
                torch.testing.assert_close(
                    batched["optimizer_state"]["state"][key][name], value, atol=1e-5, rtol=1e-4
                )
    finals = [
        {(r.point, r.seed): r.final for r in StudyStore(tmp_path / name).runs()}
        for name in ("batched", "alone")
    ]
    for key, final in finals[1].items():
        assert finals[0][key] == pytest.approx(final, abs=1e-5)


def test_networks_with_dropout_fall_back_to_one_by_one_with_a_note(tmp_path: Path) -> None:
    spec = tiny_spec(factors={"lr": [0.05]}, seeds=2)
    spec["base"].update(model="tiny_cnn", model_options={})
    lines: list[str] = []
    outcome = _study(tmp_path, spec, batched=True, log=lines.append)
    assert outcome.counts["done"] == 4
    assert "base: seeds trained one by one (the network has dropout)" in lines


def test_a_diverging_member_stops_alone(tmp_path: Path) -> None:
    spec = tiny_spec(factors={"lr": [1e9]}, seeds=2)
    outcome = _study(tmp_path, spec, batched=True)
    assert outcome.counts["diverged"] == 2 and outcome.counts["done"] == 2


@pytest.mark.parametrize(
    "options",
    [
        {"activation": "sigmoid", "pooling": "avg"},
        {"conv_activation": "relu", "c1_kernel_size": 4, "batch_norm": True},
    ],
    ids=["textbook", "even-c1-kernel-bn"],
)
def test_grouped_forward_equals_each_member_forward(options: dict) -> None:
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(create_model("lenet5", image_size=28, **options).train())
    grouped = GroupedLayers.of(members[0], len(members))
    assert grouped is not None
    params, buffers = stack_module_state(members)
    images = [torch.rand(4, 1, 28, 28) for _ in members]
    logits = grouped.train()(params, buffers, torch.cat(images, dim=1))
    for index, (member, member_images) in enumerate(zip(members, images, strict=True)):
        torch.testing.assert_close(logits[index], member(member_images), atol=1e-5, rtol=1e-4)
        for name, buffer in member.named_buffers():  # running statistics updated alike
            torch.testing.assert_close(buffers[name][index], buffer, atol=1e-6, rtol=1e-5)
