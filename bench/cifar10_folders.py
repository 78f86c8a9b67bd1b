"""CIFAR-10 as a folder of JPEG files: cnnlab's decoded-once cache against torchvision's pipeline.

The JPEG archives are unpacked into a temporary folder; then, one after the other,
  - the reference `reference_imagefolder.py`: `ImageFolder` + `DataLoader` with 2 workers,
    decoding every image in every epoch, a LeNet-5-sized CNN (ReLU, max pooling), SGD with
    momentum 0.9 at lr 0.05, batch 128;
  - cnnlab on `folder:DIR` with a fresh `CNNLAB_CACHE`, so its first epoch pays for decoding
    into the cache (`load_dataset` is timed on its own too), with the same hyper-parameters,
    the same normalization (0.5, 0.25) and, for `lenet5_modern`, the reference's network
    (batch norm off) and its initialization (PyTorch's layer defaults);
  - cnnlab again, one epoch, on the now warm cache (its load time).
Targets: later epochs >= 2.5x faster than the reference on a CPU; with `--device cuda` both
sides train ResNet-18 on the GPU (the reference with `--arch resnet18 --device cuda`) and the
goal is >= 5x; test accuracies the same within noise. Without CUDA the GPU run is SKIPPED.
Both sides train in float32 (the reference has no mixed precision). On the GPU cnnlab also
trains once in bf16 with channels-last, reported as a second pairing whose name says that the
precisions differ.

Usage: python bench/cifar10_folders.py [--epochs 3] [--device cuda] [--strict]
The last line printed is a JSON summary (targets, results, provenance).
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path
from statistics import fmean

import torch
from common import (
    Skipped,
    Target,
    TimedRun,
    argument_parser,
    child_env,
    cnnlab_command,
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

from cnnlab.engine.config import TrainConfig

ARCHIVES = ("cifar10_train_jpg.tar.gz", "cifar10_test_jpg.tar.gz")
SPEEDUP = {"cpu": 2.5, "cuda": 5.0}  # later epochs, reference seconds / cnnlab seconds
ACCURACY_NOISE = 2.0  # points; either side's 3-epoch accuracy varies about ±0.5 over seeds
REFERENCE_NORMALIZATION = ([0.5], [0.25])  # the reference's transforms.Normalize
# cnnlab's model -> the reference's `--arch` with the same network
REFERENCE_ARCH = {"lenet5_modern": "lenet", "resnet18": "resnet18"}
DEFAULT_MODEL = {"cpu": "lenet5_modern", "cuda": "resnet18"}


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder with the two CIFAR-10 JPEG archives")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=32, help="image side for both sides")
    parser.add_argument(
        "--model",
        choices=tuple(REFERENCE_ARCH),
        help="the network on both sides (default: lenet5_modern on cpu, resnet18 on cuda)",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-load", type=float, default=1.5, help="wait for a lower load average first"
    )
    args = parser.parse_args()
    args.model = args.model or DEFAULT_MODEL[args.device]
    return args


def unpack(archives: Path, into: Path) -> Path:
    """Both archives unpacked under `into`; the tree root holding `train/` and `test/`."""
    for name in ARCHIVES:
        path = archives / name
        if not path.is_file():
            raise Skipped(f"{path.resolve()} not found; nothing to benchmark")
        with tarfile.open(path) as archive:
            archive.extractall(into, filter="data")
    return into / "cifar10"


def cnnlab_config(
    args: argparse.Namespace, tree: Path, out: Path, bf16: bool = False
) -> TrainConfig:
    """The reference's hyper-parameters in cnnlab's terms (float32 unless `bf16`)."""
    mean_, std = REFERENCE_NORMALIZATION
    return TrainConfig(
        model=args.model,
        # lenet5_modern without batch norm is the reference's network layer for layer.
        model_options={"batch_norm": False} if args.model == "lenet5_modern" else {},
        data=f"folder:{tree}",
        image_size=args.size,
        epochs=args.epochs,
        batch_size=128,
        optimizer="momentum",
        lr=0.05,
        momentum=0.9,
        weight_decay=0.0,
        schedule="constant",
        # The reference's small CNN keeps PyTorch's layer defaults; lenet5_modern's own He init,
        # larger, costs it ~10 points in 3 epochs at this lr without batch norm. ResNet-18 has
        # torchvision's initialization on both sides (cnnlab's `default`).
        init="pytorch" if args.model == "lenet5_modern" else "default",
        mean=mean_,
        std=std,
        seed=args.seed,
        device=args.device,
        amp=bf16,
        channels_last=bf16,
        out=str(out),
    )


def compare(
    reference: TimedRun, first: TimedRun, cached: TimedRun, device: str, bf16: TimedRun | None
) -> tuple:
    """Epoch times, load times and accuracies of both sides; the targets.

    `bf16`: cnnlab's run in bf16 with channels-last (GPU only), a second pairing.
    """
    ref = reference.rows[-1]
    ref_epochs = [row for _, row in reference.epochs()]
    epochs = [row for _, row in first.epochs()]
    load = first.load_seconds()
    cached_load = cached.load_seconds()
    # cnnlab's epoch seconds include its test-set evaluation; the reference's do not.
    cnnlab_first = load + epochs[0]["seconds"]
    cnnlab_later = fmean([row["seconds"] for row in epochs[1:] or epochs])
    speedup = ref["later_epoch_s"] / cnnlab_later
    accuracy_diff = 100 * (epochs[-1]["test_acc"] - ref["test_acc"])
    print_table(
        "Per epoch (reference: training only; cnnlab: training and evaluation)",
        ["epoch", "ref s", "ref test acc", "cnnlab s", "cnnlab test acc"],
        [
            [row["epoch"], theirs["seconds"], theirs["test_acc"], row["seconds"], row["test_acc"]]
            for theirs, row in zip(ref_epochs, epochs, strict=True)
        ],
    )
    ref_first, ref_later = ref["first_epoch_s"], ref["later_epoch_s"]
    ref_wall, wall = reference.wall_seconds, first.wall_seconds
    print_table(
        "Both sides",
        ["", "reference", "cnnlab", "reference / cnnlab"],
        [
            ["load_dataset, fresh cache s", "-", load, "-"],
            [
                "first epoch s (cnnlab: + load)",
                ref_first,
                cnnlab_first,
                ref_first / cnnlab_first,
            ],
            ["later epochs s (mean)", ref_later, cnnlab_later, speedup],
            ["process wall-clock s", ref_wall, wall, ref_wall / wall],
            ["final test acc", ref["test_acc"], epochs[-1]["test_acc"], "-"],
            ["load_dataset, warm cache s", "-", cached_load, "-"],
        ],
    )
    targets = [
        Target.at_least("later epochs, reference/cnnlab, both float32", speedup, SPEEDUP[device]),
        Target.within(
            "final test accuracy cnnlab - reference", accuracy_diff, 0.0, ACCURACY_NOISE, " points"
        ),
    ]
    if bf16 is not None:
        bf16_later = fmean([row["seconds"] for _, row in bf16.epochs()[1:] or bf16.epochs()])
        targets.append(
            Target.at_least(
                "later epochs, reference float32 / cnnlab bf16 channels-last (precisions differ)",
                ref["later_epoch_s"] / bf16_later,
                SPEEDUP[device],
            )
        )
    results = {
        "reference": ref,
        "reference_epochs": ref_epochs,
        "cnnlab_load_seconds": load,
        "cnnlab_cached_load_seconds": cached_load,
        "cnnlab_first_epoch_with_load_seconds": cnnlab_first,
        "cnnlab_later_epoch_seconds": cnnlab_later,
        "cnnlab_wall_seconds": wall,
        "reference_wall_seconds": ref_wall,
        "cnnlab_epochs": [
            {key: row[key] for key in ("epoch", "seconds", "images_per_sec", "test_acc")}
            for row in epochs
        ],
    }
    return targets, results


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise Skipped(
            "CUDA is not available here; the GPU target (ResNet-18 at 32x32 on both sides, "
            "cnnlab >= 5x faster than the reference) is not measured"
        )
    archives = args.data or shared_path("data/cifar10", "CIFAR-10 JPEG archives")
    if args.max_load > 0:
        wait_for_quiet_machine(args.max_load)
    meta = provenance({"both": args.seed}, device=args.device)
    with tempfile.TemporaryDirectory(prefix="cnnlab-cifar10-") as folder:
        workdir = Path(folder)
        started = time.perf_counter()
        tree = unpack(archives, workdir / "images")
        console.print(f"unpacked into {tree} in {time.perf_counter() - started:.1f} s")
        console.print(f"reference_imagefolder.py, {args.epochs} epochs ...")
        reference = run_timed(
            reference_command(
                "reference_imagefolder.py",
                "--train",
                tree / "train",
                "--test",
                tree / "test",
                "--size",
                args.size,
                "--epochs",
                args.epochs,
                "--seed",
                args.seed,
                "--arch",
                REFERENCE_ARCH[args.model],
                "--device",
                args.device,
                "--per-epoch",
            )  # fmt: skip
        )
        env = child_env(CNNLAB_CACHE=str(workdir / "cache"))
        config = cnnlab_config(args, tree, workdir / "run")
        console.print(f"cnnlab {args.model}, fresh cache ...")
        first = run_timed(cnnlab_command(config, workdir, "first"), env=env)
        console.print("cnnlab, warm cache, one epoch ...")
        again = config.replace(epochs=1, out=str(workdir / "again"))
        cached = run_timed(cnnlab_command(again, workdir, "again"), env=env)
        bf16 = None
        if args.device == "cuda":
            console.print("cnnlab, bf16 and channels-last ...")
            mixed = cnnlab_config(args, tree, workdir / "bf16", bf16=True)
            bf16 = run_timed(cnnlab_command(mixed, workdir, "bf16"), env=env)
        targets, results = compare(reference, first, cached, args.device, bf16)
    results["model"] = args.model
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    print_summary("cifar10_folders", targets, results, meta)


if __name__ == "__main__":
    run_main(main)
