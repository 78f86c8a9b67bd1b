"""The study's console: a bar of finished runs on a terminal, and one printer for every worker."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from study_helpers import DATA, tiny_spec

from cnnlab.studies import StudySpec, run_study
from cnnlab.studies.progress import clock, runs_progress


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    text = io.StringIO()
    return Console(file=text, force_terminal=terminal, width=120), text


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    run_study(StudySpec.from_dict(tiny_spec()), folder, data=DATA, threads=1, log=None)
    return folder


def test_the_bar_counts_the_finished_runs_of_the_store(finished_study: Path) -> None:
    console, text = _console(terminal=True)
    with runs_progress(finished_study, enabled=True, console=console):
        pass
    shown = text.getvalue()
    assert "runs" in shown and "6/6" in shown and "0 running" in shown


@pytest.mark.parametrize(("terminal", "enabled"), [(False, True), (True, False)])
def test_no_bar_off_a_terminal_or_when_quiet(
    finished_study: Path, terminal: bool, enabled: bool
) -> None:
    console, text = _console(terminal)
    with runs_progress(finished_study, enabled=enabled, console=console):
        pass
    assert text.getvalue() == ""


def test_clock_reads_minutes_and_hours() -> None:
    assert clock(59.6) == "1:00"
    assert clock(3 * 3600 + 62) == "3:01:02"


@pytest.mark.slow
def test_the_lines_of_worker_processes_reach_the_callers_log(tmp_path: Path) -> None:
    lines: list[str] = []
    spec = StudySpec.from_dict(tiny_spec(seeds=1))
    outcome = run_study(spec, tmp_path, data=DATA, threads=1, workers=2, log=lines.append)
    assert outcome.counts["done"] == 3
    finished = sorted(line.split(":")[0] for line in lines if ": done in " in line)
    assert finished == ["base seed 0", "lr=0.05 seed 0", "lr=0.2 seed 0"]
