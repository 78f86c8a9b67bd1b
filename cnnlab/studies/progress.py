"""The console side of a study: one bar of finished runs against all runs, read from the store.

The bar is drawn on a terminal only, by a thread of the process that started the study, which
reads the store's counts and its estimate of the time left every second (its own connection: any number of worker processes may
be writing). Lines the workers log are printed above it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from cnnlab.studies.store import FINISHED, StudyStore

POLL_SECONDS = 1.0


def clock(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


@contextmanager
def runs_progress(folder: Path, enabled: bool, console: Console | None = None) -> Iterator[None]:
    """Show the study in `folder` as a bar of finished runs while the block runs."""
    console = console or Console()
    if not (enabled and console.is_terminal):
        yield
        return
    bar = Progress(
        TextColumn("[bold]runs"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[running]} running"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]} left"),
        console=console,
    )
    task = bar.add_task("runs", total=None, running=0, left="-")
    stop = threading.Event()

    def poll() -> None:
        store = StudyStore(folder)
        try:
            while True:
                counts = store.counts()
                finished = sum(counts[status] for status in FINISHED)
                total = sum(counts.values())
                left = store.seconds_left()
                bar.update(
                    task,
                    total=total,
                    completed=finished,
                    running=counts["running"],
                    left="-" if left is None else clock(left),
                )
                if stop.wait(POLL_SECONDS):
                    return
        finally:
            store.close()

    thread = threading.Thread(target=poll, name="study-progress", daemon=True)
    with bar:
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
