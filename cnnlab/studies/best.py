"""`cnnlab study best`: the combination of the best values, against the base.

The classic "tuned against default" table. The best values are the report's
(`StudyResults.best`): per factor, the value of highest mean accuracy among those significantly
better than the base (Welch's 95% interval of the difference above 0); in a grid, the best such
cell. They are combined into one config, trained with the study's seeds in the same folder,
and reported side by side with the base. When no value beats the base there is nothing to
combine: `run_best` raises `NothingBeatsTheBase`, which `study best` prints as its answer
(exit code 0: an outcome, not a mistake). A combination that is already a point of the study (one
factor changed, or any point of a grid) reuses its finished runs.

A study with `validation` chose its best values on the validation holdout, so the choice says
nothing about the test split yet: the base and the combination are trained again as final
points (`final:base`, `final:<combination>`) on the full training split, scored on the test
split, with fresh seeds (as many as the study's, past its largest: seeds [0, 1] -> [2, 3]).
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.errors import StudyError
from cnnlab.reporting import Table
from cnnlab.studies.report import tuned_table, write_report
from cnnlab.studies.results import load_results
from cnnlab.studies.runner import LEASE_SECONDS, Log, check_against_data, run_configs
from cnnlab.studies.spec import Point, Run, StudySpec, fresh_seeds
from cnnlab.studies.store import BEST_POINT_KEY, StudyStore


class NothingBeatsTheBase(StudyError):
    """No value is significantly better than the base: there is no combination to train."""


def run_best(
    folder: str | Path,
    *,
    workers: int = 1,
    threads: int | None = None,
    lease_seconds: float = LEASE_SECONDS,
    log: Log | None = print,
) -> Table:
    """Train the best combination (see the module doc); the side-by-side table with the base."""
    folder = Path(folder)
    results = load_results(folder)
    missing = sorted(f for f, rows in results.factors.items() if not any(r.done for r in rows))
    if missing:
        shown = ", ".join(missing)
        raise StudyError(f"no finished runs for factor {shown}; run the study to the end first")
    changes = results.best_changes()
    if not changes:
        few = " (with one seed no difference can be shown: use 2 or more)"
        raise NothingBeatsTheBase(
            "no value beats the base: no difference is significant at 95% (Welch's interval)"
            + (few if len(results.spec["seeds"]) < 2 else "")
        )
    spec = StudySpec.from_dict(results.spec)
    point = spec.point(changes)
    runs = [Run(point, seed) for seed in spec.seeds]
    if spec.validation is not None:
        finals = dict.fromkeys(Point(p.changes, final=True) for p in (spec.point({}), point))
        runs = [Run(final, seed) for final in finals for seed in fresh_seeds(spec.seeds)]
    configs = {
        run: spec.config_for(run.point, run.seed, folder / "runs" / run.folder) for run in runs
    }
    check_against_data(folder, spec, configs, None)
    store = StudyStore(folder)
    try:
        store.set_meta({BEST_POINT_KEY: point.name})
        run_configs(
            store,
            configs,
            workers=workers,
            threads=threads,
            lease_seconds=lease_seconds,
            batched_seeds=False,
            train_images=spec.train_images,
            validation=spec.validation,
            log=log,
        )
    finally:
        store.close()
    write_report(folder)
    return tuned_table(load_results(folder), point.name)
