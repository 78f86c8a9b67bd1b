"""A study worker: claims runs from the store and trains them, one at a time or a point at once.

`work` is what each worker process runs (in the study's process when there is one worker): it
claims a pending run in the store, trains it with `cnnlab.train` on the study's memory-mapped
data, and records how it ended. While it holds runs, a `LeaseHeartbeat` thread renews their
leases (its own connection), so no evaluation or set-up is long enough to lose them; a
`StoreHook` records every epoch into the store. A run that fails is recorded with its error and
the worker goes on. A worker
process stops when its parent does (`stop_with_parent`), however the parent was killed.
"""

from __future__ import annotations

import _thread
import math
import multiprocessing
import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy
import torch

import cnnlab
from cnnlab.data.memory import DataSplits
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.hooks import TrainHook
from cnnlab.engine.runlog import scored_names
from cnnlab.engine.trainer import train
from cnnlab.errors import StudyError
from cnnlab.studies.batched import train_point_batched
from cnnlab.studies.shared_data import data_key, open_data, prepare_data
from cnnlab.studies.spec import holdout_for
from cnnlab.studies.store import LeaseLost, RunRecord, StudyStore, worker_name

FINAL_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc")
Log = Callable[[str], None]


def work(
    folder: str,
    threads: int,
    lease_seconds: float,
    batched_seeds: bool,
    train_images: int | None,
    validation: float | None,
    verbose: bool,
    *,
    index: int,
    log: Log | None = None,
    lines: multiprocessing.Queue | None = None,
) -> None:
    """Claim and train runs until none is pending or held by a live runner.

    A worker process sends its lines to the parent through `lines` (when `verbose`).
    """
    torch.set_num_threads(threads)
    if log is None and verbose:
        log = print if lines is None else lines.put
    worker = worker_name(index)
    parent_gone = stop_with_parent()
    store = StudyStore(folder)
    runner = Worker(
        Path(folder),
        store,
        worker,
        lease_seconds,
        log or (lambda line: None),
        train_images=train_images,
        validation=validation,
        stopping=parent_gone,
    )
    try:
        while not parent_gone.is_set():
            if batched_seeds:
                claimed = store.claim_point(worker, lease_seconds)
                if claimed:
                    with runner.holding():
                        train_point_batched(runner, claimed)
                    continue
            else:
                record = store.claim(worker, lease_seconds)
                if record is not None:
                    runner.train(record)
                    continue
            if store.counts()["running"] == 0:
                break
            time.sleep(min(1.0, lease_seconds / 4))  # another runner's run may still fall back
    except KeyboardInterrupt:
        if not parent_gone.is_set():
            raise
    finally:
        store.close()


def stop_with_parent(grace_seconds: float = 30.0) -> threading.Event:
    """In a worker process, interrupt the main thread once the parent process is gone.

    The interrupt stops the worker as Ctrl-C does (the run in hand goes back to `pending`, to
    be resumed from its `last.pt`), so a study or comparison killed by any signal leaves no
    workers training on; one still alive `grace_seconds` later exits at once. The event is set
    when the parent is gone (never in the study's own process, which has no parent to watch).
    """
    gone = threading.Event()
    parent = multiprocessing.parent_process()
    if parent is None:
        return gone
    # `interrupt_main` does nothing while SIGINT is ignored, as it is in a process started in
    # the background by a shell (`cnnlab study run ... &`): raise KeyboardInterrupt for it here.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch() -> None:
        parent.join()  # returns when the parent process has exited
        gone.set()
        _thread.interrupt_main()
        time.sleep(grace_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()
    return gone


class LeaseHeartbeat:
    """A thread renewing the leases of every run `worker` holds, every quarter lease, until the
    block ends (Optuna's RDB heartbeat): long evaluations or set-ups cannot lose a run.

    It opens its own connection to the store; a store locked past its busy timeout is tried
    again at the next beat. Runs taken over by another runner are no longer `worker`'s: the
    training thread learns it at its next write (`LeaseLost`).
    """

    def __init__(self, folder: Path, worker: str, lease: float) -> None:
        self.folder, self.worker, self.lease = folder, worker, lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        store = StudyStore(self.folder)
        try:
            while not self._stop.wait(self.lease / 4):
                try:
                    store.renew_held(self.worker, self.lease)
                except StudyError:  # locked for the whole busy timeout: the next beat retries
                    continue
        finally:
            store.close()


class Worker:
    """What one worker process keeps between runs: the store, the mapped data, its identity.

    `train_images` and `validation` are the study's (none: all images, scored on the test split).
    Once `stopping` is set (the parent is gone), a run that ends in an error goes back to
    `pending` instead of being failed: the stop interrupt may surface as another exception
    (inside `torch.save`, a `RuntimeError`). `hooks` are added to every run's `StoreHook`.
    """

    def __init__(
        self,
        folder: Path,
        store: StudyStore,
        name: str,
        lease: float,
        log: Log,
        *,
        train_images: int | None = None,
        validation: float | None = None,
        stopping: threading.Event | None = None,
        hooks: Sequence[TrainHook] = (),
    ) -> None:
        self.folder, self.store = folder, store
        self.stopping = stopping or threading.Event()
        self.name, self.lease, self.log = name, lease, log
        self.train_images, self.validation = train_images, validation
        self.hooks = list(hooks)
        self._data: dict[str, DataSplits] = {}
        self._beating = False
        self.environment = environment()

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Keep the leases of the runs this worker holds alive while the block runs."""
        if self._beating:  # already inside (a batched point trained seed by seed)
            yield
            return
        self._beating = True
        try:
            with LeaseHeartbeat(self.folder, self.name, self.lease):
                yield
        finally:
            self._beating = False

    def data_for(self, config: TrainConfig, point: str) -> DataSplits:
        """The mapped data of a run of `point`: with the holdout as its test split, or not."""
        holdout = holdout_for(point, self.validation)
        key = data_key(config, self.train_images, holdout)
        if key not in self._data:
            folder = prepare_data(self.folder, config, self.train_images, holdout=holdout)
            self._data[key] = open_data(folder)
        return self._data[key]

    def train(self, record: RunRecord) -> None:
        """Train one claimed run and record how it ended."""
        with self.holding():
            self._train(record)

    def _train(self, record: RunRecord) -> None:
        started = time.perf_counter()
        config = TrainConfig.from_dict(record.config)
        hook = StoreHook(self.store, record.id, self.name, self.lease)
        history, error = [], None
        try:
            data = self.data_for(config, record.point)
            status, history = train_one_run(config, data, [hook, *self.hooks])
        except LeaseLost:
            self.log(f"{record.point} seed {record.seed}: taken over by another runner")
            return
        except KeyboardInterrupt:
            self.store.release(record.id, self.name)  # the next `study run` resumes it at once
            raise
        except Exception as failure:  # noqa: BLE001 - a failing run is recorded, the study goes on
            if self.stopping.is_set():
                self.store.release(record.id, self.name)
                return
            status, error = "failed", f"{type(failure).__name__}: {failure}"
        self.finish(record, status, history, time.perf_counter() - started, error)

    def finish(
        self,
        record: RunRecord,
        status: str,
        history: list[dict],
        seconds: float,
        error: str | None,
        environment: dict | None = None,
    ) -> None:
        """Record a finished run (its epochs again, in case the last one was not yet stored).

        The scored split's metrics are named for it: `val_acc`, ... for a validation holdout.
        `environment`: where it ran, when not in this process (a Ray task's).
        """
        split = "test" if holdout_for(record.point, self.validation) is None else "val"
        history = [scored_names(row, split) for row in history]
        final = final_metrics(history)
        try:
            self.store.finish(
                record.id,
                self.name,
                status,
                wall_seconds=seconds,
                final=final,
                error=error,
                environment=environment or self.environment,
                history=history,
            )
        except LeaseLost:
            self.log(f"{record.point} seed {record.seed}: taken over by another runner")
            return
        shown = error or " ".join(
            f"{k} {v:.4f}" for k, v in (final or {}).items() if k in FINAL_KEYS
        )
        self.log(f"{record.point} seed {record.seed}: {status} in {seconds:.1f} s  {shown}")


def train_one_run(
    config: TrainConfig, data: DataSplits, hooks: Sequence[TrainHook] = ()
) -> tuple[str, list[dict]]:
    """Train a study's run into its folder, resuming from its `last.pt` when there is one; its
    status (`done` or `diverged`) and metrics rows. Local workers and Ray tasks both use it.

    A run whose `last.pt` already holds every epoch (its runner was killed after training it,
    before recording it) is not trained again: its rows are read from that checkpoint.
    """
    last = config.run_dir / "last.pt"
    resume = config.run_dir if last.is_file() else None
    if resume is not None:
        checkpoint = torch.load(last, map_location="cpu", mmap=True, weights_only=True)
        if int(checkpoint["epoch"]) >= config.epochs:
            history = list(checkpoint["history"])
            diverged = any(row.get("status") == "diverged" for row in history)
            return ("diverged" if diverged else "done"), history
    result = train(
        config,
        data=data,
        progress=False,
        hooks=list(hooks),
        resume=resume,
        force=resume is None,  # a folder left by a run killed before its first epoch
        curves=False,
    )
    return ("diverged" if result.status == "diverged" else "done"), result.history


class StoreHook(TrainHook):
    """Records each epoch's row into the store (renewing the lease in the same transaction).

    The scored split's metrics are stored under its name (`val_acc` for a validation holdout).
    """

    def __init__(self, store: StudyStore, run_id: int, worker: str, lease: float) -> None:
        self.store, self.run_id, self.worker, self.lease = store, run_id, worker, lease

    def after_epoch(self, trainer, row: dict) -> None:
        self.store.add_epoch(
            self.run_id, self.worker, scored_names(row, trainer.data.scored_split), self.lease
        )


def final_metrics(history: list[dict]) -> dict | None:
    """The last epoch's losses and accuracies (NaN where a diverged epoch has none).

    The scored split's keys are those of the rows (`test_acc`, or `val_acc` for a holdout);
    its top-5 accuracy is kept too where the epoch has it (more than 5 classes).
    """
    if not history:
        return None
    last = history[-1]
    split = "val" if "val_acc" in last else "test"
    keys = ["train_loss", "train_acc", f"{split}_loss", f"{split}_acc"]
    final = {key: float(last.get(key, math.nan)) for key in keys}
    if last.get(f"{split}_top5") is not None:
        final[f"{split}_top5"] = float(last[f"{split}_top5"])
    return final | {"epochs": last["epoch"]}


def environment() -> dict:
    """Package versions and hardware, stored beside every run."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cnnlab": cnnlab.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": cuda,
    }
