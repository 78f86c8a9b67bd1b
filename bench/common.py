"""What the benchmark scripts share: locating the references, timed child processes, reports.

Both sides of every comparison run as child processes of the benchmark, one after the other,
so each is timed the same way: from the moment it is started (interpreter start-up, imports and
data loading included) to the moment each of its JSON lines arrives. The cnnlab side is this
file run as a script (`python bench/common.py train CONFIG.yaml`): it loads the data (timed on
its own), trains with `cnnlab.train`, and prints one JSON line per event. With `--holdout FRACTION`
(`python bench/common.py train CONFIG.yaml --holdout 0.1667`) it trains on the rest of the
training split and evaluates on a stratified FRACTION of it instead of the test split: the
validation set that recipes are chosen on, so the test set is only looked at to report them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from cnnlab.data.datasets import load_dataset
from cnnlab.data.splits import validation_splits
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.trainer import train

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT / ".." / "shared"
console = Console(highlight=False, soft_wrap=True)  # PASS lines stay one line each


class Skipped(Exception):
    """Something the benchmark needs is absent (a reference script, a dataset, a GPU)."""


def shared_path(relative: str, what: str) -> Path:
    """`../shared/<relative>` beside the repository, or `Skipped` saying what is missing."""
    path = SHARED / relative
    if not path.exists():
        raise Skipped(f"{what} not found at {path.resolve()}; nothing to compare against")
    return path


def argument_parser(description: str) -> argparse.ArgumentParser:
    """A benchmark's argument parser, with the `--strict` flag every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any target FAILs"
    )
    return parser


def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's `main`; a `Skipped` one says SKIPPED and why in its last line (status 0).

    With `--strict` on the command line, a target that FAILed (as `print_summary` printed it)
    makes the exit status 1; a target not measured does not.
    """
    try:
        main()
    except Skipped as reason:
        console.print(f"[yellow]SKIPPED:[/] {reason}")
    if "--strict" in sys.argv[1:] and _FAILED:
        console.print(f"[red]--strict:[/] {len(_FAILED)} target(s) failed: {', '.join(_FAILED)}")
        sys.exit(1)


def load_average() -> float:
    """The 1-minute load average, rounded."""
    return round(os.getloadavg()[0], 2)


def wait_for_quiet_machine(max_load: float, timeout: float = 600.0) -> float:
    """Wait until the 1-minute load average is below `max_load` (or `timeout` s); return it.

    The cores may be shared: a busy neighbour slows whichever side happens to run beside it.
    """
    deadline = time.monotonic() + timeout
    load = os.getloadavg()[0]
    while load >= max_load and time.monotonic() < deadline:
        console.print(f"load average {load:.2f} >= {max_load}: waiting for a quieter machine")
        time.sleep(15)
        load = os.getloadavg()[0]
    return load


# ---------------------------------------------------------------------------- child processes


@dataclass
class TimedRun:
    """The JSON lines a child printed, each with its arrival time since the child started."""

    rows: list[dict] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    stopped_early: bool = False

    def epochs(self) -> list[tuple[float, dict]]:
        """`(arrival seconds, row)` for each per-epoch row (those with an `epoch` key)."""
        pairs = zip(self.arrivals, self.rows, strict=True)
        return [(seconds, row) for seconds, row in pairs if "epoch" in row]

    def load_seconds(self) -> float:
        """cnnlab's `load_dataset` time, from the child's `loaded` line."""
        return next(row["seconds"] for row in self.rows if row.get("event") == "loaded")


def run_timed(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stop: Callable[[dict], bool] | None = None,
) -> TimedRun:
    """Run `command`, time-stamping each JSON line of its stdout on arrival.

    Lines that are not JSON objects are ignored. `stop(row)` returning True ends the child at
    once (time to accuracy needs no more epochs). A failing child raises `RuntimeError` with
    the end of its stderr.
    """
    result = TimedRun()
    with tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        child = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=errors, text=True, env=env
        )
        assert child.stdout is not None
        for line in child.stdout:
            arrived = time.perf_counter() - started
            row = _json_object(line)
            if row is None:
                continue
            result.rows.append(row)
            result.arrivals.append(arrived)
            if stop is not None and stop(row):
                child.terminate()
                result.stopped_early = True
                break
        child.wait()
        result.wall_seconds = time.perf_counter() - started
        if child.returncode and not result.stopped_early:
            errors.seek(0)
            tail = errors.read()[-2000:]
            raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}:\n{tail}")
    return result


def _json_object(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def reference_command(script: str, *args: object) -> list[str]:
    """A reference script of `../shared/bench` with its arguments, run by this interpreter."""
    path = shared_path(f"bench/{script}", f"reference script {script}")
    return [sys.executable, str(path), *map(str, args)]


def cnnlab_command(
    config: TrainConfig, workdir: Path, name: str, holdout: float | None = None
) -> list[str]:
    """The child command that trains `config` (written to `workdir/<name>.yaml`).

    `holdout`: evaluate on that stratified fraction of the training split (see the module doc).
    """
    path = workdir / f"{name}.yaml"
    config.to_yaml(path)
    command = [sys.executable, str(Path(__file__).resolve()), "train", str(path)]
    return command + (["--holdout", str(holdout)] if holdout is not None else [])


def child_env(**values: str) -> dict[str, str]:
    """This process's environment with `values` set (e.g. a fresh `CNNLAB_CACHE`)."""
    return {**os.environ, **values}


def _train_child(config_path: str, holdout: float | None) -> None:
    """Child mode: load the data (timed), then train, printing one JSON line per epoch."""
    config = TrainConfig.from_yaml(config_path)
    started = time.perf_counter()
    data = load_dataset(
        config.data,
        image_size=config.image_size,
        channels=config.channels,
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    if holdout is not None:
        data = validation_splits(data, holdout, config.seed)
    seconds = time.perf_counter() - started
    _emit(
        {
            "event": "loaded",
            "seconds": seconds,
            "train_images": len(data.train),
            "test_images": len(data.test),
        }
    )
    train(
        config, data=data, progress=False, on_epoch_end=lambda row: _emit({"event": "epoch", **row})
    )


def _emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


# ---------------------------------------------------------------------------- reports


@dataclass
class Target:
    """One goal of a benchmark: the measured value, how it is judged, and whether it passed.

    A target that was not run has `measured` and `passed` None and says why in `note`.
    """

    name: str
    measured: float | None
    goal: str
    passed: bool | None
    unit: str = "x"
    note: str = ""

    @classmethod
    def at_least(
        cls, name: str, measured: float, minimum: float, unit: str = "x", note: str = ""
    ) -> Target:
        return cls(name, measured, f">= {minimum:g}{unit}", measured >= minimum, unit, note)

    @classmethod
    def at_most(cls, name: str, measured: float, maximum: float, unit: str) -> Target:
        return cls(name, measured, f"<= {maximum:g}{unit}", measured <= maximum, unit)

    @classmethod
    def within(
        cls, name: str, measured: float, centre: float, tolerance: float, unit: str, note: str = ""
    ) -> Target:
        goal = f"{centre:g} ± {tolerance:g}{unit}"
        return cls(name, measured, goal, abs(measured - centre) <= tolerance, unit, note)

    @classmethod
    def not_measured(cls, name: str, goal: str, why: str) -> Target:
        return cls(name, None, goal, None, note=why)

    def line(self) -> str:
        if self.measured is None:
            return f"[yellow]NOT MEASURED[/]  {self.name} (target {self.goal}): {self.note}"
        verdict = "[green]PASS[/]" if self.passed else "[red]FAIL[/]"
        note = f"; {self.note}" if self.note else ""
        return f"{verdict}  {self.name}: {self.measured:.3g}{self.unit} (target {self.goal}){note}"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "measured": self.measured,
            "goal": self.goal,
            "pass": self.passed,
            "note": self.note,
        }


def provenance(seeds: dict[str, object], device: str = "cpu") -> dict:
    """Where and when the numbers were measured, and with which seeds."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_average(),
        "device": device,
        "seeds": seeds,
    }


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A rich table; floats get 4 significant digits."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column == columns[0] else "right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


_FAILED: list[str] = []  # the targets `print_summary` printed as FAIL, for `--strict`


def print_summary(benchmark: str, targets: Sequence[Target], results: dict, meta: dict) -> None:
    """Each target's PASS/FAIL line, then the JSON summary as the very last line."""
    for target in targets:
        console.print(target.line())
        if target.passed is False:
            _FAILED.append(target.name)
    summary = {
        "benchmark": benchmark,
        "targets": [target.to_dict() for target in targets],
        "results": results,
        "provenance": meta,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    child = argparse.ArgumentParser(description="the benchmarks' child mode: train one config")
    child.add_argument("mode", choices=["train"])
    child.add_argument("config", help="a TrainConfig YAML file")
    child.add_argument("--holdout", type=float, help="evaluate on this fraction of train")
    arguments = child.parse_args()
    _train_child(arguments.config, arguments.holdout)
