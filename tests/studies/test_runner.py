"""Running studies: resume, skip, divergence, failures, other specs, SIGKILL and two runners."""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest
import torch
from study_helpers import DATA, start_runner, tiny_spec
from synthetic import write_image_folder
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.data.normalization import channel_mean_std
from cnnlab.engine.hooks import TrainHook
from cnnlab.errors import OptionError, StudyError
from cnnlab.studies import StudySpec, run_study
from cnnlab.studies.runner import threads_per_worker
from cnnlab.studies.shared_data import open_data, prepare_data
from cnnlab.studies.store import StudyStore, process_alive
from cnnlab.studies.worker import Worker, final_metrics, train_one_run


def _run(spec: dict, out: Path, **options):
    return run_study(StudySpec.from_dict(spec), out, data=DATA, threads=1, log=None, **options)


def _column(out: Path, sql: str) -> list:
    with sqlite3.connect(out / "study.db") as db:
        return [row[0] for row in db.execute(sql)]


def test_a_study_runs_every_point_and_seed_and_a_second_call_skips_them(tmp_path: Path) -> None:
    outcome = _run(tiny_spec(), tmp_path)
    assert outcome.counts["done"] == 6 and outcome.counts["pending"] == 0
    store = StudyStore(tmp_path)
    record = store.runs(where="point = 'lr=0.2' AND seed = 1")[0]
    assert record.config["lr"] == 0.2 and record.config["out"].endswith("runs/lr=0.2-s1")
    assert [row["epoch"] for row in store.epochs(record.id)] == [1, 2]
    assert record.final["epochs"] == 2 and 0 <= record.final["test_acc"] <= 1
    assert record.environment["torch"] and record.environment["cpu_count"]
    assert (tmp_path / "runs" / "lr=0.2-s1" / "last.pt").is_file()
    again = _run(tiny_spec(), tmp_path)
    assert again.counts["done"] == 6
    assert _column(tmp_path, "SELECT attempts FROM runs") == [1] * 6


def test_same_spec_and_seeds_give_the_same_numbers(tmp_path: Path) -> None:
    spec = tiny_spec(factors={"lr": [0.05]}, seeds=1)
    finals = [
        [record.final for record in StudyStore(_run(spec, tmp_path / name).folder).runs()]
        for name in ("a", "b")
    ]
    assert finals[0] == finals[1]


def test_a_diverging_learning_rate_is_recorded_as_diverged(tmp_path: Path) -> None:
    outcome = _run(tiny_spec(factors={"lr": [1e9]}, seeds=1), tmp_path)
    assert outcome.counts["diverged"] == 1 and outcome.counts["done"] == 1
    record = StudyStore(tmp_path).runs(where="status = 'diverged'")[0]
    assert record.final["epochs"] == 1  # stopped in its first epoch


def test_a_failing_run_is_recorded_and_the_study_goes_on(tmp_path: Path) -> None:
    outcome = _run(tiny_spec(factors={"mean": [[0.5, 0.5]]}, seeds=1), tmp_path)
    assert outcome.counts["failed"] == 1 and outcome.counts["done"] == 1
    (error,) = _column(tmp_path, "SELECT error FROM runs WHERE status = 'failed'")
    assert error.startswith("OptionError: mean has 2 values")


def test_final_metrics_keep_top5_only_where_the_epoch_has_it() -> None:
    metrics = {"train_loss": 0.5, "train_acc": 0.8, "test_loss": 0.6, "test_acc": 0.7}
    row = {"epoch": 3, **metrics}
    assert final_metrics([row | {"test_top5": None}]) == metrics | {"epochs": 3}
    assert final_metrics([row | {"test_top5": 0.9}]) == metrics | {"test_top5": 0.9, "epochs": 3}


def test_a_value_the_model_refuses_for_the_data_fails_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="factor value kernel_size=9: model .lenet5. "):
        _run(tiny_spec(factors={"kernel_size": [9]}), tmp_path)
    assert not (tmp_path / "runs").exists()


def test_a_folder_from_another_spec_is_refused_unless_extend_only_adds(tmp_path: Path) -> None:
    _run(tiny_spec(factors={"lr": [0.05]}, seeds=1), tmp_path)
    wider = tiny_spec(factors={"lr": [0.05, 0.2]}, seeds=1)
    with pytest.raises(StudyError, match=r"another spec \(factor lr adds \[0.2\]\); add --extend"):
        _run(wider, tmp_path)
    assert _run(wider, tmp_path, extend=True).counts["done"] == 3
    changed = tiny_spec(factors={"lr": [0.05, 0.2]}, seeds=1)
    changed["base"]["epochs"] = 1
    with pytest.raises(StudyError, match="base.epochs 2 -> 1"):
        _run(changed, tmp_path, extend=True)


@pytest.mark.slow
def test_a_study_killed_mid_run_resumes_repeating_at_most_the_run_in_flight(tmp_path: Path) -> None:
    spec = tiny_spec(factors={"lr": [0.05, 0.2]}, seeds=2)
    spec["base"]["epochs"] = 4
    runner = start_runner(spec, tmp_path, lease=600.0)  # the dead runner's lease is not waited out
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and runner.poll() is None:
        time.sleep(0.1)
        try:
            statuses = _column(tmp_path, "SELECT status FROM runs")
        except sqlite3.OperationalError:  # not created yet
            continue
        if "done" in statuses and "running" in statuses:
            break
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert _column(tmp_path, "SELECT status FROM runs").count("running") == 1
    started = time.monotonic()
    outcome = _run(spec, tmp_path, lease_seconds=600.0)
    assert time.monotonic() - started < 300
    assert outcome.counts["done"] == 6
    attempts = _column(tmp_path, "SELECT attempts FROM runs")
    assert sum(attempts) == 7 and max(attempts) == 2


@pytest.mark.slow
def test_killing_a_runner_stops_its_worker_processes_and_hands_their_runs_back(
    tmp_path: Path,
) -> None:
    spec = tiny_spec(factors={"lr": [0.05, 0.2]}, seeds=2)
    spec["base"]["epochs"] = 100_000  # the runs would train on long after the runner is killed
    runner = start_runner(spec, tmp_path, lease=600.0, workers=2)
    deadline = time.monotonic() + 120
    workers: list[str] = []
    while time.monotonic() < deadline and len(workers) < 2:
        time.sleep(0.2)
        try:
            workers = _column(tmp_path, "SELECT worker FROM runs WHERE status = 'running'")
        except sqlite3.OperationalError:  # not created yet
            continue
    assert len(workers) == 2, runner.stderr.read().decode()[-2000:] if runner.poll() else ""
    runner.send_signal(signal.SIGKILL)  # no handler runs in the runner itself
    runner.wait()
    pids = [int(name.split(":")[1]) for name in workers]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(map(process_alive, pids)):
        time.sleep(0.2)
    assert not any(map(process_alive, pids)), "a worker outlived its runner"
    assert "running" not in _column(tmp_path, "SELECT status FROM runs")  # handed back


@pytest.mark.slow
def test_two_runners_on_one_folder_share_the_work_and_do_no_run_twice(tmp_path: Path) -> None:
    spec = tiny_spec(factors={"lr": [0.02, 0.05, 0.2]}, seeds=2)
    # Each runner claims a second run only once the other holds one: however the processes are
    # scheduled, both train (one starting before the other has imported torch took all 8 runs).
    runners = [start_runner(spec, tmp_path, share=True) for _ in range(2)]
    for runner in runners:
        _, errors = runner.communicate(timeout=240)
        assert runner.returncode == 0, errors.decode()[-2000:]
    assert _column(tmp_path, "SELECT status FROM runs") == ["done"] * 8
    assert _column(tmp_path, "SELECT attempts FROM runs") == [1] * 8
    assert len(set(_column(tmp_path, "SELECT worker FROM runs"))) == 2


@pytest.mark.slow  # two spawned worker processes each import torch
def test_cli_run_decodes_the_dataset_once_into_files_every_worker_maps(tmp_path: Path) -> None:
    folder = write_image_folder(DATA, tmp_path / "images")
    spec = tmp_path / "study.yaml"
    spec.write_text(
        f"base: {{model: lenet5, data: 'folder:{folder}', channels: 1, epochs: 1,"
        " batch_size: 32, optimizer: sgd, schedule: constant, device: cpu,"
        " model_options: {kernel_size: 3}}\n"
        "factors: {pooling: [max]}\nseeds: [5]\n"
    )
    out = tmp_path / "study"
    result = CliRunner().invoke(app, ["study", "run", str(spec), "-o", str(out), "-w", "2"])
    assert result.exit_code == 0, result.output
    (data,) = (out / "data").iterdir()
    assert sorted(p.name for p in data.glob("*.npy")) == [
        "test_images.npy",
        "test_labels.npy",
        "train_images.npy",
        "train_labels.npy",
    ]
    assert _column(out, "SELECT status FROM runs") == ["done", "done"]


def test_train_images_keeps_the_first_images_with_their_own_statistics(tmp_path: Path) -> None:
    config = StudySpec.from_dict(tiny_spec()).base
    splits = open_data(prepare_data(tmp_path, config, 100, DATA))
    assert len(splits.train) == 100 and len(splits.test) == len(DATA.test)
    assert torch.equal(splits.train.images, DATA.train.images[:100])
    assert splits.mean == pytest.approx(channel_mean_std(DATA.train.images[:100])[0])


def test_cli_status_shows_the_counts_and_bad_specs_are_one_red_line(tmp_path: Path) -> None:
    _run(tiny_spec(factors={"lr": [0.05]}, seeds=1), tmp_path / "study")
    cli = CliRunner()
    result = cli.invoke(app, ["study", "status", str(tmp_path / "study")])
    assert result.exit_code == 0 and "done" in result.output and "2" in result.output
    spec = tmp_path / "bad.yaml"
    spec.write_text("base: {model: lenet5}\nfactors: {activation: [swish]}\nseeds: 1\n")
    result = cli.invoke(app, ["study", "run", str(spec), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown activation 'swish'" in result.output and "Traceback" not in result.output
    result = cli.invoke(app, ["study", "status", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "is not a study folder" in result.output


@pytest.mark.parametrize("command", ["study", "compare"])
def test_an_out_folder_that_cannot_be_created_is_one_line(tmp_path: Path, command: str) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text("base: {model: lenet5, data: quadrants, epochs: 1}\nfactors: {lr: [0.1]}\n")
    a_file = tmp_path / "file"
    a_file.write_text("")
    for out in (a_file, Path("/proc/cnnlab-study")):
        if command == "study":
            args = ["study", "run", str(spec), "--out", str(out)]
        else:
            args = ["compare", "-m", "lenet5", "-d", "folder:/no/such", "--out", str(out)]
        result = CliRunner().invoke(app, args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith("error: cannot ") and str(out) in lines[0]


def test_threads_per_worker_are_given_else_omp_num_threads_else_the_cores_shared() -> None:
    omp = {"OMP_NUM_THREADS": "3"}
    assert threads_per_worker(2, 5, omp, cores=16) == 5  # --threads wins
    assert threads_per_worker(2, None, omp, cores=16) == 3  # not 16 // 2
    assert threads_per_worker(4, None, {"OMP_NUM_THREADS": " "}, cores=16) == 4
    assert threads_per_worker(4, None, {}, cores=16) == 4
    assert threads_per_worker(3, None, {}, cores=2) == 1
    for bad in ("0", "two", "-1"):
        with pytest.raises(OptionError, match="OMP_NUM_THREADS=.* give --threads"):
            threads_per_worker(1, None, {"OMP_NUM_THREADS": bad}, cores=2)
    with pytest.raises(OptionError, match="--threads must be at least 1"):
        threads_per_worker(1, 0, {}, cores=2)


def test_the_banner_shows_the_threads_each_worker_trains_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = StudySpec.from_dict(tiny_spec(factors={"lr": [0.05]}, seeds=1))
    lines: list[str] = []
    run_study(spec, tmp_path, data=DATA, log=lines.append)
    assert lines[0] == "2 runs to train: 1 worker(s), 1 thread(s) each"
    assert {r.environment["threads"] for r in StudyStore(tmp_path).runs()} == {1}


class _EvaluationLongerThanTheLease(TrainHook):
    """After epoch 1, holds the run past the lease it had, until the heartbeat has renewed it,
    and then lets another runner try to claim it (what it got is kept in `second_claim`)."""

    def __init__(self, folder: Path, lease: float) -> None:
        self.folder, self.lease = folder, lease
        self.second_claim: object = "not tried"

    def after_epoch(self, trainer, row: dict) -> None:
        if row["epoch"] != 1:
            return
        other = StudyStore(self.folder)
        try:

            def lease_until() -> float:
                return _column(self.folder, "SELECT lease_until FROM runs")[0]

            deadline = time.monotonic() + 20 * self.lease  # no heartbeat: the test fails here
            held_until = lease_until()
            while time.time() <= held_until or lease_until() - time.time() < self.lease / 2:
                assert time.monotonic() < deadline, "nobody renewed the lease"
                time.sleep(0.02)
            self.second_claim = other.claim("another-runner", self.lease)
        finally:
            other.close()


def test_a_run_held_past_its_lease_by_a_long_evaluation_is_not_taken_over(tmp_path: Path) -> None:
    spec = StudySpec.from_dict(tiny_spec(factors={"lr": [0.05]}, seeds=1))
    run = spec.runs()[0]
    config = spec.config_for(run.point, run.seed, tmp_path / "runs" / run.folder)
    prepare_data(tmp_path, config, None, DATA)
    store = StudyStore(tmp_path)
    store.enqueue(
        [
            {
                "point": run.point.name,
                "seed": run.seed,
                "folder": run.folder,
                "changes": {},
                "config": config.to_dict(),
            }
        ]
    )
    lease = 2.0
    slow = _EvaluationLongerThanTheLease(tmp_path, lease)
    worker = Worker(tmp_path, store, "first-runner", lease, log=lambda line: None, hooks=[slow])
    worker.train(store.claim("first-runner", lease))
    assert slow.second_claim is None  # the other runner found nothing to take
    (record,) = store.runs()
    assert (record.status, record.attempts, record.error) == ("done", 1, None)
    assert _column(tmp_path, "SELECT worker FROM runs") == ["first-runner"]
    assert [row["epoch"] for row in store.epochs(record.id)] == [1, 2]
    store.close()


def test_ray_without_the_extra_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is missing
    spec = tmp_path / "study.yaml"
    spec.write_text("base: {model: lenet5, data: quadrants, epochs: 1}\nfactors: {lr: [0.1]}\n")
    for args in (
        ["study", "run", str(spec), "--out", str(tmp_path / "s"), "--ray"],
        ["compare", "-m", "lenet5", "-d", "mnist", "--out", str(tmp_path / "c"), "--ray", "auto"],
    ):
        result = CliRunner().invoke(app, args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert (
            lines[0] == "error: --ray needs Ray, which is not installed: pip install 'cnnlab[ray]'"
        )
    result = CliRunner().invoke(
        app, ["study", "run", str(spec), "-o", str(tmp_path), "--storage", "x"]
    )
    assert result.exit_code == 2 and "--storage goes with --ray" in result.output


def test_a_run_trained_to_the_end_but_not_recorded_is_recorded_not_trained_again(
    tmp_path: Path,
) -> None:
    # A runner killed between the last epoch's checkpoint and the store's `finish` (a Ray
    # driver killed while its task ended): the next runner finds every epoch in last.pt.
    spec = StudySpec.from_dict(tiny_spec(factors={"lr": [0.05]}, seeds=1))
    config = spec.config_for(spec.points()[0], spec.seeds[0], tmp_path / "run")
    status, history = train_one_run(config, DATA)
    checkpoint = (tmp_path / "run" / "last.pt").read_bytes()
    again_status, again = train_one_run(config, DATA)
    assert (again_status, again) == (status, history) and status == "done"
    assert [row["epoch"] for row in again] == [1, 2]
    assert (tmp_path / "run" / "last.pt").read_bytes() == checkpoint  # not trained again
