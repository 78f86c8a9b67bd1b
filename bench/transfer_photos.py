"""Transfer from built-in weights against training from scratch, on two small photo tasks.

For each task and seed, `cnnlab transfer --from SOURCE` runs with the default recipe (only the
data, the image size and the seed given), then the same network trains from scratch with the
transferred run's own config (same data, epochs, batch, optimizer, schedule, augmentation,
image size and normalization; only the starting weights differ). Tasks:
  - ants/bees (`../shared/data/hymenoptera/hymenoptera_data`): its official 245 training
    images, scored on its 153 `val/` images, at `--size` px (default 64);
  - CIFAR-10 cat against dog: the first 1,000 training images of each class, upsampled to
    64 px, scored on the 2,000 test images of the two classes.
Targets (issue 19): on ants/bees, transfer beats scratch by >= 5 points (mean of the seeds)
at <= 5 min per run; on cat vs dog, transfer >= 0.85 at <= 5 min per run. A task whose data
is absent is NOT MEASURED.

Usage: python bench/transfer_photos.py [--from resnet20.cifar10] [--seeds 0,1,2] [--strict]
The last line printed is a JSON summary (targets, results, provenance).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from statistics import fmean, stdev

from common import (
    SHARED,
    Skipped,
    Target,
    argument_parser,
    console,
    print_summary,
    print_table,
    provenance,
    run_main,
)

from cnnlab import TrainConfig, train, transfer

MINUTES_PER_RUN = 5.0
ANTS_BEES_MARGIN = 0.05  # transfer - scratch, test accuracy
CATS_DOGS_TARGET = 0.85
CATS_DOGS_PER_CLASS = 1000


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", default="resnet20.cifar10", help="weights")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--size", type=int, default=64, help="image side of ants/bees")
    parser.add_argument(
        "--cifar10", type=Path, help="an unpacked CIFAR-10 tree with train/ and test/ folders"
    )
    parser.add_argument("--skip-cats-dogs", action="store_true")
    return parser.parse_args()


def cats_dogs_tree(cifar10: Path | None, workdir: Path) -> Path:
    """train/{cat,dog} (the first 1,000 files of each) and test/{cat,dog} (all), as links."""
    if cifar10 is None:
        archives = SHARED / "data" / "cifar10"
        if not archives.is_dir():
            raise Skipped(f"CIFAR-10 not found at {archives.resolve()}")
        for name in ("cifar10_train_jpg.tar.gz", "cifar10_test_jpg.tar.gz"):
            with tarfile.open(archives / name) as archive:
                archive.extractall(workdir / "cifar10-unpacked", filter="data")
        cifar10 = workdir / "cifar10-unpacked" / "cifar10"
    tree = workdir / "cats-dogs"
    for split in ("train", "test"):
        for animal in ("cat", "dog"):
            files = sorted((cifar10 / split / animal).iterdir())
            if split == "train":
                files = files[:CATS_DOGS_PER_CLASS]
            target = tree / split / animal
            target.mkdir(parents=True)
            for file in files:
                os.symlink(file.resolve(), target / file.name)
    return tree


def one_pair(source: str, data: str, size: int, seed: int, out: Path) -> dict:
    """Transfer with the default recipe, then scratch with the transferred run's config."""
    started = time.perf_counter()
    moved = transfer(
        source, data, image_size=size, seed=seed, out=str(out / "transfer"), progress=False
    )
    transfer_seconds = time.perf_counter() - started
    scratch_config = TrainConfig.from_yaml(moved.out_dir / "config.yaml").replace(
        out=str(out / "scratch")
    )
    started = time.perf_counter()
    scratch = train(scratch_config, progress=False)
    return {
        "seed": seed,
        "epochs": moved.config.epochs,
        "transfer_acc": moved.final["test_acc"],
        "transfer_seconds": transfer_seconds,
        "scratch_acc": scratch.final["test_acc"],
        "scratch_seconds": time.perf_counter() - started,
    }


def run_task(name: str, source: str, data: str, size: int, seeds: list[int], workdir: Path):
    console.print(f"{name}: transfer from {source} and scratch, {len(seeds)} seed(s) ...")
    rows = [one_pair(source, data, size, seed, workdir / f"{name}-{seed}") for seed in seeds]
    print_table(
        f"{name} at {size} px",
        ["seed", "epochs", "transfer acc", "transfer s", "scratch acc", "scratch s"],
        [list(row.values()) for row in rows],
    )
    return rows


def spread(values: list[float]) -> str:
    return f"{fmean(values):.4f} ± {stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def main() -> None:
    args = parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    meta = provenance({"transfer and scratch": seeds})
    targets, results = [], {}
    limit = MINUTES_PER_RUN * 60
    workdir = Path(tempfile.mkdtemp(prefix="cnnlab-transfer-photos-"))
    try:
        ants_bees = SHARED / "data" / "hymenoptera" / "hymenoptera_data"
        if ants_bees.is_dir():
            rows = run_task(
                "ants-bees", args.source, f"folder:{ants_bees}", args.size, seeds, workdir
            )
            gain = fmean(r["transfer_acc"] for r in rows) - fmean(r["scratch_acc"] for r in rows)
            slowest = max(r["transfer_seconds"] for r in rows) / 60
            note = (
                f"transfer {spread([r['transfer_acc'] for r in rows])}, "
                f"scratch {spread([r['scratch_acc'] for r in rows])}"
            )
            targets += [
                Target.at_least("ants/bees, transfer - scratch", gain, ANTS_BEES_MARGIN, "", note),
                Target.at_most("ants/bees, slowest transfer run", slowest, MINUTES_PER_RUN, " min"),
            ]
            results["ants_bees"] = rows
        else:
            targets.append(
                Target.not_measured("ants/bees", "transfer - scratch >= 0.05", "no data")
            )
        if args.skip_cats_dogs:
            targets.append(Target.not_measured("cat vs dog", ">= 0.85", "--skip-cats-dogs"))
        else:
            tree = cats_dogs_tree(args.cifar10, workdir)
            rows = run_task("cats-dogs", args.source, f"folder:{tree}", 64, seeds, workdir)
            accuracy = fmean(r["transfer_acc"] for r in rows)
            slowest = max(r["transfer_seconds"] for r in rows) / 60
            note = f"scratch {spread([r['scratch_acc'] for r in rows])}"
            targets += [
                Target.at_least("cat vs dog, transfer", accuracy, CATS_DOGS_TARGET, "", note),
                Target.at_most(
                    "cat vs dog, slowest transfer run", slowest, MINUTES_PER_RUN, " min"
                ),
            ]
            results["cats_dogs"] = rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["source"], results["limit_seconds"] = args.source, limit
    print_summary("transfer_photos", targets, results, meta)


if __name__ == "__main__":
    run_main(main)
