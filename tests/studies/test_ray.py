"""Studies on a real two-node Ray cluster on this machine (`--ray`): runs spread over both
nodes, a node killed mid-run, a driver killed and run again. Skipped where Ray is missing."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from study_helpers import DATA, REPO, TESTS, tiny_spec
from synthetic import write_image_folder
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.studies import StudySpec
from cnnlab.studies.store import StudyStore, process_alive

pytest.importorskip("ray", reason="Ray is not installed (pip install 'cnnlab[ray]')")
pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
EPOCHS = 6  # of the node-kill test
MARKER = "CNNLAB_TEST_CLUSTER"
SETTINGS = {
    "PYTHONPATH": str(REPO),
    "OMP_NUM_THREADS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",  # the cluster's own token: nothing else can join it
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
    "RAY_health_check_period_ms": "1000",  # a killed node is declared dead within seconds
    "RAY_health_check_failure_threshold": "3",
}


def _free_port() -> int:
    """A free port away from those Ray takes by default (52365, 8265, 10002-19999, ...)."""
    for port in random.Random(os.getpid()).sample(range(40000, 50000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 40000-49999")


class Cluster:
    """A head node and a worker node of one CPU each, on this machine, in their own temp folders.

    Every process a node starts inherits `CNNLAB_TEST_CLUSTER=<its folder>`, which finds them.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cnnlab-ray-", dir="/tmp"))  # short: sockets
        self.environment = {**os.environ, **SETTINGS}
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._start("head", "--head", f"--port={self.port}", "--include-dashboard=false")
        self._start("worker", f"--address={self.address}")

    def _start(self, name: str, *options: str) -> None:
        command = [str(RAY), "start", *options, "--num-cpus=1", "--num-gpus=0"]
        command += ["--node-ip-address=127.0.0.1", f"--temp-dir={self.root / name}"]
        command += ["--disable-usage-stats"]
        environment = {**self.environment, MARKER: str(self.root / name)}
        started = subprocess.run(command, env=environment, capture_output=True, timeout=180)
        assert started.returncode == 0, started.stderr.decode()[-2000:]

    def pids(self, node: str = "", command: str = "") -> list[int]:
        """This cluster's processes (of `node`, whose command line holds `command`): those whose
        environment holds the marker of a node, which Ray's workers inherit from the raylet."""
        marker = f"{MARKER}={self.root / node}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            try:
                environment = (entry / "environ").read_bytes().split(b"\0")
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:  # not a process, or gone
                continue
            if any(v.startswith(marker) for v in environment) and command in line:
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        subprocess.run(
            [str(RAY), "stop", "--force"], env=self.environment, capture_output=True, timeout=120
        )
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """The two-node cluster, torn down in any case. Drivers run in their own processes, with
    the cluster's token in their environment."""
    started = Cluster()
    try:
        started.start()
        yield started
    finally:
        started.stop()


def _spec(epochs: int = 2, values: tuple = (0.05, 0.2), seeds: int = 2) -> StudySpec:
    spec = tiny_spec(factors={"lr": list(values)}, seeds=seeds)
    spec["base"]["epochs"] = epochs
    return StudySpec.from_dict(spec)


def _rows(out: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(out / "study.db") as db:
        return db.execute(sql).fetchall()


def _drive(cluster: Cluster, spec: StudySpec, out: Path, address: str) -> subprocess.Popen:
    """`run_study(spec, out, ray=RayOptions(address))` on the synthetic data, in a process."""
    code = _DRIVER.format(
        tests=str(TESTS / "engine"),
        studies=str(TESTS / "studies"),
        spec=spec.to_dict(),
        out=str(out),
        address=address,
    )
    environment = {**cluster.environment, "RAY_ADDRESS": cluster.address}  # what `auto` joins
    return subprocess.Popen([sys.executable, "-c", code], env=environment)


def test_a_study_runs_on_both_nodes_into_the_same_store(cluster: Cluster, tmp_path: Path) -> None:
    assert _drive(cluster, _spec(), tmp_path, "auto").wait(timeout=600) == 0
    store = StudyStore(tmp_path)
    assert [record.status for record in store.runs()] == ["done"] * 6
    nodes = {record.environment["ray_node"] for record in store.runs()}
    assert len(nodes) == 2  # two runs in flight at a time, one CPU per node
    for record in store.runs():
        assert record.attempts == 1 and record.environment["threads"] == 1
        assert [row["epoch"] for row in store.epochs(record.id)] == [1, 2]
        assert (tmp_path / "runs" / record.folder / "last.pt").is_file()
    result = CliRunner().invoke(app, ["study", "status", str(tmp_path)])
    assert result.exit_code == 0 and "stale" not in result.output


def test_bad_ray_options_are_one_line_within_30_seconds(cluster: Cluster, tmp_path: Path) -> None:
    folder = write_image_folder(DATA, tmp_path / "images")
    spec = tmp_path / "study.yaml"
    spec.write_text(
        f"base: {{model: lenet5, data: 'folder:{folder}', channels: 1, epochs: 1,"
        " batch_size: 32, device: cpu, model_options: {kernel_size: 3}}\nfactors: {lr: [0.1]}\n"
    )
    nobody = f"127.0.0.1:{_free_port()}"  # nothing listens there
    other = socket.create_server(("127.0.0.1", 0))  # something listens, but it is no Ray head
    not_ray = f"127.0.0.1:{other.getsockname()[1]}"
    run = ["study", "run", str(spec), "--out", str(tmp_path / "study"), "--ray"]
    cases = {
        f"no Ray cluster answers at {nobody}": [*run, nobody],
        f"no Ray cluster answers at {not_ray} (something else listens)": [*run, not_ray],
        "cannot create the folder /proc/x": [*run, cluster.address, "--storage", "/proc/x"],
        "--ray-gpus-per-run 0.5, but the Ray cluster has 0 GPUs": [
            *run,
            cluster.address,
            "--ray-gpus-per-run",
            "0.5",
        ],
    }
    for message, args in cases.items():
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "cnnlab", *args],
            env=cluster.environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert message in lines[0] and time.monotonic() - started < 30
    other.close()


_DRIVER = """
import sys
sys.path.insert(0, {tests!r}); sys.path.insert(0, {studies!r})
from study_helpers import DATA
from cnnlab.studies import StudySpec, run_study
from cnnlab.studies.runner import RayOptions
spec = StudySpec.from_dict({spec!r})
run_study(spec, {out!r}, data=DATA, ray=RayOptions({address!r}), log=None)
"""


def test_a_killed_driver_is_resumed_by_running_it_again_and_nothing_is_repeated(
    cluster: Cluster, tmp_path: Path
) -> None:
    spec = _spec(epochs=3)
    driver = _drive(cluster, spec, tmp_path, cluster.address)
    deadline = time.monotonic() + 240
    done: list[tuple] = []
    while time.monotonic() < deadline and driver.poll() is None and not done:
        time.sleep(0.2)
        try:
            done = _rows(tmp_path, "SELECT id, finished FROM runs WHERE status = 'done'")
        except sqlite3.OperationalError:  # not created yet
            continue
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert done, "no run finished before the deadline"
    assert not process_alive(driver.pid)
    assert _drive(cluster, spec, tmp_path, cluster.address).wait(timeout=600) == 0
    finished = dict(_rows(tmp_path, "SELECT id, finished FROM runs"))
    assert all(finished[run_id] == when for run_id, when in done)  # not trained again
    attempts = [count for (count,) in _rows(tmp_path, "SELECT attempts FROM runs")]
    assert max(attempts) <= 2 and sum(attempts) <= 6 + 2  # at most the two in flight again
    store = StudyStore(tmp_path)
    for record in store.runs():
        assert [row["epoch"] for row in store.epochs(record.id)] == [1, 2, 3]


def test_a_comparison_runs_its_models_as_ray_tasks_too(cluster: Cluster, tmp_path: Path) -> None:
    folder = write_image_folder(DATA, tmp_path / "images")
    out = tmp_path / "compare"
    args = ["compare", "-m", "lenet5", "-d", f"folder:{folder}", "--image-size", "28", "-e", "1"]
    args += ["--seeds", "2", "--out", str(out), "--ray", cluster.address, "-q"]
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab", *args],
        env=cluster.environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = StudyStore(out).runs()
    assert [(r.point, r.seed, r.status, r.attempts) for r in records] == [
        ("model=lenet5", 0, "done", 1),
        ("model=lenet5", 1, "done", 1),
    ]
    assert all(record.environment["ray_node"] for record in records)


def _signal(pids: list[int], number: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)


def _run_trained_by(pids: list[int], runs: Path) -> Path | None:
    """The run folder whose lock one of `pids` holds open (the run it trains), if any."""
    for pid in pids:
        with contextlib.suppress(OSError):
            for descriptor in Path(f"/proc/{pid}/fd").iterdir():
                target = Path(os.readlink(descriptor))
                if target.name == ".lock" and target.parent.parent == runs:
                    return target.parent
    return None


def test_a_node_killed_mid_run_costs_at_most_the_epoch_in_flight(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Last: the cluster loses its worker node."""
    spec = _spec(epochs=EPOCHS, values=(0.05,), seeds=1)  # two runs: one on each node
    driver = _drive(cluster, spec, tmp_path, cluster.address)
    deadline = time.monotonic() + 300
    while True:  # freeze the node, look, and go on until its run has a checkpoint to resume
        assert time.monotonic() < deadline and driver.poll() is None
        node = cluster.pids("worker")
        _signal(node, signal.SIGSTOP)
        folder = _run_trained_by(node, tmp_path / "runs")
        metrics = folder / "metrics.jsonl" if folder else None
        rows = len(metrics.read_text().splitlines()) if metrics and metrics.is_file() else 0
        if rows >= 2:  # last.pt holds epoch 1 at least (metrics are written just before it)
            break
        _signal(node, signal.SIGCONT)
        time.sleep(0.05)
    _signal(cluster.pids("worker", "/raylet/raylet "), signal.SIGKILL)  # mid-epoch, frozen
    _signal(cluster.pids("worker"), signal.SIGKILL)  # the rest of the lost machine
    assert driver.wait(timeout=300) == 0
    store = StudyStore(tmp_path)
    records = {record.folder: record for record in store.runs()}
    assert [(r.status, r.attempts) for r in records.values()] == [("done", 1), ("done", 1)]
    lost = records.pop(folder.name)
    (other,) = records.values()
    assert other.environment["resumed_from_epoch"] == 0
    assert rows - 1 <= lost.environment["resumed_from_epoch"] <= rows  # lost: the epoch in flight
    assert lost.environment["ray_node"] == other.environment["ray_node"]  # retried on the head
    for record in (lost, other):
        assert [row["epoch"] for row in store.epochs(record.id)] == list(range(1, EPOCHS + 1))
        lines = (tmp_path / "runs" / record.folder / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == list(range(1, EPOCHS + 1))
