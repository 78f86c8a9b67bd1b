"""Training every model of a comparison, seed by seed, as the runs of a study store.

A comparison folder is a study folder: `study.db` holds one run per (model, seed), its point
named by the model (`model=resnet18`) and its config the model's recipe (`recipes`), and the
studies' runner trains the pending runs in `workers` processes (`run_configs`). The dataset is
decoded once into the folder's memory-mapped copy (`studies.shared_data`), split with seed 0,
so every worker maps the same images and every model is scored on them. Every run gets the same
epoch count or the same wall-clock budget: on a laptop, the same budget is the fair comparison.

Running the comparison again skips finished runs and resumes killed ones like a study; more
models or seeds join the folder's runs, other settings (data, epochs, ...) are refused. The
records for the report are read back from the store alone.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.compare.recipes import recipe
from cnnlab.engine.budget import parse_duration
from cnnlab.engine.config import TrainConfig
from cnnlab.errors import InputSizeError, OptionError, StudyError
from cnnlab.fileio import writable_directory
from cnnlab.models import model_info
from cnnlab.studies.runner import LEASE_SECONDS, RayOptions, run_configs
from cnnlab.studies.shared_data import open_data, prepare_data
from cnnlab.studies.spec import Point, Run
from cnnlab.studies.store import (
    COMPARISON_KEY,
    FINISHED,
    STORE_NAME,
    RunRecord,
    StudyStore,
    open_existing,
)
from cnnlab.summary import ModelSummary, summarize

DEFAULT_EPOCHS = 10
META_KEY = COMPARISON_KEY  # the settings every run shares, and the data's image shape and classes


@dataclass
class CompareSpec:
    """What to compare: models, data, and the same epochs or time budget for each run."""

    models: list[str]
    data: str
    epochs: int | None = None
    time_budget: str | None = None
    seeds: int = 1
    out: str = "compare"
    image_size: int | None = None
    device: str = "auto"
    base: dict = field(default_factory=dict)  # other TrainConfig values shared by every run

    def __post_init__(self) -> None:
        if not self.models:
            raise OptionError("give at least one model, e.g. --models resnet18,vgg11_bn")
        if len(set(self.models)) != len(self.models):
            raise OptionError(f"a model is named twice in {','.join(self.models)}")
        for name in self.models:
            model_info(name)
        if self.epochs is not None and self.time_budget is not None:
            raise OptionError("give --epochs or --time-budget, not both")
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        elif self.epochs is None:
            self.epochs = DEFAULT_EPOCHS
        if self.seeds < 1:
            raise OptionError(f"--seeds must be at least 1, got {self.seeds}")

    def base_config(self) -> TrainConfig:
        values = {"data": self.data, "image_size": self.image_size, "device": self.device}
        if self.epochs is not None:
            values["epochs"] = self.epochs
        return TrainConfig.from_dict({**self.base, **values, "time_budget": self.time_budget})


def run_compare(
    spec: CompareSpec,
    *,
    workers: int = 1,
    threads: int | None = None,
    ray: RayOptions | None = None,
    progress: bool = True,
    on_message: Callable[[str], None] = print,
) -> list[dict]:
    """Train every pending (model, seed) run in `workers` processes; one record per run.

    `threads` per worker: see `studies.runner.threads_per_worker`; `ray` runs them as Ray tasks
    instead (`studies.ray_runner`; data and run folders in `ray.storage`, default the folder);
    `progress` prints a line per finished run. Models that cannot take the images are skipped, with the reason.
    """
    if workers < 1:
        raise OptionError(f"--workers must be at least 1, got {workers}")
    folder = writable_directory(spec.out, "choose another --out folder")
    if (folder / "results.jsonl").is_file():
        on_message(f"ignoring {folder / 'results.jsonl'} (an older comparison's format)")
    storage = ray.storage if ray is not None and ray.storage is not None else folder
    base = spec.base_config()
    data = open_data(prepare_data(storage, base, None))
    shape, classes = data.image_shape, len(data.classes)
    store = StudyStore(folder)
    try:
        _record_settings(store, base, shape, classes)
        configs = {}
        for name in spec.models:
            try:
                config = recipe(name, shape, classes, len(data.train), base)
            except InputSizeError as error:
                on_message(f"skipping {name}: {error}")
                continue
            for seed in range(spec.seeds):
                run = Run(Point((("model", name),)), seed)
                configs[run] = config.replace(seed=seed, out=str(storage / "runs" / run.folder))
        run_configs(
            store,
            configs,
            workers=workers,
            threads=threads,
            lease_seconds=LEASE_SECONDS,
            batched_seeds=False,
            train_images=None,
            ray=ray,
            log=on_message if progress else None,
        )
        return compare_records(store, list(configs))
    finally:
        store.close()


def _record_settings(
    store: StudyStore, base: TrainConfig, shape: tuple[int, int, int], classes: int
) -> None:
    """Keep the shared settings in a new folder; refuse a study or other settings."""
    if store.get_meta("spec") is not None:
        raise StudyError(f"{store.path.parent} holds a study, not a comparison; choose a new --out")
    settings = {"base": base.to_dict(), "image_shape": list(shape), "classes": classes}
    old = store.get_meta(META_KEY)
    if old is None:
        store.set_meta({META_KEY: settings})
    elif old != settings:
        before, after = old["base"], settings["base"]
        changes = [
            f"{key} {before.get(key)!r} -> {after.get(key)!r}"
            for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)
        ]
        raise StudyError(
            f"{store.path.parent} holds a comparison with other settings "
            f"({'; '.join(changes) or 'other images'}); choose a new --out folder"
        )


def compare_records(store: StudyStore, runs: list[Run]) -> list[dict]:
    """The finished `runs` (in their order) as the report's records, read from the store."""
    settings = store.get_meta(META_KEY)
    found = {(record.point, record.seed): record for record in store.runs()}
    records = []
    for run in runs:
        record = found.get((run.point.name, run.seed))
        if record is not None and record.status in FINISHED:
            records.append(_record(store, record, settings))
    return records


def is_comparison(folder: str | Path) -> bool:
    """Whether `folder` holds a comparison's store."""
    if not (Path(folder) / STORE_NAME).is_file():
        return False
    store = StudyStore(folder)
    try:
        return store.get_meta(META_KEY) is not None
    finally:
        store.close()


def stored_records(folder: str | Path) -> tuple[list[dict], dict]:
    """Every finished run of comparison `folder` as a report record, and the shared settings."""
    store = open_existing(folder, comparison=True)
    try:
        settings = store.get_meta(META_KEY)
        records = [
            _record(store, record, settings) for record in store.runs() if record.status in FINISHED
        ]
    finally:
        store.close()
    return records, settings


def _record(store: StudyStore, record: RunRecord, settings: dict) -> dict:
    """One run: status, parameters and MACs, training time, mean images/s, final test errors.

    The time is the sum of the epochs' seconds (training and evaluation): unlike the store's
    wall time, which counts the last attempt only, it keeps the epochs a killed attempt finished.
    The errors are those of a `done` run; a diverged or failed run has none.
    """
    shape, classes = tuple(settings["image_shape"]), settings["classes"]
    config, final, epochs = record.config, record.final or {}, store.epochs(record.id)
    cost = _cost(config["model"], shape, classes, json.dumps(config["model_options"]))
    done = record.status == "done"
    return {
        "model": config["model"],
        "seed": record.seed,
        "model_options": config["model_options"],
        "status": record.status,
        "error": record.error,
        "epochs": len(epochs),
        "params": cost.params,
        "macs": cost.macs,
        "seconds": math.fsum(row["seconds"] for row in epochs) if epochs else None,
        "images_per_sec": (
            statistics.fmean(row["images_per_sec"] for row in epochs) if epochs else None
        ),
        "top1_error": _error(final.get("test_acc")) if done else None,
        "top5_error": _error(final.get("test_top5")) if done and classes > 5 else None,
        "classes": classes,
        "data": config["data"],
        "image_shape": list(shape),
    }


@functools.cache
def _cost(name: str, shape: tuple[int, int, int], classes: int, options: str) -> ModelSummary:
    """The model's summary for these images (cached: every seed has the same)."""
    return summarize(name, shape, num_classes=classes, **json.loads(options))


def _error(accuracy: float | None) -> float | None:
    return None if accuracy is None or math.isnan(accuracy) else 1 - accuracy
