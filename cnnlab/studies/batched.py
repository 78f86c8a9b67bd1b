"""Seed batching: all seeds of a study point train at once, as one ensemble.

Each member is built, seeded and initialized exactly as its own `cnnlab.train` run would be,
and reads its own `BatchLoader` (its seed's order and augmentation). The members' parameters
and buffers are stacked (`torch.func.stack_module_state`); one forward pass runs every member
on its own batch, and the members' losses are summed, so each member's gradient is that of a
separate run. Batch-norm running statistics are stacked buffers that the forward pass updates
in place, one row per member.

The forward pass: for LeNet-5 `GroupedLayers` (`studies/grouped.py`: one grouped convolution
or `baddbmm` per layer for all members; evaluation too), for other networks `functional_call`
under `vmap(randomness="different")`.

The optimizer is cnnlab's own (`create_optimizer` with the same parameter groups: weight decay
on the >= 2-dimensional weights only) over the stacked tensors, stepped by cnnlab's per-step
scheduler: every supported optimizer is elementwise, so a step on the stack is the step of
each member. Each member then gets what a separate run leaves: its metrics rows in the store,
`config.yaml`, `metrics.jsonl/csv`, `last.pt`/`best.pt` (its own slice of the weights, buffers
and optimizer state), so `cnnlab eval` works on it as on any run.

A point stopped at any moment (SIGKILL included) resumes: each member whose folder holds a
`last.pt` is restored from it, as its own run would be, and the ensemble goes on from there.

Networks with dropout or auxiliary classifiers (their random masks and extra losses would not
match a separate run's), mixed precision, channels-last, time budgets (each run's budget is
fitted by its own `cnnlab.train`) and members that stopped at different epochs fall back to one
run after another (each resuming from its own `last.pt`), with a note.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from cnnlab.data.memory import DataSplits
from cnnlab.engine.checkpoint import save_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.distributed import DistributedContext
from cnnlab.engine.optim import create_optimizer, create_scheduler
from cnnlab.engine.runfolder import claim_run_folder
from cnnlab.engine.runlog import scored_names, write_metrics
from cnnlab.engine.trainer import CHECKS_PER_EPOCH, Trainer
from cnnlab.studies.grouped import GroupedLayers, evaluate_grouped
from cnnlab.studies.store import LeaseLost, RunRecord

# `--batched-seeds auto` batches networks without a grouped form only below this batch size.
VMAP_PAYS_BELOW_BATCH = 16

if TYPE_CHECKING:
    from cnnlab.studies.worker import Worker


def train_point_batched(worker: Worker, records: list[RunRecord], mode: bool | str = True) -> None:
    """Train the claimed seeds of one point together, or one by one where that is not exact.

    `mode` `"auto"` batches only where batching was measured to pay (`batching_pays`).
    """
    configs = [TrainConfig.from_dict(record.config) for record in records]
    data = worker.data_for(configs[0], records[0].point)
    reason = "one seed" if len(records) == 1 else unbatchable_config(configs[0])
    ensemble = None
    if reason is None:
        ensemble = SeedEnsemble(configs, data)
        reason = unbatchable_model(ensemble.models[0])
        if len({member.epochs_done for member in ensemble.members}) > 1:
            reason = "its seeds stopped at different epochs"
        if reason is None and mode == "auto":
            reason = batching_pays(ensemble)
    if reason is not None:
        if len(records) > 1:
            worker.log(f"{records[0].point}: seeds trained one by one ({reason})")
        for record in records:
            worker.train(record)
        return
    started = time.perf_counter()
    try:
        histories = ensemble.fit(worker, records)
    except LeaseLost:
        worker.log(f"{records[0].point}: taken over by another runner")
        return
    except KeyboardInterrupt:
        for record in records:
            worker.store.release(record.id, worker.name)
        raise
    except Exception as failure:  # noqa: BLE001 - recorded for every member, the study goes on
        if worker.stopping.is_set():  # the stop interrupt surfaced as another exception
            for record in records:
                worker.store.release(record.id, worker.name)
            return
        error = f"{type(failure).__name__}: {failure}"
        seconds = (time.perf_counter() - started) / len(records)
        for record in records:
            worker.finish(record, "failed", [], seconds, error)
        return
    seconds = (time.perf_counter() - started) / len(records)  # each run's share of the time
    for record, history in zip(records, histories, strict=True):
        status = "diverged" if history and history[-1]["status"] == "diverged" else "done"
        worker.finish(record, status, history, seconds, None)


def batching_pays(ensemble: SeedEnsemble) -> str | None:
    """`--batched-seeds auto`'s rule: None where batching pays, else why not.

    Measured by bench/study_speed.py on LeNet-5 with 5 seeds, one thread (docs/studies.md):
    the grouped form beats one by one at batch 2, 16 and 256 (2.5x, 1.8x, 1.2x), the vmap form
    only at batch 2 (1.6x; 0.78x at 16, 0.59x at 256).
    """
    if ensemble.grouped is not None:
        return None
    if ensemble.configs[0].batch_size < VMAP_PAYS_BELOW_BATCH:
        return None
    return f"auto: vmap batching is slower than one by one from batch {VMAP_PAYS_BELOW_BATCH}"


def unbatchable_config(config: TrainConfig) -> str | None:
    """Why runs of `config` cannot be batched exactly, or None."""
    if config.amp:
        return "mixed precision"
    if config.channels_last:
        return "channels-last"
    if config.time_budget is not None:
        return "a time budget"
    return None


def unbatchable_model(model: nn.Module) -> str | None:
    """Why `model` cannot be batched exactly (random masks, auxiliary losses), or None."""
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return "the network has dropout"
    if hasattr(model, "aux_loss_weight"):
        return "the network has auxiliary classifiers"
    return None


class SeedEnsemble:
    """The members of one point (same config, different seeds) as one stacked model.

    Each member is a `Trainer`, built exactly as its own run builds it (seeded model, loaders,
    optimizer groups, schedule) and restored from its folder's `last.pt` when there is one; the
    ensemble trains their stacked weights and writes them back into the members for
    evaluation and checkpoints.
    """

    def __init__(self, configs: list[TrainConfig], data: DataSplits) -> None:
        self.configs, self.data = configs, data
        config = configs[0]
        self.members = [
            Trainer(
                member,
                DistributedContext.from_environment(member.device),
                progress=False,
                data=data,
                curves=False,
                resume=member.run_dir if (member.run_dir / "last.pt").is_file() else None,
            )
            for member in configs
        ]
        self.models = [member.model for member in self.members]
        self.device = self.members[0].device
        self.params, self.buffers = stack_module_state(self.models)
        self.skeleton = copy.deepcopy(self.models[0]).to("meta")
        # The members' own parameter groups, in their order, over the stacked tensors: each
        # member's slice of the optimizer state is then the state dict of its own optimizer.
        names = {id(p): name for name, p in self.models[0].named_parameters()}
        groups = [
            {**group, "params": [self.params[names[id(p)]] for p in group["params"]]}
            for group in self.members[0].optimizer.param_groups
        ]
        self.optimizer = create_optimizer(
            self.models[0],
            config.optimizer,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.nesterov,
            groups=[{k: g[k] for k in ("params", "weight_decay")} for g in groups],
        )
        self.scheduler = create_scheduler(
            self.optimizer,
            config.schedule,
            epochs=config.epochs,
            steps_per_epoch=len(self.members[0].train_loader),
            warmup_epochs=config.warmup_epochs,
            step_size=config.lr_step_size,
            gamma=config.lr_gamma,
        )
        self._restore_stacked_state()
        self.criterion = self.members[0].criterion
        self.grouped = GroupedLayers.of(self.models[0], len(self.models))

    def _restore_stacked_state(self) -> None:
        """The members' restored optimizer and schedule states, stacked (`member_state`'s inverse)."""
        first = self.members[0]
        if first.epochs_done == 0:
            return
        states = [member.optimizer.state_dict()["state"] for member in self.members]
        stacked = first.optimizer.state_dict()  # its groups: the same order, lr and steps
        stacked["state"] = {
            key: {
                name: torch.stack([state[key][name] for state in states])
                if isinstance(value, Tensor) and value.dim() > 0
                else value
                for name, value in state.items()
            }
            for key, state in states[0].items()
        }
        self.optimizer.load_state_dict(stacked)
        self.scheduler.load_state_dict(first.scheduler.state_dict())

    # ----------------------------------------------------------------------------- training

    def _member_loss(self, params: dict, buffers: dict, images: Tensor, labels: Tensor):
        logits = functional_call(self.skeleton, (params, buffers), (images,))
        return self.criterion(logits, labels), logits

    def train_step(self, images: list[Tensor], labels: Tensor) -> tuple[Tensor, Tensor]:
        """One step of every member: each member's images (B, C, H, W), `labels` (k, B)."""
        if self.grouped is not None:
            logits = self.grouped(self.params, self.buffers, torch.cat(images, dim=1))
            members, batch, classes = logits.shape
            losses = F.cross_entropy(
                logits.reshape(-1, classes),
                labels.reshape(-1),
                reduction="none",
                label_smoothing=self.criterion.label_smoothing,
            )
            losses = losses.view(members, batch).mean(dim=1)
        else:
            losses, logits = vmap(self._member_loss, randomness="different")(
                self.params, self.buffers, torch.stack(images), labels
            )
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # member i's loss depends on member i's weights only
        self.optimizer.step()
        self.scheduler.step()
        return losses.detach(), logits.detach()

    def train_one_epoch(self, epoch: int) -> tuple[Tensor, Tensor, int, float]:
        """Per-member loss sums and correct counts, images per member, seconds."""
        self.skeleton.train()
        if self.grouped is not None:
            self.grouped.train()
        loaders = [member.train_loader for member in self.members]
        for loader in loaders:
            loader.set_epoch(epoch)
        steps = len(loaders[0])
        check_every = max(1, steps // CHECKS_PER_EPOCH)
        sums = torch.zeros(len(self.models), 2, device=self.device)
        nonfinite = torch.zeros(len(self.models), dtype=torch.bool, device=self.device)
        seen, started = 0, time.perf_counter()
        for step, batches in enumerate(zip(*loaders, strict=True), start=1):
            images = [images for images, _ in batches]
            labels = torch.stack([labels for _, labels in batches])
            losses, logits = self.train_step(images, labels)
            nonfinite |= ~torch.isfinite(losses)
            correct = (logits.argmax(dim=-1) == labels).sum(dim=1)
            sums += torch.stack((losses * labels.shape[1], correct.to(losses.dtype)), dim=1)
            seen += labels.shape[1]
            if step % check_every == 0 and bool(nonfinite.all()):
                break
        return sums, nonfinite, seen, time.perf_counter() - started

    def write_back(self) -> None:
        """Copy each member's slice of the stacked weights and buffers into its module."""
        with torch.no_grad():
            for index, model in enumerate(self.models):
                for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                    stacked = self.params[name] if name in self.params else self.buffers[name]
                    tensor.copy_(stacked[index])

    def member_state(self, index: int, history: list[dict], best: float) -> dict:
        """Member `index`'s checkpoint: its run's `checkpoint_state` with its slice of the state."""
        member = self.members[index]
        optimizer = self.optimizer.state_dict()
        optimizer["state"] = {
            key: {
                name: value[index] if isinstance(value, Tensor) and value.dim() > 0 else value
                for name, value in state.items()
            }
            for key, state in optimizer["state"].items()
        }
        member.optimizer.load_state_dict(optimizer)
        member.scheduler.load_state_dict(self.scheduler.state_dict())
        member.history, member.best_metric = list(history), best
        return member.checkpoint_state(history[-1]["epoch"])

    def fit(self, worker: Worker, records: list[RunRecord]) -> list[list[dict]]:
        """Train every member for its epochs; each member's metrics rows."""
        count = len(self.models)
        histories = [list(member.history) for member in self.members]
        best = [member.best_metric for member in self.members]
        start = self.members[0].epochs_done
        active = [not h or h[-1]["status"] != "diverged" for h in histories]

        with contextlib.ExitStack() as folders:
            for config in self.configs:  # a folder without last.pt: killed before an epoch ended
                folders.enter_context(
                    claim_run_folder(config.run_dir, resume=start > 0, force=start == 0)
                )
                config.to_yaml(config.run_dir / "config.yaml")
            epochs = self.configs[0].epochs
            for epoch in range(start, epochs):
                started = time.perf_counter()
                sums, nonfinite, seen, seconds = self.train_one_epoch(epoch)
                self.write_back()
                tested = self.evaluate()
                for index in (i for i in range(count) if active[i]):
                    metrics = {} if bool(nonfinite[index]) else tested[index]
                    row = self._row(index, epoch, sums, metrics, seen, seconds, started)
                    histories[index].append(row)
                    active[index] = row["status"] != "diverged"
                    self._save(index, histories[index], best, row)
                    named = scored_names(row, self.data.scored_split)
                    worker.store.add_epoch(records[index].id, worker.name, named, worker.lease)
                if not any(active):
                    break
        return histories

    def evaluate(self) -> list[dict]:
        """Each member's `Trainer.evaluate()` row: one grouped pass over the test split for
        LeNet-5 (test-time flips aside), else member by member."""
        if self.grouped is None or self.configs[0].test_time_flip:
            return [member.evaluate() for member in self.members]
        return evaluate_grouped(
            self.grouped, self.params, self.buffers, self.members[0].test_loader
        )

    def _row(self, index, epoch, sums, metrics, seen, seconds, started) -> dict:
        loss_sum, correct_sum = sums[index].tolist()
        diverged = not metrics
        last = epoch + 1 == self.configs[index].epochs
        return {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_acc": correct_sum / seen,
            "images_per_sec": seen / seconds,
            **metrics,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
            "status": "diverged" if diverged else ("completed" if last else "ok"),
        }

    def _save(self, index: int, history: list[dict], best: list[float], row: dict) -> None:
        folder = self.configs[index].run_dir
        write_metrics(folder, history, self.data.scored_split)
        if row["status"] == "diverged":
            return
        improved = row["test_acc"] > best[index]
        best[index] = max(best[index], row["test_acc"])
        state = self.member_state(index, history, best[index])
        save_checkpoint(folder / "last.pt", state)
        if improved:
            save_checkpoint(folder / "best.pt", state)
