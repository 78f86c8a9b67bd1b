"""Published rows to reproduce: a study spec's `reference: FILE.csv`, read and checked up front.

The CSV has the columns `factor, value` and any of `loss, train_acc, test_acc` (the last epoch's
training loss and accuracy, and the scored accuracy, as means over the publication's runs; a
cell may be empty). `factor` is one of the study's factors with one of its values (or the
base's), `base` for the base recipe (value empty), or `best` for a combination whose value
lists `factor=value` pairs separated by `;` (`lr=1.3;batch_size=16`): it is compared with the
study's point of those changes, such as the one `cnnlab study best` trains.

A measured mean **agrees** with a published one when the published value lies within the
measured mean ± (2 standard errors + 0.005), the 0.005 being half a point of accuracy; it
**differs** otherwise, and needs at least two measured runs to say either.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import CnnlabError, OptionError
from cnnlab.reporting import Stat

KEY_COLUMNS = ("factor", "value")
METRIC_COLUMNS = ("loss", "train_acc", "test_acc")
BASE, BEST = "base", "best"
MARGIN = 0.005  # half a point of accuracy, added to 2 standard errors


def read_reference(path: Path) -> list[dict[str, str]]:
    """The CSV's rows as strings; a missing file or a wrong header is one line."""
    try:
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            columns = [name.strip() for name in reader.fieldnames or []]
            rows = [
                {name.strip(): (cell or "").strip() for name, cell in row.items() if name}
                for row in reader
            ]
    except OSError as error:
        raise OptionError(
            f"reference {path}: cannot read ({error.strerror}); write the file first, or remove "
            "the spec's `reference` key"
        ) from None
    unknown = [name for name in columns if name not in (*KEY_COLUMNS, *METRIC_COLUMNS)]
    if unknown or not set(KEY_COLUMNS) <= set(columns):
        raise OptionError(
            f"reference {path}: unknown or missing columns ({', '.join(unknown) or 'none unknown'}); "
            f"expected {', '.join(KEY_COLUMNS)} and any of {', '.join(METRIC_COLUMNS)}"
        )
    if not any(name in METRIC_COLUMNS for name in columns):
        raise OptionError(f"reference {path}: no metric column ({', '.join(METRIC_COLUMNS)})")
    return rows


def check_reference(
    rows: list[dict[str, Any]],
    factors: dict[str, list[Any]],
    base: dict[str, Any],
    normalize: Callable[[str, Any], Any],
) -> list[dict[str, Any]]:
    """The rows with their values as the study holds them; a bad row raises one line.

    `factors` and `base` are the study's values, `normalize(factor, value)` the spec's check
    of one value (it raises on a value the option refuses).
    """
    checked = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"reference row {number}"
        factor = row.get("factor")
        if factor == BASE:
            value = None
        elif factor == BEST:
            value = _combination(row.get("value"), factors, normalize, where)
        elif factor in factors:
            value = _value(factor, row.get("value"), normalize, where)
            known = [*factors[factor], base[factor]]
            if not any(_same(value, v) for v in known):
                shown = ", ".join(map(str, factors[factor]))
                raise OptionError(
                    f"{where}: {factor} {value!r} is not a value of the study ({shown})"
                )
        else:
            valid = ", ".join([BASE, BEST, *factors])
            raise OptionError(f"{where}: unknown factor {factor!r}; valid: {valid}")
        metrics = {name: _number(row.get(name), name, where) for name in METRIC_COLUMNS}
        checked.append({"factor": factor, "value": value, **metrics})
    return checked


def agreement(measured: Stat, published: float) -> str:
    """`agrees`, `differs`, or `too few runs` (under 2) by the module's rule."""
    if measured.n < 2:
        return "too few runs"
    within = abs(published - measured.mean) <= 2 * measured.sem + MARGIN
    return "agrees" if within else "differs"


def _value(factor: str, text: Any, normalize: Callable, where: str) -> Any:
    value = yaml.safe_load(text) if isinstance(text, str) else text
    try:
        return normalize(factor, value)
    except CnnlabError as error:
        raise OptionError(f"{where}: {error}") from None


def _combination(text: Any, factors: dict, normalize: Callable, where: str) -> dict[str, Any]:
    """`lr=1.3;batch_size=16` (or the dict already read) as {factor: value}."""
    if isinstance(text, dict):
        pairs = list(text.items())
    else:
        parts = [part.strip() for part in str(text or "").split(";") if part.strip()]
        if not parts or not all("=" in part for part in parts):
            raise OptionError(f"{where}: a `best` value lists factor=value pairs, joined by ';'")
        pairs = [tuple(part.split("=", 1)) for part in parts]
    combination = {}
    for name, value in pairs:
        name = name.strip()
        if name not in factors:
            raise OptionError(f"{where}: unknown factor {name!r}; valid: {', '.join(factors)}")
        combination[name] = _value(
            name, value.strip() if isinstance(value, str) else value, normalize, where
        )
    return combination


def _number(text: Any, column: str, where: str) -> float | None:
    if text is None or text == "":
        return None
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise OptionError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(number):
        raise OptionError(f"{where}: {column} {text!r} is not a finite number")
    return number


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
