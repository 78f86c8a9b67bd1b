"""Studies on a real two-node Ray cluster on this machine (`--ray`): runs spread over both
nodes, a node killed mid-run, a driver killed and run again. Skipped where Ray is missing."""

from __future__ import annotations

import contextlib
import json
import os
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
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.studies import StudySpec
from cnnlab.studies.store import StudyStore, process_alive

pytest.importorskip("ray", reason="Ray is not installed (pip install 'cnnlab[ray]')")
pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
EPOCHS = 20  # of the node-kill test: the runs are still training when the node is killed
SETTINGS = {
    "PYTHONPATH": str(REPO),
    "OMP_NUM_THREADS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",  # the cluster's own token: nothing else can join it
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
    "RAY_health_check_period_ms": "1000",  # a killed node is declared dead within seconds
    "RAY_health_check_failure_threshold": "3",
}


class Cluster:
    """A head node and a worker node of one CPU each, on this machine, in their own temp folders.

    Every process they start inherits `CNNLAB_TEST_CLUSTER=<its folder>`, which finds them.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cnnlab-ray-", dir="/tmp"))  # short: sockets
        self.environment = {**os.environ, **SETTINGS, "CNNLAB_TEST_CLUSTER": str(self.root)}
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._start("head", "--head", f"--port={self.port}", "--include-dashboard=false")
        self._start("worker", f"--address={self.address}")

    def _start(self, name: str, *options: str) -> None:
        command = [str(RAY), "start", *options, "--num-cpus=1", "--num-gpus=0"]
        command += ["--node-ip-address=127.0.0.1", f"--temp-dir={self.root / name}"]
        command += ["--disable-usage-stats"]
        started = subprocess.run(command, env=self.environment, capture_output=True, timeout=180)
        assert started.returncode == 0, started.stderr.decode()[-2000:]

    def pids(self, node: str = "", command: str = "") -> list[int]:
        """This cluster's processes (of `node`, whose command line holds `command`)."""
        marker = f"CNNLAB_TEST_CLUSTER={self.root}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            try:
                environment = (entry / "environ").read_bytes().split(b"\0")
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:  # not a process, or gone
                continue
            if marker in environment and str(self.root / node) in line and command in line:
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
    sys.path.insert(0, str(TESTS / "engine"))
    from synthetic import write_image_folder

    folder = write_image_folder(DATA, tmp_path / "images")
    spec = tmp_path / "study.yaml"
    spec.write_text(
        f"base: {{model: lenet5, data: 'folder:{folder}', channels: 1, epochs: 1,"
        " batch_size: 32, device: cpu, model_options: {kernel_size: 3}}\nfactors: {lr: [0.1]}\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{probe.getsockname()[1]}"  # closed again: nothing listens there
    run = ["study", "run", str(spec), "--out", str(tmp_path / "study"), "--ray"]
    cases = {
        f"no Ray cluster answers at {nobody}": [*run, nobody],
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


def test_a_node_killed_mid_run_costs_at_most_the_epoch_in_flight(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Last: the cluster loses its worker node."""
    spec = _spec(epochs=EPOCHS, values=(0.05,), seeds=1)  # two runs: one on each node
    driver = _drive(cluster, spec, tmp_path, cluster.address)
    metrics = [tmp_path / "runs" / name / "metrics.jsonl" for name in ("base-s0", "lr=0.05-s0")]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        if all(path.is_file() and path.read_text().count("\n") >= 1 for path in metrics):
            break  # both runs, one per node, have a checkpointed epoch
        time.sleep(0.1)
    raylets = cluster.pids("worker", "raylet")
    assert raylets, "the worker node's raylet is not running"
    for pid in raylets:
        os.kill(pid, signal.SIGKILL)
    assert driver.wait(timeout=300) == 0
    store = StudyStore(tmp_path)
    records = store.runs()
    assert [(r.status, r.attempts) for r in records] == [("done", 1), ("done", 1)]
    resumed = [r for r in records if r.environment["resumed_from_epoch"] > 0]
    assert len(resumed) == 1  # the run of the lost node, retried on the head from its last.pt
    for record in records:
        assert [row["epoch"] for row in store.epochs(record.id)] == list(range(1, EPOCHS + 1))
        lines = (tmp_path / "runs" / record.folder / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == list(range(1, EPOCHS + 1))
