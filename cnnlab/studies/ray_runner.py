"""Running a study's pending runs as Ray tasks (`--ray`), on one machine or a cluster.

The study store stays where it is, in the study folder on the machine that runs `cnnlab`: this
process (the driver) claims the runs, holds their leases with a `LeaseHeartbeat`, and records
how each ended, so `study status`, `report` and `best` read it as they read a local study.
Each (point, seed) run becomes one Ray task that runs the local workers' code
(`worker.train_one_run`) on the study's memory-mapped data under the storage folder: the same
config, seed, run folder and metrics. A task gets `threads` CPUs from Ray and trains with that
many threads, and `gpus` of a GPU when asked.

Failures: a task whose node or process dies is run again by Ray (`max_retries`), resuming from
the run's `last.pt`; past the limit the run is recorded `failed` with Ray's reason. A killed
driver leaves its runs `running` under its process id: the next `cnnlab study run` on this host
takes them back at once (another host's: once the lease runs out) and resumes them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cnnlab.engine.config import TrainConfig
from cnnlab.engine.runfolder import LOCK_FILE, fcntl
from cnnlab.errors import OptionError
from cnnlab.studies.shared_data import open_data, prepare_data
from cnnlab.studies.spec import holdout_for
from cnnlab.studies.store import RunRecord, StudyStore, worker_name
from cnnlab.studies.worker import Worker, environment, train_one_run

MAX_RETRIES = 2  # Ray runs a task again this often after its node or process died
CONNECT_SECONDS = 5.0
JOIN_SECONDS = 15.0
INSTALL_HINT = "--ray needs Ray, which is not installed: pip install 'cnnlab[ray]'"
Log = Callable[[str], None]


def run_on_ray(
    store: StudyStore,
    address: str,
    *,
    storage: Path,
    threads: int,
    gpus: float,
    lease_seconds: float,
    train_images: int | None,
    validation: float | None,
    log: Log,
) -> None:
    """Train every pending run of `store` as Ray tasks until none is left.

    `address` is `local` (start a Ray instance here), `auto` (the cluster `ray start` made on
    this machine) or `HOST:PORT`. Runs held by a live runner elsewhere are left to it.
    """
    ray = import_ray()
    connect(ray, address)
    try:
        resources = ray.cluster_resources()
        if gpus and resources.get("GPU", 0) < gpus:
            raise OptionError(
                f"--ray-gpus-per-run {gpus:g}, but the Ray cluster has "
                f"{resources.get('GPU', 0):g} GPUs; leave it out or add GPU nodes"
            )
        slots = int(resources.get("CPU", 1) // threads)
        if gpus:
            slots = min(slots, int(resources["GPU"] // gpus))
        if slots < 1:
            raise OptionError(
                f"--threads {threads} CPUs per run, but the Ray cluster has "
                f"{resources.get('CPU', 0):g} CPUs in all"
            )
        log(
            f"Ray: {slots} runs at a time, {threads} CPU(s) each"
            + (f", {gpus:g} GPU" if gpus else "")
        )
        task = ray.remote(
            num_cpus=threads, num_gpus=gpus, max_retries=MAX_RETRIES, retry_exceptions=False
        )(train_task)
        _drive(ray, task, store, storage, slots, lease_seconds, train_images, validation, log)
    finally:
        ray.shutdown()


def _drive(ray, task, store, storage, slots, lease_seconds, train_images, validation, log) -> None:
    """Keep `slots` tasks in flight; record each run as its task ends."""
    driver = Worker(store.path.parent, store, worker_name(0), lease_seconds, log)
    in_flight: dict[Any, tuple[RunRecord, float]] = {}
    with driver.holding():
        try:
            while True:
                while len(in_flight) < slots:
                    record = store.claim(driver.name, lease_seconds)
                    if record is None:
                        break
                    arguments = (
                        str(storage),
                        record.point,
                        record.config,
                        train_images,
                        validation,
                    )
                    in_flight[task.remote(*arguments)] = (record, time.perf_counter())
                if not in_flight:
                    if store.counts()["running"] == 0:
                        return
                    time.sleep(min(1.0, lease_seconds / 4))  # another runner's run may fall back
                    continue
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                for reference in ready:
                    record, started = in_flight.pop(reference)
                    status, history, error, environment = _result(ray, reference)
                    seconds = time.perf_counter() - started
                    driver.finish(record, status, history, seconds, error, environment)
        except BaseException:
            for reference, (record, _) in in_flight.items():
                ray.cancel(reference, force=True)
                store.release(record.id, driver.name)  # the next run resumes it from its last.pt
            raise


def _result(ray, reference) -> tuple[str, list[dict], str | None, dict | None]:
    """The run's status, rows, error and environment, or Ray's reason after the retries."""
    try:
        result = ray.get(reference)
    except ray.exceptions.RayError as failure:
        lines = str(failure).strip().splitlines()
        reason = f"{type(failure).__name__}: {lines[0] if lines else ''}"
        if isinstance(failure, ray.exceptions.RayTaskError):  # raised outside the run's training
            return "failed", [], f"the Ray task failed ({reason})", None
        return "failed", [], f"Ray gave up after {MAX_RETRIES} retries ({reason})", None
    return result["status"], result["history"], result["error"], result["environment"]


def train_task(
    storage: str,
    point: str,
    config: dict,
    train_images: int | None,
    validation: float | None,
) -> dict:
    """A Ray task: train one run as a local worker does; its status, rows and environment."""
    import ray

    context = ray.get_runtime_context()
    torch.set_num_threads(max(1, int(context.get_assigned_resources().get("CPU", 1))))
    run = TrainConfig.from_dict(config)
    status, history, error, resumed_from = "failed", [], None, 0
    try:
        _wait_for_folder(run.run_dir)
        last = run.run_dir / "last.pt"  # this try resumes from its epoch (a retried task's > 0)
        if last.is_file():
            checkpoint = torch.load(last, map_location="cpu", mmap=True, weights_only=True)
            resumed_from = int(checkpoint["epoch"])
        holdout = holdout_for(point, validation)
        data = open_data(prepare_data(Path(storage), run, train_images, holdout=holdout))
        status, history = train_one_run(run, data)
    except Exception as failure:  # noqa: BLE001 - a failing run is recorded, the study goes on
        error = f"{type(failure).__name__}: {failure}"
    where = {"ray_node": context.get_node_id(), "resumed_from_epoch": resumed_from}
    return {
        "status": status,
        "history": history,
        "error": error,
        "environment": environment() | where,
    }


def _wait_for_folder(folder: Path, seconds: float = 60.0) -> None:
    """Wait until no process holds the run folder's lock: the task of a killed driver or node
    may still be ending (after `seconds`, training refuses the folder in one line)."""
    if fcntl is None or not (folder / LOCK_FILE).is_file():
        return
    deadline = time.monotonic() + seconds
    with open(folder / LOCK_FILE, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.2)
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
                return


def import_ray():
    """The `ray` module, or one line saying how to install it; usage stats off."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        import ray
    except ImportError:
        raise OptionError(INSTALL_HINT) from None
    return ray


def connect(ray, address: str) -> None:
    """Join the cluster at `address` (`local`: start one here), or say in one line why not.

    Ray's usage-stats reporting is off (`import_ray`), a local instance is asked for loopback, an
    address where no cluster answers is refused within `CONNECT_SECONDS` (nothing listens, or
    no gRPC server) or `JOIN_SECONDS` (a gRPC server that is no Ray head).
    """
    runtime_env = {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": _package_root()}}
    options = {
        "runtime_env": runtime_env,
        "logging_level": logging.ERROR,
        "log_to_driver": False,
        "include_dashboard": False,
    }
    if address == "local":
        ray.init(address="local", _node_ip_address="127.0.0.1", **options)
        return
    if address != "auto":
        host, port = _host_port(address)
        try:
            speaks_grpc = _speaks_grpc(host, port)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise OptionError(f"no Ray cluster answers at {address} ({reason})") from None
        if not speaks_grpc:
            raise OptionError(f"no Ray cluster answers at {address} (something else listens)")
    del options["include_dashboard"]  # a cluster's own
    outcome: list[BaseException | None] = []

    def join() -> None:
        try:
            ray.init(address=address, **options)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
            outcome.append(error)
        else:
            outcome.append(None)

    joining = threading.Thread(target=join, name="ray-init", daemon=True)
    joining.start()
    joining.join(JOIN_SECONDS)  # Ray retries a port that answers but is no Ray head for minutes
    if not outcome:
        raise OptionError(f"no Ray cluster answered at --ray {address} within {JOIN_SECONDS:g} s")
    if isinstance(outcome[0], ConnectionError):
        first = str(outcome[0]).strip().splitlines()[0]
        raise OptionError(f"no Ray cluster to join at --ray {address}: {first}") from None
    if outcome[0] is not None:
        raise outcome[0]


def check_address(address: str) -> None:
    """Refuse an `--ray` address that is none of `local`, `auto` and `HOST:PORT`."""
    if address not in ("local", "auto"):
        _host_port(address)


def _speaks_grpc(host: str, port: int) -> bool:
    """Whether `host:port` answers an HTTP/2 greeting as a gRPC server (a Ray head) does, with
    its settings; Ray's own client would retry something else for minutes."""
    greeting = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(3) + b"\x04" + bytes(5)  # + SETTINGS
    with socket.create_connection((host, port), timeout=CONNECT_SECONDS) as connection:
        connection.sendall(greeting)
        try:
            header = connection.recv(9)
        except TimeoutError:
            return False
    return len(header) == 9 and header[3] == 0x04  # a SETTINGS frame


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise OptionError(
            f"--ray {address!r}: give no address (a local Ray instance), auto, or HOST:PORT"
        )
    return host, int(port)


def _package_root() -> str:
    """The folder cnnlab is imported from, so Ray's workers run this same code."""
    import cnnlab

    return str(Path(cnnlab.__file__).resolve().parents[1])
