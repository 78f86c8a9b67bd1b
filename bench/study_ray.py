"""Studies on Ray against local workers, on the same cores: the overhead of `--ray`.

The same 12-run LeNet-5 study (4 learning rates x 3 seeds x 2 epochs of the textbook recipe on
the first 8,000 Fashion-MNIST training images) is run twice, each as one timed child process
(start-up, data decoding and every run included), each in a fresh folder:
  local  `cnnlab study run --workers 2`
  ray    `cnnlab study run --ray auto` on a Ray cluster of two nodes started here beforehand
         (`ray start --head --num-cpus 1` and `ray start --address ... --num-cpus 1`, each with
         its own temp folder and the cluster's own token), torn down afterwards in any case.
Target: the Ray study takes at most 1.15x the local one's wall time. Both must finish every
run `done`. The lost work after a node is killed is checked by tests/studies/test_ray.py (the
retried run resumes from the epoch before the one in flight); it is not timed here.

Usage: python bench/study_ray.py [--seeds 3] [--max-load 1.5]
The last line printed is a JSON summary (targets, results, provenance).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from common import (
    Skipped,
    Target,
    child_env,
    console,
    print_summary,
    print_table,
    provenance,
    run_main,
    run_timed,
    shared_path,
    wait_for_quiet_machine,
)
from study_speed import textbook_base

from cnnlab.studies.store import StudyStore

LEARNING_RATES = (0.1, 0.5, 0.9)
TRAIN_IMAGES = 8000
EPOCHS = 2
OVERHEAD = 1.15
MARKER = "CNNLAB_BENCH_RAY_NODE"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="Fashion-MNIST IDX folder (default: shared)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per point (4 points)")
    parser.add_argument(
        "--max-load", type=float, default=1.5, help="wait for a lower load average first"
    )
    return parser.parse_args()


@contextlib.contextmanager
def two_node_cluster(port: int) -> Iterator[dict[str, str]]:
    """A head and a worker node of one CPU each; yields the environment that joins them."""
    ray = Path(sys.executable).with_name("ray")
    if not ray.is_file():
        raise Skipped("Ray is not installed (pip install 'cnnlab[ray]')")
    root = Path(tempfile.mkdtemp(prefix="cnnlab-bench-ray-", dir="/tmp"))
    environment = child_env(
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_ADDRESS=f"127.0.0.1:{port}",
        OMP_NUM_THREADS="1",
    )
    nodes = {"head": ["--head", f"--port={port}", "--include-dashboard=false"]}
    nodes["worker"] = [f"--address=127.0.0.1:{port}"]
    try:
        for name, options in nodes.items():
            command = [str(ray), "start", *options, "--num-cpus=1", "--num-gpus=0"]
            command += [f"--temp-dir={root / name}", "--disable-usage-stats"]
            subprocess.run(
                command, env={**environment, MARKER: str(root)}, check=True, capture_output=True
            )
        yield environment
    finally:
        subprocess.run([str(ray), "stop", "--force"], env=environment, capture_output=True)
        for pid in _processes_marked(f"{MARKER}={root}".encode()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def _processes_marked(marker: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def run_study(spec: Path, out: Path, options: list[str], env: dict[str, str]) -> float:
    """`cnnlab study run SPEC --out OUT OPTIONS` as a timed child; its wall seconds."""
    command = [sys.executable, "-m", "cnnlab", "study", "run", str(spec), "--out", str(out)]
    seconds = run_timed([*command, *options], env=env).wall_seconds
    store = StudyStore(out)
    statuses = [record.status for record in store.runs()]
    store.close()
    if statuses != ["done"] * len(statuses):
        raise RuntimeError(f"{out}: not every run is done: {statuses}")
    return seconds


def main() -> None:
    args = parse_args()
    data = args.data or shared_path("data/fashion_mnist", "Fashion-MNIST")
    load = wait_for_quiet_machine(args.max_load)
    workdir = Path(tempfile.mkdtemp(prefix="cnnlab-bench-study-ray-"))
    try:
        spec = workdir / "study.yaml"
        study = {
            "base": textbook_base(f"fashion-mnist:{data.resolve()}", EPOCHS),
            "factors": {"lr": list(LEARNING_RATES)},
            "seeds": args.seeds,
            "train_images": TRAIN_IMAGES,
        }
        study["base"]["lr"] = 0.3  # the base point is a fourth value: 4 points x seeds
        spec.write_text(yaml.safe_dump(study))
        runs = (len(LEARNING_RATES) + 1) * args.seeds
        console.print(f"{runs} runs with `cnnlab study run --workers 2` ...")
        local = run_study(
            spec, workdir / "local", ["--workers", "2"], child_env(OMP_NUM_THREADS="1")
        )
        console.print(f"the same {runs} runs with `--ray auto` on a two-node cluster ...")
        with two_node_cluster(port=46379) as environment:
            ray = run_study(spec, workdir / "ray", ["--ray", "auto"], environment)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(
        f"{runs} runs, 2 CPUs", ["engine", "wall s"], [["--workers 2", local], ["--ray auto", ray]]
    )
    targets = [
        Target.at_most("Ray wall time / local workers' (same 2 cores)", ray / local, OVERHEAD, "x"),
        Target.not_measured(
            "work lost when a node is killed mid-run",
            "at most the epoch in flight",
            "checked by tests/studies/test_ray.py (resumed from the last epoch checkpoint)",
        ),
    ]
    results = {"runs": runs, "local_seconds": local, "ray_seconds": ray, "load_at_start": load}
    print_summary("study_ray", targets, results, provenance({"seeds": list(range(args.seeds))}))


if __name__ == "__main__":
    run_main(main)
