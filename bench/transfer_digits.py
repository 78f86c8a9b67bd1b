"""Transfer on real data, timed: LeNet-5 trained on MNIST digits 0-4, then each transfer mode and
training from scratch on 25 images (5 per digit) of the held-out digits 5-9 (500 test images), per seed.

The same experiment as tests/transfer/test_real_data.py, printed as a markdown table for
docs/transfer.md. Usage: python bench/transfer_digits.py [--mnist DIR] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from cnnlab import TrainConfig, train, transfer
from cnnlab.data import load_dataset
from cnnlab.data.memory import DataSplits

SOURCE_DIGITS, TARGET_DIGITS = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
COMMON = {"epochs": 8, "batch_size": 32, "lr": 0.05, "device": "cpu", "progress": False}
MODES = ("head", "last:2", "full")


def splits(mnist: DataSplits, chosen: tuple[int, ...], count: int, seed: int) -> DataSplits:
    train_set = mnist.train.sample_classes(list(chosen), count, seed)
    test_set = mnist.test.sample_classes(list(chosen), 500)
    pixels = train_set.images.float() / 255
    return DataSplits(
        "digits", train_set, test_set, (pixels.mean().item(),), (pixels.std().item(),)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mnist", default=str(Path(__file__).parents[1] / ".." / "shared/data/mnist")
    )
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    mnist = load_dataset(f"mnist:{args.mnist}")
    folder = Path(tempfile.mkdtemp(prefix="cnnlab-transfer-digits-"))
    started = time.perf_counter()
    source_config = TrainConfig(
        model="lenet5_modern", epochs=2, device="cpu", out=str(folder / "src")
    )
    source = train(source_config, data=splits(mnist, SOURCE_DIGITS, 6000, 0), progress=False)
    print(f"source: test accuracy {source.final['test_acc']:.4f} on digits 0-4, "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in (*MODES, "scratch")}
    for seed in seeds:
        target = splits(mnist, TARGET_DIGITS, 25, seed)
        for mode in (*MODES, "scratch"):
            out = str(folder / f"{mode.replace(':', '')}-{seed}")
            started = time.perf_counter()
            if mode == "scratch":
                config = TrainConfig(model="lenet5_modern", seed=seed, out=out, **{
                    k: v for k, v in COMMON.items() if k != "progress"})  # fmt: skip
                result = train(config, data=target, progress=False)
            else:
                result = transfer(
                    source.out_dir, mode=mode, splits=target, seed=seed, out=out, **COMMON
                )
            results[mode].append((result.final["test_acc"], time.perf_counter() - started))
    print("| mode | test accuracy per seed | mean ± std | seconds per run |")
    print("|---|---|---|---|")
    for mode, rows in results.items():
        accuracies = [accuracy for accuracy, _ in rows]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        print(f"| {mode} | {', '.join(f'{a:.3f}' for a in accuracies)} | "
              f"{statistics.mean(accuracies):.3f} ± {spread:.3f} | "
              f"{statistics.mean(seconds for _, seconds in rows):.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
