"""How `examples/fashion_mnist_fast.yaml` was chosen: candidates scored on a validation split.

Every candidate trains on 50,000 of Fashion-MNIST's 60,000 training images and is scored on the
other 10,000 (a stratified, seeded holdout; the test set is never looked at), once per choice
seed. The rule, fixed before the runs: the highest mean validation accuracy wins; a candidate
within 0.1 points of it with fewer epochs wins instead (the recipe is meant to be fast).
`bench/lenet_fashion_mnist.py` then reports the chosen recipe's test accuracy on other seeds.

The children run on one thread: only their accuracy counts here, and on shared cores one thread
is the least disturbed by the neighbours (docs/benchmarks.md, "Measuring on shared cores").

Usage: python bench/choose_fast_recipe.py [--seeds 0,1]
The last line printed is a JSON summary (candidates, validation accuracies, the choice).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from statistics import fmean

from common import (
    REPO_ROOT,
    argument_parser,
    child_env,
    cnnlab_command,
    console,
    print_table,
    provenance,
    run_main,
    run_timed,
    shared_path,
    wait_for_quiet_machine,
)

from cnnlab.engine.config import TrainConfig

BASE = REPO_ROOT / "examples" / "fashion_mnist_fast.yaml"
HOLDOUT = 1 / 6  # 10,000 of the 60,000 training images, as many as the test set
TIE_POINTS = 0.1
# Changes to the base recipe (lenet5_modern, batch 128, Nesterov momentum 0.9, one-cycle at
# peak lr 0.1, weight decay 5e-4), each a hypothesis about a network this small.
CANDIDATES: dict[str, dict] = {
    "no augmentation, 12 epochs": {"augment": [], "epochs": 12},
    "flip, 12 epochs": {"augment": ["flip"], "epochs": 12},
    "flip, 20 epochs": {"augment": ["flip"], "epochs": 20},
    "flip + label smoothing 0.1, 12 epochs": {
        "augment": ["flip"],
        "epochs": 12,
        "label_smoothing": 0.1,
    },
}


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="Fashion-MNIST IDX folder (default: shared)")
    parser.add_argument("--seeds", default="0,1", help="the choice's seeds")
    parser.add_argument(
        "--max-load", type=float, default=1.5, help="wait for a lower load average first"
    )
    return parser.parse_args()


def choose(scores: dict[str, float]) -> str:
    """The best mean validation accuracy, or a shorter candidate within `TIE_POINTS` of it."""
    best = max(scores.values())
    close = [name for name, score in scores.items() if 100 * (best - score) <= TIE_POINTS]
    return min(close, key=lambda name: (CANDIDATES[name]["epochs"], -scores[name]))


def main() -> None:
    args = parse_args()
    data = args.data or shared_path("data/fashion_mnist", "Fashion-MNIST")
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    if args.max_load > 0:
        wait_for_quiet_machine(args.max_load)
    meta = provenance({"choice": seeds})
    base = TrainConfig.from_yaml(BASE).replace(data=f"fashion-mnist:{data.resolve()}")
    accuracies: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="cnnlab-choose-") as folder:
        workdir = Path(folder)
        for index, (name, changes) in enumerate(CANDIDATES.items()):
            for seed in seeds:
                console.print(f"{name}, seed {seed} ...")
                run_name = f"candidate{index}-{seed}"
                config = base.replace(seed=seed, out=str(workdir / run_name), **changes)
                command = cnnlab_command(config, workdir, run_name, holdout=HOLDOUT)
                run = run_timed(command, env=child_env(OMP_NUM_THREADS="1"))
                accuracies.setdefault(name, []).append(run.epochs()[-1][1]["test_acc"])
    scores = {name: fmean(values) for name, values in accuracies.items()}
    print_table(
        f"Final validation accuracy ({HOLDOUT:.4f} of the training split held out)",
        ["candidate", *(f"seed {seed}" for seed in seeds), "mean"],
        [[name, *values, scores[name]] for name, values in accuracies.items()],
    )
    chosen = choose(scores)
    console.print(f"chosen: {chosen} ({CANDIDATES[chosen]})")
    summary = {
        "benchmark": "choose_fast_recipe",
        "validation_accuracy": accuracies,
        "chosen": chosen,
        "changes": CANDIDATES[chosen],
        "provenance": meta,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    run_main(main)
