"""The fit loop: `train(config)` runs a `TrainConfig` to the end and returns a `TrainResult`.

Shaped after torchvision's classification reference (one method per step: train one epoch,
evaluate, checkpoint; resume from the checkpoint dict; DDP from torchrun's environment) and
fast in the manner of airbench: the dataset stays one uint8 tensor on the device, batches are
normalized and augmented whole, and the step never waits for the host. Loss sums, correct
counts and a non-finite-loss flag accumulate as device tensors, read a few times per epoch
(at progress refreshes, which is also when divergence is noticed) and once at its end.

The run folder (`config.run_dir`, or the folder being resumed) receives `config.yaml`,
`metrics.jsonl`/`metrics.csv` (see `runlog`), `last.pt` after every epoch, `best.pt` on each
new best test accuracy (every epoch with `val_fraction` 0: the last one), and `curves.png` at
the end. Checkpoints record how the test split was made (`split`, a `SplitRecord`), so
`cnnlab eval` scores the same images. A resumed run removes the folder's old `eval.json` and
`confusion.png`, which described the previous checkpoints. With several processes, rank 0
alone writes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from cnnlab.data.loader import BatchLoader
from cnnlab.data.memory import DataSplits
from cnnlab.engine.budget import TimeBudget, parse_duration
from cnnlab.engine.checkpoint import save_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.distributed import DistributedContext
from cnnlab.engine.evaluate import evaluate
from cnnlab.engine.hooks import EpochEndCallback, TrainHook, resume_hooks
from cnnlab.engine.inputs import build_augment, describe_test_split, load_splits
from cnnlab.engine.optim import create_optimizer, create_scheduler, init_weights
from cnnlab.engine.plots import plot_curves
from cnnlab.engine.resume import load_resume_checkpoint
from cnnlab.engine.runfolder import claim_run_folder, clear_evaluation
from cnnlab.engine.runlog import TrainingDisplay, write_metrics
from cnnlab.engine.seeding import rng_state, seed_everything, set_rng_state
from cnnlab.errors import OptionError
from cnnlab.models import create_model_for_input
from cnnlab.models.layers import AuxOutputs
from cnnlab.models.registry import resolve_options

# How often per epoch the accumulated metrics (and the divergence flag) are read back.
CHECKS_PER_EPOCH = 20


@dataclass
class TrainResult:
    """How a run ended: `status` is `completed` or `diverged`; one `history` row per epoch."""

    status: str
    history: list[dict]
    out_dir: Path
    config: TrainConfig
    best_metric: float

    @property
    def final(self) -> dict:
        """The last epoch's metrics row."""
        return self.history[-1]

    @property
    def last_checkpoint(self) -> Path | None:
        path = self.out_dir / "last.pt"
        return path if path.is_file() else None

    @property
    def best_checkpoint(self) -> Path | None:
        path = self.out_dir / "best.pt"
        return path if path.is_file() else None


EpochCallback = Callable[[dict], None]


def train(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    data: DataSplits | None = None,
    hooks: Sequence[TrainHook] = (),
    on_epoch_end: EpochCallback | None = None,
    force: bool = False,
    curves: bool = True,
) -> TrainResult:
    """Train `config.model` on `config.data` for `config.epochs` epochs.

    `resume` is a run folder: training continues from its `last.pt` (model, optimizer,
    scheduler, scaler, random state, history) and writes into that folder; with the same config
    the result is identical to an uninterrupted run; a folder holding a run-folder plugin's file
    (a transferred run's `transfer.yaml`) adds that plugin's hook (see `cnnlab.engine.hooks`),
    unless `hooks` has one of its type. `data` trains on already-loaded splits
    instead of loading `config.data`. `hooks` plug into the loop (see `cnnlab.engine.hooks`);
    `on_epoch_end` is a shorthand for a hook that receives each epoch's metrics row after its
    checkpoint is written. A non-finite loss ends the run with status `diverged`.
    `curves=False` skips `curves.png` (a study plots from its store).

    A new run refuses a folder that already holds one unless `force` (which deletes the old
    run's files first); the folder stays locked against other processes while the run trains
    (see `cnnlab.engine.runfolder`).
    """
    if resume is not None:
        hooks = [*resume_hooks(Path(resume), hooks), *hooks]
    context = DistributedContext.from_environment(config.device)
    if config.time_budget is not None and resume is None:  # a resumed run keeps its fitted plan
        hooks = [TimeBudget(parse_duration(config.time_budget)), *hooks]
    if on_epoch_end is not None:
        hooks = [*hooks, EpochEndCallback(on_epoch_end)]
    out_dir = Path(resume) if resume is not None else config.run_dir
    claim = claim_run_folder(out_dir, resume=resume is not None, force=force)
    try:
        with claim if context.is_main else contextlib.nullcontext():
            trainer = Trainer(
                config,
                context,
                resume=resume,
                progress=progress,
                data=data,
                hooks=hooks,
                curves=curves,
            )
            return trainer.fit()
    finally:
        context.close()


class Trainer:
    """The state of one run (model, optimizer, loaders, history) and the steps of its loop."""

    def __init__(
        self,
        config: TrainConfig,
        context: DistributedContext,
        *,
        resume: str | Path | None = None,
        progress: bool = True,
        data: DataSplits | None = None,
        hooks: Sequence[TrainHook] = (),
        curves: bool = True,
    ) -> None:
        self.hooks = list(hooks)
        self.curves = curves
        self.out_dir = Path(resume) if resume is not None else config.run_dir
        self.config = config = config.replace(out=str(self.out_dir))
        self.context = context
        self.device = device = context.device
        checkpoint = None
        if resume is not None:
            checkpoint = load_resume_checkpoint(self.out_dir, config)
        resolve_options(config.model, **config.model_options)  # fail before loading any data
        seed_everything(config.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.data = data if data is not None else load_splits(config, context)
        self.data.check_trainable()
        self.mean, self.std = config.normalization(self.data)
        self.model = self._build_model()
        for hook in self.hooks:
            hook.on_model_built(self)
        self.parallel_model = context.wrap(self.model)
        if config.compile:
            self.parallel_model = torch.compile(self.parallel_model)
        self.train_loader, self.test_loader = self._build_loaders()
        self.optimizer = create_optimizer(
            self.model,
            config.optimizer,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.nesterov,
            groups=self._param_groups(),
        )
        self.scheduler = self._create_scheduler()
        # bf16 has float32's range and needs no loss scaling; fp16 (GPUs without bf16) does,
        # and GradScaler's step reads its inf check back to the host every step.
        fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.amp_dtype = torch.float16 if fp16 else torch.bfloat16
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.amp and fp16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.history: list[dict] = []
        self.epochs_done = 0
        self.best_metric = -math.inf
        self.display = TrainingDisplay(progress and context.is_main, config.epochs)
        if checkpoint is not None:
            self._restore(checkpoint)

    # ----------------------------------------------------------------------------- set-up

    def _build_model(self) -> nn.Module:
        config = self.config
        model = create_model_for_input(
            config.model, self.data.image_shape, len(self.data.classes), **config.model_options
        )
        init_weights(model, config.init, seed=config.seed)
        memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        return model.to(self.device, memory_format=memory_format)

    def _create_scheduler(self) -> LambdaLR:
        config = self.config
        return create_scheduler(
            self.optimizer,
            config.schedule,
            epochs=config.epochs,
            steps_per_epoch=len(self.train_loader),
            warmup_epochs=config.warmup_epochs,
            step_size=config.lr_step_size,
            gamma=config.lr_gamma,
        )

    def set_epochs(self, epochs: int) -> None:
        """Re-plan the run for `epochs` epochs (time budgets): the schedule is laid out anew for
        the new length and continues from the current step; `config.yaml` records the plan."""
        step = self.scheduler.last_epoch
        self.config = self.config.replace(epochs=epochs)
        self.scheduler = self._create_scheduler()  # LambdaLR keeps each group's initial_lr
        self.scheduler.last_epoch = step
        for group, base_lr, multiplier in zip(
            self.optimizer.param_groups,
            self.scheduler.base_lrs,
            self.scheduler.lr_lambdas,
            strict=True,
        ):
            group["lr"] = base_lr * multiplier(step)
        self.display.epochs = epochs
        if self.context.is_main and (self.out_dir / "config.yaml").is_file():
            self.config.to_yaml(self.out_dir / "config.yaml")

    def _param_groups(self) -> list[dict] | None:
        """The first parameter groups a hook asks for, or None for the default grouping."""
        for hook in self.hooks:
            groups = hook.param_groups(self)
            if groups is not None:
                return groups
        return None

    def _build_loaders(self) -> tuple[BatchLoader, BatchLoader]:
        config, data, context = self.config, self.data, self.context
        if config.batch_size % context.world_size:
            raise OptionError(
                f"batch_size {config.batch_size} does not split evenly over "
                f"{context.world_size} processes; use a multiple of {context.world_size}"
            )
        batch_size = config.batch_size // context.world_size
        shared = {
            "mean": self.mean,
            "std": self.std,
            "device": self.device,
            "shard": (context.rank, context.world_size),
            "channels_last": config.channels_last,
        }
        shard_size = len(data.train) // context.world_size
        if shard_size == 0:
            raise OptionError(f"the training split has fewer images than {context.world_size}")
        train_loader = BatchLoader(
            data.train,
            batch_size,
            shuffle=True,
            # A last batch of a few images would give batch norm noisy statistics; without
            # batch norm every image counts, as in the plain PyTorch recipes.
            drop_tiny_last=_has_batch_norm(self.model),
            augment=build_augment(config, self.model, data.image_shape) or None,
            seed=config.seed,
            **shared,
        )
        test_loader = BatchLoader(data.test, 2 * batch_size, even_shards=False, **shared)
        return train_loader, test_loader

    def _restore(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["model_state"])
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        self.scheduler.load_state_dict(checkpoint["scheduler_state"])
        if checkpoint["scaler_state"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(checkpoint["scaler_state"])
        set_rng_state(checkpoint["rng_state"])
        self.history = list(checkpoint["history"])
        self.epochs_done = checkpoint["epoch"]
        self.best_metric = checkpoint["best_metric"]

    # ----------------------------------------------------------------------------- the steps

    def train_step(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """One optimizer and scheduler step; the detached loss and logits, left on the device."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.config.amp):
            outputs = self.parallel_model(images)
            if isinstance(outputs, AuxOutputs):  # GoogLeNet/Inception auxiliary classifiers
                logits = outputs.logits
                aux_loss = sum(self.criterion(aux, labels) for aux in outputs.aux_logits)
                loss = self.criterion(logits, labels) + self.model.aux_loss_weight * aux_loss
            else:
                logits = outputs
                loss = self.criterion(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach().float(), logits.detach()

    def train_one_epoch(self, epoch: int) -> dict:
        """Train on every batch of epoch `epoch` (0-based); its loss, accuracy and throughput.

        Stops at the first check that sees a non-finite loss, returning `diverged: True`.
        """
        self.parallel_model.train()
        for hook in self.hooks:
            hook.on_train_epoch_start(self, epoch)
        loader = self.train_loader
        loader.set_epoch(epoch)
        steps = len(loader)
        check_every = max(1, steps // CHECKS_PER_EPOCH)
        sums = torch.zeros(2, device=self.device)  # loss summed over images, correct predictions
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        seen, diverged = 0, False
        self.display.start_epoch(epoch + 1, steps)
        started = time.perf_counter()
        for step, (images, labels) in enumerate(loader, start=1):
            for hook in self.hooks:
                hook.before_step(self, images, labels)
            loss, logits = self.train_step(images, labels)
            for hook in self.hooks:
                hook.after_step(self, loss, logits)
            nonfinite |= ~torch.isfinite(loss)
            correct = (logits.argmax(dim=-1) == labels).sum()
            sums += torch.stack((loss * len(labels), correct.to(loss.dtype)))
            seen += len(labels)
            if step % check_every and step != steps:
                continue
            if self.context.any(nonfinite):
                diverged = True
                break
            if self.display.shows_bar:
                loss_sum, correct_sum = sums.tolist()
                elapsed = time.perf_counter() - started
                self.display.update(step, loss_sum / seen, correct_sum / seen, seen / elapsed)
        seconds = time.perf_counter() - started
        loss_sum, correct_sum, seen = self.context.sum([*sums.tolist(), seen])
        return {
            "train_loss": loss_sum / seen,
            "train_acc": correct_sum / seen,
            "images_per_sec": seen / seconds,
            "diverged": diverged,
        }

    def evaluate(self) -> dict:
        """Loss, top-1 and top-5 accuracy on the test split (over every process's shard)."""
        self.context.sync_buffers(self.model)
        result = evaluate(
            self.model,
            self.test_loader,
            self.data.classes,
            amp=self.config.amp,
            flip=self.config.test_time_flip,
        )
        count = result.count
        loss, top1, top5, count = self.context.sum(
            [result.loss * count, result.top1 * count, result.top5 * count, count]
        )
        top5 = top5 / count if len(self.data.classes) > 5 else None  # else always 100%
        return {"test_loss": loss / count, "test_acc": top1 / count, "test_top5": top5}

    def checkpoint_state(self, epochs_done: int) -> dict:
        """Everything needed to evaluate, predict with or resume this run (plain values only)."""
        data = self.data
        return {
            "model_name": self.model.model_name,
            "model_options": dict(self.model.model_options),
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "scaler_state": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": epochs_done,
            "rng_state": rng_state(),
            "mean": list(self.mean),
            "std": list(self.std),
            "classes": list(data.classes),
            "image_shape": list(data.image_shape),
            "config": self.config.to_dict(),
            "split": data.split.to_dict() if data.split is not None else None,
            "history": list(self.history),
            "best_metric": self.best_metric,
        }

    # ----------------------------------------------------------------------------- the loop

    def fit(self) -> TrainResult:
        """Run the remaining epochs; write logs and checkpoints (rank 0) as they finish."""
        config, writes = self.config, self.context.is_main
        if writes:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            config.to_yaml(self.out_dir / "config.yaml")
            if self.epochs_done:  # training continues: the old evaluation no longer applies
                clear_evaluation(self.out_dir)
        self.display.message(self._describe())
        self.display.message(describe_test_split(self.data, config.val_fraction))
        status, epoch = "completed", self.epochs_done
        with self.display:
            while epoch < self.config.epochs:  # hooks may re-plan the length (time budgets)
                row = self.run_epoch(epoch)
                epoch += 1
                status = "diverged" if row["status"] == "diverged" else "completed"
                # val_fraction 0 selects nothing on the test split: best.pt is the last epoch.
                latest = config.val_fraction == 0
                improved = status == "completed" and (latest or row["test_acc"] > self.best_metric)
                if improved:
                    self.best_metric = row["test_acc"]
                self.history.append(row)
                if writes:
                    self._save(row, improved)
                self.display.end_epoch(row)
                stop = [hook.after_epoch(self, row) for hook in self.hooks]
                if status == "diverged" or any(stop):
                    break
        if writes:
            title = f"{self.config.model} on {self.config.data}"
            curves = None
            if self.curves:
                curves = plot_curves(self.history, self.out_dir / "curves.png", title=title)
            self.display.end_run(self.history, self.out_dir, curves)
        return TrainResult(status, self.history, self.out_dir, self.config, self.best_metric)

    def run_epoch(self, epoch: int) -> dict:
        """Train epoch `epoch` (0-based) and evaluate; its metrics row (see `runlog`)."""
        started = time.perf_counter()
        train_metrics = self.train_one_epoch(epoch)
        diverged = train_metrics.pop("diverged")
        if diverged:
            status = "diverged"
        else:
            status = "completed" if epoch + 1 == self.config.epochs else "ok"
        return {
            "epoch": epoch + 1,
            **train_metrics,
            **({} if diverged else self.evaluate()),
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
            "status": status,
        }

    def _describe(self) -> str:
        """The run in one line: model, data, device, processes and folder."""
        parameters = sum(p.numel() for p in self.model.parameters())
        shape = "x".join(map(str, self.data.image_shape))
        processes = f" x {self.context.world_size} processes" if self.context.enabled else ""
        return (
            f"{self.config.model} ({parameters:,} parameters) on {self.config.data}: "
            f"{len(self.data.train):,} train ({self._epoch_images()}) / "
            f"{len(self.data.test):,} test images of {shape}, "
            f"{self.device}{processes} -> {self.out_dir}"
        )

    def _epoch_images(self) -> str:
        """How many training images an epoch uses, and why not all when it does not."""
        loader, processes = self.train_loader, self.context.world_size
        used = loader.images_per_epoch * processes
        text = f"{used:,} per epoch"
        if loader.drops_last:
            left = (loader.num_samples - loader.images_per_epoch) * processes
            text += f"; the last {left} of each shuffled epoch sit out, too few for batch norm"
        if loader.num_samples * processes < len(self.data.train):
            text += f"; {len(self.data.train) % processes} sit out per epoch to split evenly"
        return text

    def _save(self, row: dict, improved: bool) -> None:
        """Metrics files for every epoch; `last.pt` (and `best.pt`) unless the epoch diverged."""
        write_metrics(self.out_dir, self.history, self.data.scored_split)
        if row["status"] == "diverged":
            return
        state = self.checkpoint_state(row["epoch"])
        for hook in self.hooks:
            hook.on_checkpoint(self, state)
        save_checkpoint(self.out_dir / "last.pt", state)
        if improved:
            save_checkpoint(self.out_dir / "best.pt", state)


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
