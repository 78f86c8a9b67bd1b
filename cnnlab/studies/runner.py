"""Running a study: `run_study(spec, out)` fills the store and trains every pending run.

The runs go to `workers` processes (spawned), each with `threads_per_worker` threads (`--threads`,
else `OMP_NUM_THREADS`, else the cores divided among the workers so they are not oversubscribed),
each claiming one run at a time from the store and training it with
`cnnlab.train` on the study's one memory-mapped copy of the data (`studies.worker`); a run that
fails is recorded with its error and the study goes on. Running the same spec again skips finished runs; a run left `running`
by a killed runner is taken up again once its lease runs out, resuming from its `last.pt`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.memory import DataSplits
from cnnlab.engine.config import TrainConfig
from cnnlab.errors import CnnlabError, OptionError, StudyError
from cnnlab.fileio import writable_directory
from cnnlab.models import create_model_for_input
from cnnlab.studies.progress import runs_progress
from cnnlab.studies.ray_runner import check_address, import_ray, run_on_ray
from cnnlab.studies.shared_data import data_key, open_data, prepare_data
from cnnlab.studies.spec import Run, StudySpec, holdout_for, spec_differences
from cnnlab.studies.store import StudyStore
from cnnlab.studies.worker import Log, work

LEASE_SECONDS = 120.0


@dataclass
class RayOptions:
    """`--ray`: where the cluster is (`local`, `auto` or `HOST:PORT`), the folder every node
    reads and writes the runs and data in (None: the study folder), GPUs per run."""

    address: str = "local"
    storage: Path | None = None
    gpus_per_run: float = 0.0

    def __post_init__(self) -> None:
        if self.gpus_per_run < 0:
            raise OptionError(f"--ray-gpus-per-run must be 0 or more, got {self.gpus_per_run:g}")
        check_address(self.address)
        import_ray()  # a missing extra is said before any work
        if self.storage is not None:
            self.storage = writable_directory(self.storage, "give a --storage every node can write")


def ray_options(
    address: str | None, storage: Path | None = None, gpus_per_run: float | None = None
) -> RayOptions | None:
    """The CLI's `--ray`, `--storage` and `--ray-gpus-per-run`; None without `--ray`."""
    if address is None:
        for name, value in (("--storage", storage), ("--ray-gpus-per-run", gpus_per_run)):
            if value is not None:
                raise OptionError(f"{name} goes with --ray (runs on a Ray cluster)")
        return None
    return RayOptions(address, storage, gpus_per_run or 0.0)


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
    ray: RayOptions | None = None,
    log: Log | None = print,
) -> StudyOutcome:
    """Run every pending run of `spec` (a `StudySpec` or a YAML path) in study folder `out`.

    `data` trains on splits already in memory instead of loading the spec's dataset (it must
    not vary with the factors). `threads` per worker: see `threads_per_worker` (with `ray`, the
    CPUs each Ray task asks for, default 1; its run folders and data go in `ray.storage`,
    default `out`). `batched_seeds` trains all seeds of a point as one ensemble
    where the network allows it (`cnnlab.studies.batched`). `log` receives one line per
    finished run (None: silent).
    """
    started = time.perf_counter()
    if not isinstance(spec, StudySpec):
        spec = StudySpec.from_yaml(spec)
    if workers < 1:
        raise OptionError(f"workers must be at least 1, got {workers}")
    folder = writable_directory(out, "choose another --out folder")
    storage = ray.storage if ray is not None and ray.storage is not None else folder
    configs = {
        run: spec.config_for(run.point, run.seed, storage / "runs" / run.folder)
        for run in spec.runs()
    }
    keys = {data_key(c, spec.train_images, spec.validation) for c in configs.values()}
    if data is not None and len(keys) > 1:
        raise OptionError("`data` was given but the factors change the dataset; give none")
    store = StudyStore(folder)
    try:
        _record_spec(store, spec, extend, write=False)  # another spec: refused before any work
        check_against_data(storage, spec, configs, data)
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
            ray=ray,
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
    ray: RayOptions | None = None,
) -> dict[str, int]:
    """Enqueue `configs` (those already present are kept) and work until none is pending.

    `train_images` keeps the first N training images (None: all of them); `validation` holds
    out that fraction of them and scores on it, except in final points (`holdout_for`). With
    `ray`, the runs are Ray tasks (`studies.ray_runner`) instead of local workers.
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
    if ray is not None:
        if batched_seeds:
            raise OptionError("--batched-seeds runs on local workers only; leave out --ray")
        with runs_progress(store.path.parent, enabled=log is not None):
            run_on_ray(
                store,
                ray.address,
                storage=ray.storage or store.path.parent,
                threads=threads or 1,
                gpus=ray.gpus_per_run,
                lease_seconds=lease_seconds,
                train_images=train_images,
                validation=validation,
                log=log or (lambda line: None),
            )
        return store.counts()
    threads = threads_per_worker(workers, threads)
    if log is not None:
        todo = counts["pending"] + counts["running"]
        log(f"{todo} runs to train: {workers} worker(s), {threads} thread(s) each")
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


def threads_per_worker(
    workers: int,
    threads: int | None = None,
    environ: Mapping[str, str] = os.environ,
    cores: int | None = None,
) -> int:
    """The threads each worker trains with: `threads` when given, else `OMP_NUM_THREADS` when
    set (the user's choice for every process), else the `cores` (default: those this process
    may use) divided among the `workers`, at least 1."""
    if threads is not None:
        if threads < 1:
            raise OptionError(f"--threads must be at least 1, got {threads}")
        return threads
    value = environ.get("OMP_NUM_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise OptionError(
                f"OMP_NUM_THREADS={value!r} is not a positive whole number; "
                "set it to one, unset it, or give --threads"
            )
        return int(value)
    return max(1, (cores or _cores()) // workers)


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
