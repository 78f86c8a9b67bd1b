"""A study folder whose runs are written straight into its store with chosen accuracies.

The report reads the folder alone, so tests of its statistics set the numbers exactly instead
of training: the spec is recorded as `study run` records it, the synthetic data (4 classes) is
prepared as for a real study, and each listed run is claimed and finished through `StudyStore`.
"""

from __future__ import annotations

from pathlib import Path

from study_helpers import DATA, tiny_spec

from cnnlab.studies import StudySpec
from cnnlab.studies.shared_data import prepare_data
from cnnlab.studies.store import StudyStore


def synthetic_study(
    folder: Path, accuracies: dict[str, list[float]], spec_path: Path | None = None, **changes
) -> Path:
    """A finished study of `tiny_spec(**changes)` where point `name`'s seed i scored
    `accuracies[name][i]` (training loss 1 - accuracy, training accuracy = accuracy)."""
    values = tiny_spec(**changes)
    spec = StudySpec.from_dict(values, spec_path.parent if spec_path else None)
    prepare_data(folder, spec.base, None, DATA)
    store = StudyStore(folder)
    try:
        store.set_meta({"spec": spec.to_dict()})
        runs = [run for run in spec.runs() if run.point.name in accuracies]
        store.enqueue(
            [
                {
                    "point": run.point.name,
                    "seed": run.seed,
                    "folder": run.folder,
                    "changes": dict(run.point.changes),
                    "config": spec.config_for(run.point, run.seed).to_dict(),
                }
                for run in runs
                if run.seed < len(accuracies[run.point.name])
            ]
        )
        while (record := store.claim("test", 60.0)) is not None:
            accuracy = accuracies[record.point][record.seed]
            row = {"epoch": 1, "train_loss": 1 - accuracy, "train_acc": accuracy}
            split = "test" if spec.validation is None else "val"  # as the worker names them
            row |= {f"{split}_loss": 1 - accuracy, f"{split}_acc": accuracy, "status": "completed"}
            final = {key: row[key] for key in ("train_loss", "train_acc", f"{split}_acc")}
            store.finish(record.id, "test", "done", wall_seconds=1.0, final=final, history=[row])
    finally:
        store.close()
    return folder
