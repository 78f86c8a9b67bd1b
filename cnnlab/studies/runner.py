"""Running a study: `run_study(spec, out)` fills the store and trains every pending run.

The runs go to `workers` processes (spawned), each with `cores // workers` threads so the cores
are not oversubscribed, each claiming one run at a time from the store and training it with
`cnnlab.train` on the study's one memory-mapped copy of the data. A `StoreHook` records every
epoch into the store and renews the run's lease; a run that fails is recorded with its error
and the study goes on. Running the same spec again skips finished runs; a run left `running`
by a killed runner is taken up again once its lease runs out, resuming from its `last.pt`.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import queue
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch

import cnnlab
from cnnlab.data.memory import DataSplits
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.hooks import TrainHook
from cnnlab.engine.trainer import train
from cnnlab.errors import CnnlabError, OptionError, StudyError
from cnnlab.models import create_model_for_input
from cnnlab.studies.batched import train_point_batched
from cnnlab.studies.progress import runs_progress
from cnnlab.studies.shared_data import data_key, open_data, prepare_data
from cnnlab.studies.spec import Run, StudySpec, holdout_for, spec_differences
from cnnlab.studies.store import LeaseLost, RunRecord, StudyStore

LEASE_SECONDS = 120.0
FINAL_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")
Log = Callable[[str], None]


@dataclass
class StudyOutcome:
    """Where the study lives and how many runs are in each status after this call."""

    folder: Path
    counts: dict[str, int]
    seconds: float


def run_study(
    spec: StudySpec | str | Path,
    out: str | Path,
    *,
    workers: int = 1,
    extend: bool = False,
    batched_seeds: bool = False,
    data: DataSplits | None = None,
    lease_seconds: float = LEASE_SECONDS,
    threads: int | None = None,
    log: Log | None = print,
) -> StudyOutcome:
    """Run every pending run of `spec` (a `StudySpec` or a YAML path) in study folder `out`.

    `data` trains on splits already in memory instead of loading the spec's dataset (it must
    not vary with the factors). `threads` per worker defaults to the cores divided among the
    workers. `batched_seeds` trains all seeds of a point as one ensemble
    where the network allows it (`cnnlab.studies.batched`). `log` receives one line per
    finished run (None: silent).
    """
    started = time.perf_counter()
    if not isinstance(spec, StudySpec):
        spec = StudySpec.from_yaml(spec)
    if workers < 1:
        raise OptionError(f"workers must be at least 1, got {workers}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    configs = {
        run: spec.config_for(run.point, run.seed, folder / "runs" / run.folder)
        for run in spec.runs()
    }
    keys = {data_key(c, spec.train_images, spec.validation) for c in configs.values()}
    if data is not None and len(keys) > 1:
        raise OptionError("`data` was given but the factors change the dataset; give none")
    store = StudyStore(folder)
    try:
        _record_spec(store, spec, extend, write=False)  # another spec: refused before any work
        check_against_data(folder, spec, configs, data)
        _record_spec(store, spec, extend, write=True)
        counts = run_configs(
            store,
            configs,
            workers=workers,
            threads=threads,
            lease_seconds=lease_seconds,
            batched_seeds=batched_seeds,
            train_images=spec.train_images,
            validation=spec.validation,
            log=log,
        )
    finally:
        store.close()
    return StudyOutcome(folder, counts, time.perf_counter() - started)


def run_configs(
    store: StudyStore,
    configs: dict[Run, TrainConfig],
    *,
    workers: int,
    threads: int | None,
    lease_seconds: float,
    batched_seeds: bool,
    train_images: int | None,
    log: Log | None,
    validation: float | None = None,
) -> dict[str, int]:
    """Enqueue `configs` (those already present are kept) and work until none is pending.

    `train_images` keeps the first N training images (None: all of them); `validation` holds
    out that fraction of them and scores on it, except in final points (`holdout_for`).
    """
    store.enqueue(
        [
            {
                "point": run.point.name,
                "seed": run.seed,
                "folder": run.folder,
                "changes": dict(run.point.changes),
                "config": config.to_dict(),
            }
            for run, config in configs.items()
        ]
    )
    counts = store.counts()
    if counts["pending"] + counts["running"] == 0:
        return counts  # all finished: no worker to start
    threads = threads or max(1, _cores() // workers)
    arguments = (
        str(store.path.parent),
        threads,
        lease_seconds,
        batched_seeds,
        train_images,
        validation,
        log is not None,
    )
    with runs_progress(store.path.parent, enabled=log is not None):
        if workers == 1:
            work(*arguments, index=0, log=log)
        else:
            _spawn_workers(workers, arguments, log)
    return store.counts()


def check_against_data(
    folder: Path, spec: StudySpec, configs: dict[Run, TrainConfig], data: DataSplits | None
) -> None:
    """Decode each dataset once; every point's model must take its images (meta device)."""
    shapes = {}
    for run, config in configs.items():
        holdout = holdout_for(run.point.name, spec.validation)
        key = data_key(config, spec.train_images, holdout)
        if key not in shapes:
            splits = open_data(prepare_data(folder, config, spec.train_images, data, holdout))
            shapes[key] = (splits.image_shape, len(splits.classes))
        if run.seed != spec.seeds[0]:
            continue
        shape, classes = shapes[key]
        try:
            with torch.device("meta"):
                create_model_for_input(config.model, shape, classes, **config.model_options)
        except CnnlabError as error:
            raise OptionError(f"factor value {run.point.name}: {error}") from None


def _record_spec(store: StudyStore, spec: StudySpec, extend: bool, *, write: bool) -> None:
    """Keep the spec in a new store; refuse a different one unless `extend` only adds runs.

    With `write=False` only the check is made.
    """
    new = spec.to_dict()
    with store.transaction() as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'spec'").fetchone()
        if row is not None:
            old = json.loads(row[0])
            if old == new:
                return
            changes, additive = spec_differences(old, new)
            shown = "; ".join(changes)
            if not extend:
                raise StudyError(
                    f"{store.path.parent} holds a study from another spec ({shown}); "
                    "add --extend to add the new points, or choose a new --out folder"
                )
            if not additive:
                raise StudyError(
                    f"--extend only adds factor values or seeds, but the spec changed ({shown}); "
                    "choose a new --out folder"
                )
        if not write:
            return
        values = {"spec": new, "spec_hash": spec.hash(), "created": time.time()}
        if row is not None:
            values.pop("created")
        db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [(key, json.dumps(value)) for key, value in values.items()],
        )


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _spawn_workers(count: int, arguments: tuple, log: Log | None) -> None:
    """Run `count` workers in processes; their lines are logged here, one printer for all."""
    context = multiprocessing.get_context("spawn")  # fork after torch's thread pools can hang
    lines = context.Queue()
    processes = [
        context.Process(target=work, args=arguments, kwargs={"index": index, "lines": lines})
        for index in range(count)
    ]
    for process in processes:
        process.start()
    while any(process.is_alive() for process in processes) or not lines.empty():
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if log is not None:
            log(line)
    for process in processes:
        process.join()


# ----------------------------------------------------------------------------- a worker


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
    worker = f"{socket.gethostname()}:{os.getpid()}:{index}"
    store = StudyStore(folder)
    runner = Worker(
        Path(folder),
        store,
        worker,
        lease_seconds,
        log or (lambda line: None),
        train_images=train_images,
        validation=validation,
    )
    try:
        while True:
            if batched_seeds:
                claimed = store.claim_point(worker, lease_seconds)
                if claimed:
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
    finally:
        store.close()


class Worker:
    """What one worker process keeps between runs: the store, the mapped data, its identity.

    `train_images` and `validation` are the study's (none: all images, scored on the test split).
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
    ) -> None:
        self.folder, self.store = folder, store
        self.name, self.lease, self.log = name, lease, log
        self.train_images, self.validation = train_images, validation
        self._data: dict[str, DataSplits] = {}
        self.environment = environment()

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
        started = time.perf_counter()
        config = TrainConfig.from_dict(record.config)
        resume = config.run_dir if (config.run_dir / "last.pt").is_file() else None
        hook = StoreHook(self.store, record.id, self.name, self.lease)
        history, error = [], None
        try:
            result = train(
                config,
                data=self.data_for(config, record.point),
                progress=False,
                hooks=[hook],
                resume=resume,
                force=resume is None,  # a folder left by a run killed before its first epoch
                curves=False,
            )
            history = result.history
            status = "diverged" if result.status == "diverged" else "done"
        except LeaseLost:
            self.log(f"{record.point} seed {record.seed}: taken over by another runner")
            return
        except KeyboardInterrupt:
            self.store.release(record.id, self.name)  # the next `study run` resumes it at once
            raise
        except Exception as failure:  # noqa: BLE001 - a failing run is recorded, the study goes on
            status, error = "failed", f"{type(failure).__name__}: {failure}"
        self.finish(record, status, history, time.perf_counter() - started, error)

    def finish(
        self, record: RunRecord, status: str, history: list[dict], seconds: float, error: str | None
    ) -> None:
        """Record a finished run (its epochs again, in case the last one was not yet stored)."""
        final = final_metrics(history)
        try:
            self.store.finish(
                record.id,
                self.name,
                status,
                wall_seconds=seconds,
                final=final,
                error=error,
                environment=self.environment,
                history=history,
            )
        except LeaseLost:
            self.log(f"{record.point} seed {record.seed}: taken over by another runner")
            return
        shown = error or " ".join(
            f"{k} {v:.4f}" for k, v in (final or {}).items() if k in FINAL_KEYS
        )
        self.log(f"{record.point} seed {record.seed}: {status} in {seconds:.1f} s  {shown}")


class StoreHook(TrainHook):
    """Records each epoch's row into the store and keeps the run's lease alive."""

    def __init__(self, store: StudyStore, run_id: int, worker: str, lease: float) -> None:
        self.store, self.run_id, self.worker, self.lease = store, run_id, worker, lease
        self.renewed = time.monotonic()

    def after_step(self, trainer, loss, logits) -> None:
        if time.monotonic() - self.renewed > self.lease / 4:
            self.store.renew(self.run_id, self.worker, self.lease)
            self.renewed = time.monotonic()

    def after_epoch(self, trainer, row: dict) -> None:
        self.store.add_epoch(self.run_id, self.worker, row, self.lease)
        self.renewed = time.monotonic()


def final_metrics(history: list[dict]) -> dict | None:
    """The last epoch's losses and accuracies (NaN where a diverged epoch has none).

    `test_top5` is kept too where the epoch has it (more than 5 classes).
    """
    if not history:
        return None
    last = history[-1]
    final = {key: float(last.get(key, math.nan)) for key in FINAL_KEYS}
    if last.get("test_top5") is not None:
        final["test_top5"] = float(last["test_top5"])
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
