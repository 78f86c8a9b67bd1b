"""The results store of a study: one SQLite file (`study.db`) in the study folder.

SQLite through the standard library, in WAL mode with a busy timeout, so several runner
processes share it. One row per (point, seed), enqueued idempotently. A runner claims a pending
run inside one write transaction and holds a lease on it, renewed by a heartbeat thread while it
holds the run (`studies.worker.LeaseHeartbeat`, as Optuna's RDB storage does); a run whose
lease ran out, or whose runner process on this host is gone, goes back to `pending` at the next
claim (to `failed` after `MAX_ATTEMPTS` tries). Statuses: `pending`,
`running`, `done`, `diverged`, `failed` (with its error). Every epoch's metrics row, the final
metrics, the wall time, the resolved config, package versions and hardware are kept, so the
report needs nothing but this file.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import StudyError

STORE_NAME = "study.db"
STATUSES = ("pending", "running", "done", "diverged", "failed")
FINISHED = ("done", "diverged", "failed")
BUSY_TIMEOUT_S = 30.0
BEST_POINT_KEY = "best_point"  # meta: the combination `cnnlab study best` trained
COMPARISON_KEY = "compare"  # meta: the settings every run of a `cnnlab compare` folder shares
MAX_ATTEMPTS = 3  # a run whose runner died this often is failed, not retried forever
_GAVE_UP = f"its runner died {MAX_ATTEMPTS} times while training it (killed, or out of memory?)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    point TEXT NOT NULL,
    seed INTEGER NOT NULL,
    folder TEXT NOT NULL,
    changes TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    worker TEXT,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL,
    wall_seconds REAL,
    final TEXT,
    error TEXT,
    environment TEXT,
    UNIQUE (point, seed)
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
"""


class LeaseLost(Exception):
    """Another runner took this run over (our lease had expired): stop working on it."""


@dataclass
class RunRecord:
    """One row of `runs`, decoded."""

    id: int
    point: str
    seed: int
    folder: str
    changes: dict[str, Any]
    config: dict[str, Any]
    status: str
    attempts: int
    wall_seconds: float | None
    final: dict[str, Any] | None
    error: str | None
    environment: dict[str, Any] | None


class StudyStore:
    """A connection to a study's `study.db`; every method is one short transaction."""

    def __init__(self, folder: str | Path, *, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(folder) / STORE_NAME
        self.busy_timeout = busy_timeout
        try:
            self.connection = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
            self.connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self.connection.execute("PRAGMA journal_mode = WAL")
            self.connection.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise self._explain(error) from None

    def close(self) -> None:
        self.connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (`BEGIN IMMEDIATE`), so claims never race."""
        try:
            self.connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise self._explain(error) from None
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        else:
            self.connection.execute("COMMIT")

    def _explain(self, error: sqlite3.Error) -> StudyError:
        text = str(error)
        if "locked" in text or "busy" in text:
            return StudyError(
                f"study store {self.path} is locked by another process (waited "
                f"{self.busy_timeout:g} s); wait for it to finish or stop it"
            )
        return StudyError(
            f"study store {self.path} is not a readable SQLite database ({text}); "
            "move it away and start the study again"
        )

    def _query(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        try:
            return self.connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise self._explain(error) from None

    # ----------------------------------------------------------------------------- metadata

    def get_meta(self, key: str) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def set_meta(self, values: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in values.items()],
            )

    # ----------------------------------------------------------------------------- the queue

    def enqueue(self, runs: list[dict[str, Any]]) -> int:
        """Add runs (`point`, `seed`, `folder`, `changes`, `config`) not yet present; the count added."""
        with self.transaction() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO runs (point, seed, folder, changes, config) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        r["point"],
                        r["seed"],
                        r["folder"],
                        json.dumps(r["changes"]),
                        json.dumps(r["config"]),
                    )
                    for r in runs
                ],
            )
            return db.total_changes - before

    def claim(self, worker: str, lease_seconds: float) -> RunRecord | None:
        """Take the next pending run (expired leases first go back to pending), or None."""
        claimed = self._claim(worker, lease_seconds, whole_point=False)
        return claimed[0] if claimed else None

    def claim_point(self, worker: str, lease_seconds: float) -> list[RunRecord]:
        """Take every pending seed of the next pending point at once (seed batching)."""
        return self._claim(worker, lease_seconds, whole_point=True)

    def _claim(self, worker: str, lease_seconds: float, *, whole_point: bool) -> list[RunRecord]:
        now = time.time()
        with self.transaction() as db:
            _expire_leases_of_dead_workers(db)
            db.execute(
                "UPDATE runs SET status = 'failed', worker = NULL, lease_until = NULL, error = ? "
                "WHERE status = 'running' AND lease_until < ? AND attempts >= ?",
                (_GAVE_UP, now, MAX_ATTEMPTS),
            )
            db.execute(
                "UPDATE runs SET status = 'pending', worker = NULL "
                "WHERE status = 'running' AND lease_until < ?",
                (now,),
            )
            row = db.execute(
                "SELECT id, point FROM runs WHERE status = 'pending' ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return []
            if whole_point:
                ids = [
                    found
                    for (found,) in db.execute(
                        "SELECT id FROM runs WHERE status = 'pending' AND point = ? ORDER BY id",
                        (row[1],),
                    )
                ]
            else:
                ids = [row[0]]
            db.executemany(
                "UPDATE runs SET status = 'running', worker = ?, lease_until = ?, "
                "attempts = attempts + 1, started = ? WHERE id = ?",
                [(worker, now + lease_seconds, now, run_id) for run_id in ids],
            )
        return [self.run(run_id) for run_id in ids]

    def renew(self, run_id: int, worker: str, lease_seconds: float) -> None:
        """Extend our lease on `run_id`; `LeaseLost` if another runner holds it now."""
        with self.transaction() as db:
            _extend_lease(db, run_id, worker, lease_seconds)

    def renew_held(self, worker: str, lease_seconds: float) -> int:
        """Extend the lease of every run `worker` holds (the heartbeat); how many it holds."""
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE runs SET lease_until = ? WHERE worker = ? AND status = 'running'",
                (time.time() + lease_seconds, worker),
            )
            return cursor.rowcount

    def add_epoch(
        self, run_id: int, worker: str, row: dict[str, Any], lease_seconds: float
    ) -> None:
        """Record one epoch's metrics row and renew the lease, in one transaction."""
        with self.transaction() as db:
            _extend_lease(db, run_id, worker, lease_seconds)
            db.execute(
                "INSERT OR REPLACE INTO epochs (run_id, epoch, metrics) VALUES (?, ?, ?)",
                (run_id, row["epoch"], json.dumps(row)),
            )

    def release(self, run_id: int, worker: str) -> None:
        """Give our run back to `pending` (the runner was interrupted)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status = 'pending', worker = NULL, lease_until = NULL "
                "WHERE id = ? AND worker = ? AND status = 'running'",
                (run_id, worker),
            )

    def finish(
        self,
        run_id: int,
        worker: str,
        status: str,
        *,
        wall_seconds: float,
        final: dict[str, Any] | None = None,
        error: str | None = None,
        environment: dict[str, Any] | None = None,
        history: list[dict[str, Any]] = (),
    ) -> None:
        """Mark our run `done`, `diverged` or `failed` with its epochs' rows.

        `LeaseLost` if the run is no longer ours.
        """
        if status not in FINISHED:
            raise ValueError(f"not a final status: {status}")
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE runs SET status = ?, finished = ?, wall_seconds = ?, final = ?, "
                "error = ?, environment = ?, lease_until = NULL "
                "WHERE id = ? AND worker = ? AND status = 'running'",
                (
                    status,
                    time.time(),
                    wall_seconds,
                    json.dumps(final),
                    error,
                    json.dumps(environment),
                    run_id,
                    worker,
                ),
            )
            if cursor.rowcount == 0:
                raise LeaseLost(run_id)
            db.executemany(
                "INSERT OR REPLACE INTO epochs (run_id, epoch, metrics) VALUES (?, ?, ?)",
                [(run_id, row["epoch"], json.dumps(row)) for row in history],
            )

    # ----------------------------------------------------------------------------- reading

    def run(self, run_id: int) -> RunRecord:
        return self.runs(where="id = ?", parameters=(run_id,))[0]

    def runs(self, where: str = "1", parameters: tuple = ()) -> list[RunRecord]:
        columns = (
            "id, point, seed, folder, changes, config, status, attempts, wall_seconds, final, "
            "error, environment"
        )
        rows = self._query(f"SELECT {columns} FROM runs WHERE {where} ORDER BY id", parameters)
        return [
            RunRecord(
                *row[:4],
                json.loads(row[4]),
                json.loads(row[5]),
                *row[6:9],
                json.loads(row[9]) if row[9] else None,
                row[10],
                json.loads(row[11]) if row[11] else None,
            )
            for row in rows
        ]

    def epochs(self, run_id: int) -> list[dict[str, Any]]:
        rows = self._query("SELECT metrics FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,))
        return [json.loads(row[0]) for row in rows]

    def counts(self, *, stale: bool = False) -> dict[str, int]:
        """How many runs are in each status.

        A `running` run whose runner is gone (lease run out, or its process on this host
        exited) counts as `pending`, since the next claim takes it; with `stale`, as `stale`.
        """
        counts = {status: 0 for status in STATUSES} | ({"stale": 0} if stale else {})
        now, gone = time.time(), {}
        rows = self._query("SELECT status, worker, lease_until FROM runs")
        for status, worker, lease_until in rows:
            if status == "running" and ((lease_until or 0) < now or _holder_gone(worker, gone)):
                status = "stale" if stale else "pending"
            counts[status] += 1
        return counts

    def stale_holders(self) -> list[str]:
        """The workers still named on `running` runs whose lease ran out or whose process on this
        host exited (a killed runner); the next `study run` takes their runs back."""
        now, gone = time.time(), {}
        rows = self._query(
            "SELECT DISTINCT worker, lease_until FROM runs WHERE status = 'running' ORDER BY worker"
        )
        found = [w for w, until in rows if (until or 0) < now or _holder_gone(w, gone)]
        return list(dict.fromkeys(found))

    def live_workers(self) -> int:
        """Runners holding an unexpired lease right now (on this host: whose process is alive)."""
        gone = {}
        rows = self._query(
            "SELECT DISTINCT worker FROM runs WHERE status = 'running' AND lease_until >= ?",
            (time.time(),),
        )
        return sum(not _holder_gone(worker, gone) for (worker,) in rows)

    def seconds_left(self) -> float | None:
        """Remaining runs times the mean wall time of finished ones, over the live runners."""
        rows = self._query(
            "SELECT AVG(wall_seconds) FROM runs WHERE status IN ('done', 'diverged')"
        )
        mean = rows[0][0]
        if mean is None:
            return None
        counts = self.counts()
        return (counts["pending"] + counts["running"]) * mean / max(1, self.live_workers())


def worker_name(index: int) -> str:
    """The name a worker process holds its leases under: host, process id and worker index."""
    return f"{socket.gethostname()}:{os.getpid()}:{index}"


def _expire_leases_of_dead_workers(db: sqlite3.Connection) -> None:
    """End at once the leases of workers on this host whose process is gone (killed runs resume
    without waiting for the lease to run out); other hosts' leases expire by time alone."""
    running = db.execute("SELECT DISTINCT worker FROM runs WHERE status = 'running'").fetchall()
    for (worker,) in running:
        if _holder_gone(worker):
            db.execute(
                "UPDATE runs SET lease_until = 0 WHERE status = 'running' AND worker = ?", (worker,)
            )


def _holder_gone(worker: str, known: dict[str, bool] | None = None) -> bool:
    """Whether `worker` (`host:pid:index`, `worker_name`) names a process of this host that has
    exited; `known` caches the answers within one call."""
    known = {} if known is None else known
    if worker not in known:
        worker_host, _, rest = str(worker).partition(":")
        pid = rest.partition(":")[0]
        known[worker] = (
            worker_host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))
        )
    return known[worker]


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (macOS): it answered the signal, so it is there
        return True
    return state != "Z"


def _extend_lease(db: sqlite3.Connection, run_id: int, worker: str, lease_seconds: float) -> None:
    cursor = db.execute(
        "UPDATE runs SET lease_until = ? WHERE id = ? AND worker = ? AND status = 'running'",
        (time.time() + lease_seconds, run_id, worker),
    )
    if cursor.rowcount == 0:
        raise LeaseLost(run_id)


def open_existing(folder: str | Path, *, comparison: bool = False) -> StudyStore:
    """The store of an existing study folder (or, with `comparison`, of a comparison folder);
    a `StudyError` when there is none."""
    path = Path(folder) / STORE_NAME
    if not path.is_file():
        raise StudyError(
            f"{folder} is not a study folder (no {STORE_NAME}); run `cnnlab study run` first"
        )
    store = StudyStore(folder)
    if store.get_meta("spec") is not None:
        return store
    if store.get_meta(COMPARISON_KEY) is not None:
        if comparison:
            return store
        store.close()
        raise StudyError(
            f"{folder} holds a comparison (`cnnlab compare`), not a study: "
            "`cnnlab study status` and `cnnlab study report` read it, nothing else does"
        )
    store.close()
    raise StudyError(f"study store {path} holds no study; start it with `cnnlab study run`")
