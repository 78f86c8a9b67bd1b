"""Ablation-study speed: `cnnlab study run` against the reference recipe run once per config.

Parts (each can be skipped):
  study    5 learning rates x 4 seeds x 2 epochs of the textbook LeNet-5 recipe on the first
           8,000 Fashion-MNIST training images (tested on the official 10,000): the reference
           `reference_lenet.py` run 20 times one after another, against one
           `cnnlab study run --workers 2` of the same 20 configurations, each timed end to end
           as a child process (start-up, data loading and every run included). Targets: at
           least 3x faster, and each learning rate's mean test accuracy within noise of the
           reference's (|difference| <= 3 standard errors of the difference + 1 point).
  batched  The textbook LeNet-5 with 5 seeds, one point of one epoch at batch 2, 16 and 256:
           `--batched-seeds` against the same 5 runs one by one, each a `run_study` in this
           process on data already loaded, with the same threads (evaluation on a test split
           1/6 the size of the training images, Fashion-MNIST's own ratio, included); each side
           `--repeats` times in mirrored order, the fastest kept. Targets: >= 2.5x at batch 2 and 16, >= 1.0x at 256.
           The GPU target (10 seeds >= 5x seed by seed) is NOT MEASURED without a GPU.

           `--vmap` also times the vmap form (networks without a grouped form), reported only.

Usage: python bench/study_speed.py [--skip-study] [--skip-batched] [--vmap] [--strict]
           [--json FILE] [--threads N]
The last line printed is a JSON summary (targets, results, provenance with the date);
`--json` also writes it to FILE; `--strict` exits 1 when any target FAILs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import fmean, stdev

import torch
import yaml
from common import (
    Target,
    console,
    print_summary,
    print_table,
    provenance,
    reference_command,
    run_main,
    run_timed,
    shared_path,
    wait_for_quiet_machine,
)

from cnnlab.data.datasets import load_dataset
from cnnlab.studies import StudySpec, run_study
from cnnlab.studies.grouped import GroupedLayers
from cnnlab.studies.store import StudyStore

LEARNING_RATES = (0.1, 0.5, 0.9, 1.3, 1.7)
TRAIN_IMAGES = 8000
EPOCHS = 2
SPEEDUP = 3.0
GPU_SPEEDUP = 5.0
# Batch size -> (training images of the one-epoch point, the speed-up --batched-seeds must reach)
BATCHED_TARGETS = {2: (1_200, 2.5), 16: (6_000, 2.5), 256: (12_000, 1.0)}
# Test images per training image: Fashion-MNIST's own 10,000 to 60,000, so evaluation weighs in
# each epoch as much as in the full study
TEST_SHARE = 1 / 6


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="Fashion-MNIST IDX folder (default: shared)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per learning rate")
    parser.add_argument("--workers", type=int, default=2, help="study worker processes")
    parser.add_argument("--batched-seeds", type=int, default=5, help="seeds of the batched part")
    parser.add_argument("--skip-study", action="store_true")
    parser.add_argument("--skip-batched", action="store_true")
    parser.add_argument(
        "--max-load", type=float, default=1.5, help="wait for a lower load average first"
    )
    parser.add_argument(
        "--vmap", action="store_true", help="also time the vmap form of the batched ensemble"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="times of each batched-part side (fastest kept)"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads of both sides")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any target FAILs")
    parser.add_argument("--json", type=Path, help="also write the JSON summary to this file")
    return parser.parse_args()


def textbook_base(spec: str, epochs: int) -> dict:
    """The reference's recipe as a study base (it feeds raw [0, 1] pixels)."""
    return {
        "model": "lenet5",
        "model_options": {"activation": "sigmoid", "pooling": "avg"},
        "data": spec,
        "epochs": epochs,
        "batch_size": 256,
        "optimizer": "sgd",
        "lr": 0.9,
        "weight_decay": 0.0,
        "schedule": "constant",
        "init": "xavier_weights",  # the reference: Xavier weights, PyTorch default biases
        "mean": [0.0],
        "std": [1.0],
        "device": "cpu",
    }


def run_references(data: Path, seeds: int) -> tuple[float, dict[float, list[float]]]:
    """The reference once per (lr, seed), one after another: total seconds, accuracies per lr."""
    accuracies: dict[float, list[float]] = {lr: [] for lr in LEARNING_RATES}
    started = time.perf_counter()
    for lr in LEARNING_RATES:
        for seed in range(seeds):
            options = ["--data", data, "--train-count", TRAIN_IMAGES, "--epochs", EPOCHS]
            run = run_timed(
                reference_command("reference_lenet.py", *options, "--lr", lr, "--seed", seed)
            )
            accuracies[lr].append(run.rows[-1]["test_acc"])
            console.print(f"reference lr {lr} seed {seed}: test acc {run.rows[-1]['test_acc']:.4f}")
    return time.perf_counter() - started, accuracies


def run_cnnlab_study(spec: str, seeds: int, workers: int, workdir: Path) -> tuple[float, dict]:
    """`cnnlab study run` as a child process: total seconds, accuracies per lr."""
    path = workdir / "study.yaml"
    study = {
        "base": textbook_base(spec, EPOCHS),
        "factors": {"lr": list(LEARNING_RATES)},
        "seeds": seeds,
        "train_images": TRAIN_IMAGES,
    }
    path.write_text(yaml.safe_dump(study))
    out = workdir / "study"
    command = [sys.executable, "-m", "cnnlab", "study", "run", str(path), "--out", str(out)]
    run = run_timed([*command, "--workers", str(workers)])
    store = StudyStore(out)
    accuracies: dict[float, list[float]] = {lr: [] for lr in LEARNING_RATES}
    for record in store.runs():
        accuracies[record.config["lr"]].append(record.final["test_acc"])
    store.close()
    return run.wall_seconds, accuracies


def compare_study(args: argparse.Namespace, data: Path, workdir: Path) -> tuple[list[Target], dict]:
    spec = f"fashion-mnist:{data.resolve()}"
    console.print(
        f"reference_lenet.py, {len(LEARNING_RATES) * args.seeds} runs one after another ..."
    )
    ref_seconds, ref = run_references(data, args.seeds)
    console.print(f"cnnlab study run --workers {args.workers} ...")
    seconds, ours = run_cnnlab_study(spec, args.seeds, args.workers, workdir)
    rows, within = [], 0
    for lr in LEARNING_RATES:
        noise = 3 * math.sqrt(_var(ref[lr]) / len(ref[lr]) + _var(ours[lr]) / len(ours[lr])) + 0.01
        difference = fmean(ours[lr]) - fmean(ref[lr])
        within += abs(difference) <= noise
        rows.append(
            [lr, fmean(ref[lr]), _std(ref[lr]), fmean(ours[lr]), _std(ours[lr]), difference, noise]
        )
    print_table(
        f"Mean test accuracy over {args.seeds} seeds, {EPOCHS} epochs on {TRAIN_IMAGES} images",
        ["lr", "reference", "± std", "cnnlab", "± std", "difference", "noise bound"],
        rows,
    )
    speedup = ref_seconds / seconds
    print_table(
        f"End to end, {len(LEARNING_RATES) * args.seeds} configurations",
        ["", "seconds"],
        [
            ["reference, one after another", ref_seconds],
            [f"cnnlab study, {args.workers} workers", seconds],
        ],
    )
    targets = [
        Target.at_least("study end to end, reference/cnnlab", speedup, SPEEDUP),
        Target(
            "learning rates whose mean test accuracy is within noise of the reference's",
            within,
            f"= {len(LEARNING_RATES)}",
            within == len(LEARNING_RATES),
            "",
        ),
    ]
    results = {
        "reference_seconds": ref_seconds,
        "cnnlab_seconds": seconds,
        "speedup": speedup,
        "reference_test_acc": {str(k): v for k, v in ref.items()},
        "cnnlab_test_acc": {str(k): v for k, v in ours.items()},
    }
    return targets, results


def compare_batched(
    args: argparse.Namespace, data: Path, workdir: Path
) -> tuple[list[Target], dict]:
    """One point per batch size: `--batched-seeds` against one by one, same process and data."""
    full = load_dataset(f"fashion-mnist:{data.resolve()}")
    threads = torch.get_num_threads()  # main sets --threads for both sides
    targets, rows, results = [], [], {}
    for batch, (images, minimum) in BATCHED_TARGETS.items():
        splits = copy.copy(full)
        splits.test = full.test.subset(torch.arange(round(images * TEST_SHARE)))
        study = StudySpec.from_dict(
            {
                "base": {**textbook_base("fashion-mnist", 1), "batch_size": batch},
                "factors": {"lr": [0.9]},
                "seeds": args.batched_seeds,
                "train_images": images,
            }
        )
        sides = [("one by one", False), ("batched", True)]
        sides += [("batched, vmap form", True)] if args.vmap else []
        # Each side `--repeats` times, in mirrored order (A B B A ...), its fastest time kept:
        # the load of a shared machine changes between the sides, and only ever slows them.
        order = [side for turn in range(args.repeats) for side in sides[:: 1 - 2 * (turn % 2)]]
        times: dict[str, list[float]] = {name: [] for name, _ in sides}
        for turn, (name, batched) in enumerate(order):
            started = time.perf_counter()
            with vmap_form(name.endswith("vmap form")):
                run_study(
                    study,
                    workdir / f"b{batch}-{turn}",
                    data=splits,
                    threads=threads,
                    batched_seeds=batched,
                    log=None,
                )
            times[name].append(time.perf_counter() - started)
        seconds = {name: min(values) for name, values in times.items()}
        speedup = seconds["one by one"] / seconds["batched"]
        vmap = seconds["one by one"] / seconds["batched, vmap form"] if args.vmap else None
        rows.append([batch, images, *seconds.values(), speedup, "" if vmap is None else vmap])
        results[f"batch_{batch}"] = {
            "train_images": images,
            "seconds": seconds,
            "all_seconds": times,
            "speedup": speedup,
            "vmap_speedup": vmap,
        }
        targets.append(
            Target.at_least(
                f"--batched-seeds at batch {batch}, one by one/batched", speedup, minimum
            )
        )
    print_table(
        f"LeNet-5, {args.batched_seeds} seeds x 1 epoch, test images 1/6 of the train images "
        f"(CPU, {threads} threads)",
        ["batch", "train images", "one by one s", "batched s"]
        + (["vmap form s"] if args.vmap else [])
        + ["speed-up", "vmap form speed-up"],
        rows,
    )
    targets.append(
        Target.not_measured(
            "--batched-seeds with 10 seeds on a GPU, seed by seed/batched",
            f">= {GPU_SPEEDUP:g}x",
            "no GPU on this machine",
        )
    )
    results["gpu_speedup"] = "not measured"
    return targets, results


@contextlib.contextmanager
def vmap_form(active: bool) -> Iterator[None]:
    """While active, LeNet-5's ensembles train in the vmap form, as networks without a grouped
    form do (what `--batched-seeds auto`'s rule for them is measured from)."""
    if not active:
        yield
        return
    grouped_of = GroupedLayers.__dict__["of"]  # the classmethod itself
    GroupedLayers.of = classmethod(lambda cls, model, members: None)
    try:
        yield
    finally:
        GroupedLayers.of = grouped_of


def _var(values: list[float]) -> float:
    return stdev(values) ** 2 if len(values) > 1 else 0.0


def _std(values: list[float]) -> float:
    return stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    args = parse_args()
    data = args.data or shared_path("data/fashion_mnist", "Fashion-MNIST")
    torch.set_num_threads(args.threads)
    if args.max_load > 0:
        wait_for_quiet_machine(args.max_load)
    meta = provenance(
        {"study": list(range(args.seeds)), "batched": list(range(args.batched_seeds))}
    )
    targets, results = [], {}
    with tempfile.TemporaryDirectory(prefix="cnnlab-study-bench-") as folder:
        workdir = Path(folder)
        if not args.skip_study:
            part, results["study"] = compare_study(args, data, workdir)
            targets += part
        if not args.skip_batched:
            part, results["batched"] = compare_batched(args, data, workdir)
            targets += part
    print_summary("study_speed", targets, results, meta)
    if args.json:
        summary = {"benchmark": "study_speed", "targets": [t.to_dict() for t in targets]}
        summary |= {"results": results, "provenance": meta}
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    if args.strict and any(target.passed is False for target in targets):
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
