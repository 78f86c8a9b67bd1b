"""Training every model of a comparison, seed by seed, into a results store it can resume from.

The data are loaded once and shared by every run, with one train/test split (seed 0) so that
every model is scored on the same images. Each run gets the model's recipe (`recipes`) and
either the same epoch count or the same wall-clock budget: on a laptop, the same budget is the
fair comparison. Finished runs are kept in `OUT/results.jsonl` (one record per model and seed),
so an interrupted comparison continues where it stopped.

`ResultStore` is deliberately small (`get`, `add`, `records`): the comparison needs no more,
and the studies' SQLite store can take its place once it has landed.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.compare.recipes import recipe
from cnnlab.data.datasets import load_dataset
from cnnlab.engine.budget import parse_duration
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.trainer import train
from cnnlab.errors import InputSizeError, OptionError
from cnnlab.fileio import atomic_write_text
from cnnlab.models import model_info
from cnnlab.summary import summarize

DEFAULT_EPOCHS = 10


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


class ResultStore:
    """Records of finished runs, one per (model, seed), in a JSON-lines file written atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._records: list[dict] = []
        if self.path.is_file():
            lines = self.path.read_text().splitlines()
            self._records = [json.loads(line) for line in lines if line.strip()]

    def get(self, model: str, seed: int) -> dict | None:
        return next((r for r in self._records if (r["model"], r["seed"]) == (model, seed)), None)

    def add(self, record: dict) -> None:
        self._records = [
            r for r in self._records if (r["model"], r["seed"]) != (record["model"], record["seed"])
        ]
        self._records.append(record)
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self._records)
        atomic_write_text(self.path, text)

    def records(self) -> list[dict]:
        return list(self._records)


def run_compare(
    spec: CompareSpec,
    *,
    progress: bool = True,
    on_message: Callable[[str], None] = print,
) -> list[dict]:
    """Train every model for every seed (skipping runs already in the store); all records."""
    out = Path(spec.out)
    base = spec.base_config()
    data = load_dataset(spec.data, image_size=spec.image_size, val_fraction=base.val_fraction)
    shape, num_classes = data.image_shape, len(data.classes)
    store = ResultStore(out / "results.jsonl")
    for name in spec.models:
        try:
            config = recipe(name, shape, num_classes, len(data.train), base)
        except InputSizeError as error:
            on_message(f"skipping {name}: {error}")
            continue
        cost = summarize(name, shape, num_classes=num_classes, **config.model_options)
        for seed in range(spec.seeds):
            if store.get(name, seed) is not None:
                continue
            run = config.replace(seed=seed, out=str(out / "runs" / f"{name}-seed{seed}"))
            on_message(f"training {name} (seed {seed}) ...")
            started = time.perf_counter()
            result = train(run, data=data, progress=progress, force=True)  # cut short before: start over
            seconds = time.perf_counter() - started
            final = result.final
            store.add(
                {
                    "model": name,
                    "seed": seed,
                    "model_options": run.model_options,
                    "status": result.status,
                    "epochs": len(result.history),
                    "params": cost.params,
                    "macs": cost.macs,
                    "seconds": seconds,
                    "images_per_sec": statistics.fmean(r["images_per_sec"] for r in result.history),
                    "top1_error": 1 - final["test_acc"] if "test_acc" in final else None,
                    "top5_error": (
                        1 - final["test_top5"] if num_classes > 5 and "test_top5" in final else None
                    ),
                    "classes": num_classes,
                    "data": spec.data,
                    "image_shape": list(shape),
                }
            )
    return [r for r in store.records() if r["model"] in spec.models and r["seed"] < spec.seeds]
