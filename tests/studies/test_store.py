"""The SQLite store: idempotent enqueue, claims and leases, corrupt and locked files."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.errors import StudyError
from cnnlab.studies.store import (
    MAX_ATTEMPTS,
    LeaseLost,
    StudyStore,
    open_existing,
    worker_name,
)


def _runs(count: int) -> list[dict]:
    return [
        {
            "point": "base",
            "seed": seed,
            "folder": f"base-s{seed}",
            "changes": {},
            "config": {"seed": seed},
        }
        for seed in range(count)
    ]


def test_enqueue_is_idempotent_and_claims_take_each_run_once(tmp_path: Path) -> None:
    store = StudyStore(tmp_path)
    assert store.enqueue(_runs(2)) == 2
    assert store.enqueue(_runs(3)) == 1  # only seed 2 is new
    claimed = [store.claim("a", 60), store.claim("b", 60), store.claim("a", 60)]
    assert sorted(record.seed for record in claimed) == [0, 1, 2]
    assert store.claim("b", 60) is None
    assert store.counts()["running"] == 3 and store.live_workers() == 2


def test_an_expired_lease_goes_back_to_pending_and_the_old_holder_loses_it(tmp_path: Path) -> None:
    store = StudyStore(tmp_path)
    store.enqueue(_runs(1))
    first = store.claim("dead", 0.05)
    time.sleep(0.1)
    assert store.counts()["pending"] == 1
    second = store.claim("alive", 60)
    assert second.id == first.id and second.attempts == 2
    with pytest.raises(LeaseLost):
        store.renew(first.id, "dead", 60)
    with pytest.raises(LeaseLost):
        store.finish(first.id, "dead", "done", wall_seconds=1.0)
    store.add_epoch(second.id, "alive", {"epoch": 1, "test_acc": 0.5}, 60)
    store.finish(
        second.id,
        "alive",
        "done",
        wall_seconds=2.0,
        final={"test_acc": 0.5},
        history=[{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.6}],
    )
    record = store.run(second.id)
    assert record.status == "done" and record.final == {"test_acc": 0.5}
    assert [row["epoch"] for row in store.epochs(second.id)] == [1, 2]
    assert store.seconds_left() == 0


def _dead_pid() -> int:
    """The process id of a process that has exited and been reaped."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return int(gone.stdout)


def test_a_dead_local_workers_lease_ends_at_once_a_live_or_remote_one_does_not(
    tmp_path: Path,
) -> None:
    dead_pid = _dead_pid()
    host = socket.gethostname()
    store = StudyStore(tmp_path)
    store.enqueue(_runs(3))
    live = store.claim(worker_name(0), 600)
    remote = store.claim(f"another-host-{host}:{dead_pid}:0", 600)
    dead = store.claim(f"{host}:{dead_pid}:0", 600)
    assert worker_name(0) == f"{host}:{os.getpid()}:0"
    taken = store.claim("next", 600)
    assert taken.id == dead.id and taken.attempts == 2
    assert store.claim("next", 600) is None  # the live and the remote lease still hold
    assert {store.run(live.id).status, store.run(remote.id).status} == {"running"}


def test_status_shows_a_run_held_by_a_dead_local_runner_as_stale(tmp_path: Path) -> None:
    host = socket.gethostname()
    store = StudyStore(tmp_path)
    store.set_meta({"spec": {}})
    store.enqueue(_runs(4))
    store.claim(f"{host}:{os.getpid()}:0", 600)  # alive
    store.claim(f"another-{host}:1:0", 600)  # another host's: only its lease counts
    store.claim(f"{host}:{_dead_pid()}:0", 600)  # killed with -9: its lease has not run out
    expected = {"pending": 1, "running": 2, "stale": 1, "done": 0, "diverged": 0, "failed": 0}
    assert store.counts(stale=True) == expected
    assert store.counts()["pending"] == 2  # what the workers see: the next claim takes it
    result = CliRunner().invoke(app, ["study", "status", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    (header,) = [line.strip("┃").split("┃") for line in lines if line.count("┃") == 8]
    (counts,) = [line.strip("│").split("│") for line in lines if line.count("│") == 8]
    cells = {name.strip(): value.strip() for name, value in zip(header, counts, strict=True)}
    assert cells == {name: str(count) for name, count in expected.items()} | {"time left": "-"}
    assert f"stale 1 run(s) marked running by a runner that is gone ({host}:" in result.output
    assert f"`cnnlab study run ... --out {tmp_path}` resumes them" in result.output


def test_a_run_whose_runner_keeps_dying_fails_instead_of_looping(tmp_path: Path) -> None:
    store = StudyStore(tmp_path)
    store.enqueue(_runs(1))
    for _ in range(MAX_ATTEMPTS):
        assert store.claim("doomed", 0.01) is not None
        time.sleep(0.03)
    assert store.claim("next", 60) is None
    (record,) = store.runs()
    assert record.status == "failed" and "runner died 3 times" in record.error


def test_a_corrupt_store_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "study.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StudyError, match="not a readable SQLite database.*move it away"):
        StudyStore(tmp_path)


def test_a_locked_store_is_one_clear_line(tmp_path: Path) -> None:
    StudyStore(tmp_path).enqueue(_runs(1))
    holder = sqlite3.connect(tmp_path / "study.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store = StudyStore(tmp_path, busy_timeout=0.2)
        with pytest.raises(StudyError, match="is locked by another process"):
            store.claim("a", 60)
    finally:
        holder.execute("ROLLBACK")


def test_a_folder_without_a_study_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="is not a study folder"):
        open_existing(tmp_path)
