"""Predictions as a CSV file a competition or a spreadsheet takes (`cnnlab predict --csv`).

One row per classified image. The columns are chosen by a comma-separated spec:

- `id`: the file's stem, or the one group of `--id-pattern` found in its name (`(\\d+)` turns
  Kaggle's `1234.jpg` into `1234`);
- `path`: the file's path; `class`: the predicted class; `probability`: its probability;
- a class name: that class's probability;
- `HEADER=COLUMN`: any of the above under another header, e.g. `label=dog` for Dogs-vs-Cats'
  `id,label` where `label` is P(dog).

The default is `id,class` and then every class's probability.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cnnlab.engine.predict import FilePrediction
from cnnlab.errors import OptionError
from cnnlab.fileio import atomic_write

FIELDS = ("id", "path", "class", "probability")


@dataclass(frozen=True)
class Column:
    """A CSV column: its header and what it holds (a field of `FIELDS` or a class name)."""

    header: str
    source: str


def default_columns(classes: Sequence[str]) -> str:
    """`id,class` and every class's probability, as a `--columns` spec."""
    return ",".join(["id", "class", *classes])


def parse_columns(spec: str, classes: Sequence[str]) -> list[Column]:
    """The columns a spec names; an unknown name is an `OptionError` listing the valid ones."""
    columns = []
    for item in (part.strip() for part in spec.split(",")):
        header, _, source = item.partition("=")
        header, source = header.strip(), (source or header).strip()
        if not header or not source:
            raise OptionError(f"--columns has an empty column in '{spec}'; e.g. id,label=dog")
        if source not in FIELDS and source not in classes:
            valid = ", ".join([*FIELDS, *classes])
            raise OptionError(f"--columns: unknown column '{source}'; choose from: {valid}")
        columns.append(Column(header, source))
    headers = [column.header for column in columns]
    repeated = sorted({header for header in headers if headers.count(header) > 1})
    if repeated:
        raise OptionError(f"--columns names '{repeated[0]}' twice; rename one as HEADER=COLUMN")
    return columns


def compile_id_pattern(pattern: str) -> re.Pattern[str]:
    """`--id-pattern` as a regex with exactly one group, or an `OptionError` saying why not."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise OptionError(f"--id-pattern '{pattern}' is not a valid regex ({error})") from None
    if compiled.groups != 1:
        raise OptionError(
            f"--id-pattern '{pattern}' has {compiled.groups} groups; it needs exactly one, "
            r"the id, e.g. (\d+)"
        )
    return compiled


def file_id(path: Path, pattern: re.Pattern[str] | None) -> str | None:
    """The id of `path`: its stem, or the pattern's group in its name (None: no match)."""
    if pattern is None:
        return path.stem
    found = pattern.search(path.name)
    return found.group(1) if found else None


def write_predictions_csv(
    out: str | Path,
    predictions: Sequence[FilePrediction],
    columns: Sequence[Column],
    pattern: re.Pattern[str] | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> int:
    """Write one row per classified prediction to `out` (atomically); returns the rows written.

    Each prediction must hold every class (predicted with top-k = the class count). A file
    whose name the pattern does not match is left out and reported through `on_skip`.
    """
    rows = []
    for prediction in predictions:
        if prediction.error is not None:
            continue
        identifier = file_id(prediction.path, pattern)
        if identifier is None:
            if on_skip is not None:
                on_skip(
                    f"{prediction.path}: --id-pattern '{pattern.pattern}' finds no id in its name"
                )
            continue
        probabilities = dict(zip(prediction.classes, prediction.probabilities, strict=True))
        values = {
            "id": identifier,
            "path": str(prediction.path),
            "class": prediction.classes[0],
            "probability": prediction.probabilities[0],
        }
        rows.append([_cell(values.get(c.source, probabilities.get(c.source))) for c in columns])
    with atomic_write(out, "w") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow([column.header for column in columns])
        writer.writerows(rows)
    return len(rows)


def _cell(value: str | float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else value
