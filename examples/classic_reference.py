"""Write the classic LeNet-5 study's published rows as the CSV a study spec's `reference:` reads.

The published figures live outside the repository (`../shared/reference/`, a Markdown page of
tables); cnnlab does not ship them. This script reads that page's tables and writes
`examples/lenet5_classic_reference.csv` (ignored by git), which
`examples/lenet5_classic_study.yaml` names:

    python examples/classic_reference.py [--source PAGE.md] [--out FILE.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent / ".." / "shared" / "reference" / "lenet5_fashion_mnist_ablation.md"
METRICS = {"loss": "loss", "train acc": "train_acc", "test acc": "test_acc"}
# A table whose first header cell names a factor: each further column is one of its values.
FACTOR_TABLES = {"lr": "lr", "batch": "batch_size", "C1 kernel": "c1_kernel_size",
                 "pool size": "pool_size"}  # fmt: skip
# Tables of named columns: the column -> (factor, value); other columns are the base recipe's.
NAMED_COLUMNS = {
    "ReLU (conv layers)": ("conv_activation", "relu"),
    "MaxPool": ("pooling", "max"),
    "defaults": ("base", ""),
    "tuned": (
        "best",
        "lr=1.3;batch_size=16;epochs=50;conv_activation=relu;c1_kernel_size=5;pool_size=2",
    ),
}


def tables(lines: list[str]) -> list[list[list[str]]]:
    """The page's Markdown tables, each a list of rows of stripped cells (separator dropped)."""
    found, current = [], []
    for line in [*lines, ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= {"-", ":"} for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def published_rows(page: str) -> list[dict[str, str]]:
    """One row per published value: factor, value and the metrics the page gives for it."""
    rows = []
    for header, *body in tables(page.splitlines()):
        metrics = {METRICS[row[0]]: row[1:] for row in body if row[0] in METRICS}
        if not metrics:
            continue
        for column, label in enumerate(header[1:]):
            if header[0] in FACTOR_TABLES:
                factor, value = FACTOR_TABLES[header[0]], label
            elif label in NAMED_COLUMNS:
                factor, value = NAMED_COLUMNS[label]
            else:
                continue  # the base recipe's own column (Sigmoid, AvgPool)
            rows.append(
                {"factor": factor, "value": value}
                | {name: cells[column] for name, cells in metrics.items()}
            )
    rows.sort(key=lambda row: row["factor"] != "base")  # the base row first
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=HERE / "lenet5_classic_reference.csv")
    args = parser.parse_args()
    if not args.source.is_file():
        sys.exit(f"error: no published page at {args.source.resolve()}; pass --source PAGE.md")
    rows = published_rows(args.source.read_text())
    with args.out.open("w", newline="") as file:
        writer = csv.DictWriter(
            file, fieldnames=["factor", "value", *METRICS.values()], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} published rows -> {args.out}")


if __name__ == "__main__":
    main()
