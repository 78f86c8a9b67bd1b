"""Seed batching: the ensemble trains each member exactly as its own run would."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from study_helpers import DATA, tiny_spec
from torch.func import stack_module_state

from cnnlab.data.loader import BatchLoader
from cnnlab.data.memory import TensorDataset
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.evaluate import evaluate
from cnnlab.models import create_model
from cnnlab.studies import StudySpec, run_study
from cnnlab.studies.batched import SeedEnsemble, batching_pays
from cnnlab.studies.grouped import GroupedLayers, evaluate_grouped
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


def test_a_point_stopped_after_an_epoch_resumes_from_each_members_last_checkpoint(
    tmp_path: Path,
) -> None:
    """A point killed after its first epoch (its members' `last.pt` at epoch 1, the store's
    runs pending) goes on from there and ends with the weights of an uninterrupted point."""
    spec = tiny_spec(factors={"lr": [0.05]}, seeds=2)
    spec["base"]["model_options"]["batch_norm"] = True
    spec["base"].update(optimizer="momentum")  # a constant schedule: 1 epoch is a prefix of 2
    _study(tmp_path / "whole", spec, batched=True)
    spec["base"]["epochs"] = 1
    _study(tmp_path / "first", spec, batched=True)
    spec["base"]["epochs"] = 2
    for run in ("base-s0", "base-s1", "lr=0.05-s0", "lr=0.05-s1"):  # what the kill left
        shutil.copytree(tmp_path / "first" / "runs" / run, tmp_path / "resumed" / "runs" / run)
    lines: list[str] = []
    _study(tmp_path / "resumed", spec, batched=True, log=lines.append)
    assert not any("one by one" in line for line in lines)
    for run in ("base-s0", "base-s1", "lr=0.05-s1"):
        resumed = load_checkpoint(tmp_path / "resumed" / "runs" / run / "last.pt")
        whole = load_checkpoint(tmp_path / "whole" / "runs" / run / "last.pt")
        first = load_checkpoint(tmp_path / "first" / "runs" / run / "last.pt")
        assert resumed["history"][0] == first["history"][0]  # epoch 1 was not trained again
        assert resumed["epoch"] == 2
        for name, tensor in whole["model_state"].items():
            torch.testing.assert_close(resumed["model_state"][name], tensor, atol=1e-5, rtol=1e-4)


def test_members_stopped_at_different_epochs_resume_one_by_one(tmp_path: Path) -> None:
    spec = tiny_spec(factors={"lr": [0.05]}, seeds=2)
    spec["base"]["epochs"] = 1
    _study(tmp_path / "first", spec, batched=True)
    spec["base"]["epochs"] = 2
    shutil.copytree(tmp_path / "first" / "runs" / "base-s0", tmp_path / "runs" / "base-s0")
    lines: list[str] = []
    outcome = _study(tmp_path, spec, batched=True, log=lines.append)
    assert outcome.counts["done"] == 4
    assert "base: seeds trained one by one (its seeds stopped at different epochs)" in lines
    resumed = load_checkpoint(tmp_path / "runs" / "base-s0" / "last.pt")
    first = load_checkpoint(tmp_path / "first" / "runs" / "base-s0" / "last.pt")
    assert resumed["history"][0] == first["history"][0]


def test_grouped_evaluation_equals_each_members_own() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8, generator=generator)
    test = TensorDataset(images, torch.arange(50) % 10, [str(c) for c in range(10)])
    loader = BatchLoader(test, 16, mean=(0.5,), std=(0.25,))
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(create_model("lenet5", image_size=28, batch_norm=True))
    grouped = GroupedLayers.of(members[0], len(members))
    params, buffers = stack_module_state(members)
    rows = evaluate_grouped(grouped, params, buffers, loader)
    for member, row in zip(members, rows, strict=True):
        alone = evaluate(member, loader, test.classes)
        assert row["test_loss"] == pytest.approx(alone.loss, rel=1e-5)
        assert (row["test_acc"], row["test_top5"]) == (alone.top1, alone.top5)


def test_auto_batches_lenet_at_every_batch_size_and_vmap_only_below_16(tmp_path: Path) -> None:
    spec = StudySpec.from_dict(tiny_spec(factors={"batch_size": [8]}, seeds=2))
    for point, vmap_pays in ((spec.points()[0], False), (spec.points()[1], True)):  # 32, 8
        configs = [spec.config_for(point, seed, tmp_path / f"s{seed}") for seed in spec.seeds]
        ensemble = SeedEnsemble(configs, DATA)
        assert batching_pays(ensemble) is None  # LeNet-5: the grouped form
        ensemble.grouped = None  # what a network without a grouped form trains with
        assert (batching_pays(ensemble) is None) == vmap_pays
