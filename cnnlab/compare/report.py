"""The comparison's report: one table (Markdown, CSV) and accuracy against cost (PNG), in one
self-contained HTML page.

Each model's row gathers its finished seeds: mean ± sample standard deviation over the seeds
(`cnnlab.reporting.Stat`; one seed reads `n = 1`) of the training time and of the top-1 and
top-5 test errors (top-5 only with more than 5 classes), the epochs each seed reached (under a
time budget they differ), its parameters, MACs per image and mean training images/s. Runs that
diverged or failed count in no mean: the table's status column says how many, and the page
lists each failure's error. The Markdown and the HTML table are written from the same cells.
"""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from pathlib import Path

from cnnlab.engine.plots import new_figure, save_figure
from cnnlab.fileio import atomic_write_text
from cnnlab.reporting import Stat, Table, html_page, png_data_uri

COLUMNS = (
    "model",
    "seeds",
    "params",
    "macs",
    "epochs",
    "train_seconds",
    "train_seconds_std",
    "images_per_sec",
    "top1_error",
    "top1_error_std",
    "top5_error",
    "top5_error_std",
    "status",
)
STATS = {  # row key: record key; each a `Stat` over the model's finished seeds
    "epochs": "epochs",
    "train_seconds": "seconds",
    "images_per_sec": "images_per_sec",
    "top1_error": "top1_error",
    "top5_error": "top5_error",
}


def summarize_results(records: list[dict]) -> list[dict]:
    """One row per model (in first-seen order): a `Stat` over its finished seeds for each of
    `STATS`, with `seeds` (how many finished), `epochs_reached` (per finished seed), params, MACs, `status` (`done`, or how many runs
    diverged or failed: `1 diverged, 2 failed`) and `errors` (each failed run's error)."""
    by_model: dict[str, list[dict]] = {}
    for record in records:
        by_model.setdefault(record["model"], []).append(record)
    rows = []
    for model, runs in by_model.items():
        done = [r for r in runs if r["status"] == "done"]
        rows.append(
            {
                "model": model,
                "seeds": len(done),
                "params": runs[0]["params"],
                "macs": runs[0]["macs"],
                **{key: Stat.of(r.get(source) for r in done) for key, source in STATS.items()},
                "epochs_reached": [r["epochs"] for r in done],
                "status": _status(runs),
                "errors": [f"seed {r['seed']}: {r['error']}" for r in runs if r["error"]],
            }
        )
    return rows


def _status(runs: list[dict]) -> str:
    counts = Counter(r["status"] for r in runs if r["status"] != "done")
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "done"


def _si(value: float) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2f}{prefix}"
    return f"{value:.0f}"


def _epochs(runs: list[int]) -> str:
    """The epochs the seeds reached: `10`, or `7-9` where they differ."""
    if not runs:
        return "-"
    low, high = min(runs), max(runs)
    return str(low) if low == high else f"{low}-{high}"


def results_table(rows: list[dict]) -> Table:
    """The comparison's table: errors in percent, times in seconds, mean ± std over seeds.

    `Epochs` is the range of epochs the finished seeds reached (under a time budget each run
    fits its own); a status column appears when a run diverged or failed.
    """
    show_top5 = any(row["top5_error"].n for row in rows)
    show_status = any(row["status"] != "done" for row in rows)
    columns = ["Model", "Params", "MACs", "Epochs", "Train time (s)", "Images/s", "Top-1 error (%)"]
    columns += ["Top-5 error (%)"] if show_top5 else []
    columns += ["Seeds"] + (["Status"] if show_status else [])
    cells = []
    for row in rows:
        line = [
            row["model"],
            _si(row["params"]),
            _si(row["macs"]),
            _epochs(row["epochs_reached"]),
            row["train_seconds"].text(digits=0),
            "-" if not row["images_per_sec"].n else f"{row['images_per_sec'].mean:.0f}",
            row["top1_error"].text(digits=1, scale=100),
        ]
        line += [row["top5_error"].text(digits=1, scale=100)] if show_top5 else []
        line += [str(row["seeds"])] + ([row["status"]] if show_status else [])
        cells.append(line)
    return Table("", columns, cells)


def markdown_table(rows: list[dict]) -> str:
    """`results_table` as Markdown."""
    return results_table(rows).markdown() + "\n"


def failures(rows: list[dict]) -> list[str]:
    """One line per failed run: the model, the seed and the error."""
    return [f"{row['model']} {error}" for row in rows for error in row["errors"]]


def _csv_text(rows: list[dict]) -> str:
    """Machine-readable: each `Stat` as its mean (and `_std` where the table has one)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = {key: row[key] for key in ("model", "seeds", "params", "macs", "status")}
        for key in STATS:
            values[key] = _number(row[key].mean)
            if f"{key}_std" in COLUMNS:
                values[f"{key}_std"] = _number(row[key].std)
        writer.writerow(values)
    return buffer.getvalue()


def _number(value: float) -> float | str:
    return "" if value != value else value  # NaN (no value, or no spread) as an empty cell


def plot_accuracy(rows: list[dict], key: str, label: str, path: Path) -> Path:
    """Top-1 accuracy (%) against `key`, each point named, error bars over seeds.

    The axis is logarithmic when the values span a factor of 10 or more (MACs from LeNet to VGG),
    linear otherwise (a log axis within one decade shows only crowded minor-tick labels).
    """
    figure = new_figure(6.0, 4.2)
    axes = figure.add_subplot()
    finished = [row for row in rows if row["top1_error"].n]  # a run of it finished
    for row in finished:
        x = _value(row, key)
        error = row["top1_error"]
        y, std = 100 * (1 - error.mean), 100 * (error.std if error.n > 1 else 0.0)
        axes.errorbar([x], [y], yerr=[std], fmt="o", capsize=3, color="tab:blue")
        axes.annotate(row["model"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if spans_decades([_value(row, key) for row in finished]):
        axes.set_xscale("log")
    axes.set_xlabel(label)
    axes.set_ylabel("top-1 test accuracy (%)")
    axes.grid(True, alpha=0.3, linewidth=0.6)
    return save_figure(figure, path)


def _value(row: dict, key: str) -> float:
    """A row's number for `key`: a count (MACs) or a `Stat`'s mean (training time)."""
    return row[key].mean if isinstance(row[key], Stat) else row[key]


def spans_decades(values: list[float]) -> bool:
    """Whether positive `values` span a factor of 10 or more (so a log axis reads well)."""
    return bool(values) and min(values) > 0 and max(values) >= 10 * min(values)


def report_title(models: int, base: dict) -> str:
    """`3 models on folder:photos (10m budget each)` from the runs' shared config `base`."""
    budget = (
        f"{base['time_budget']} budget" if base.get("time_budget") else f"{base['epochs']} epochs"
    )
    return f"{models} models on {base['data']} ({budget} each)"


def write_report(rows: list[dict], out: str | Path, *, title: str) -> dict[str, Path]:
    """`results.md`, `results.csv`, the two PNG plots and `report.html` in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    notes = "".join(f"\n- {line}" for line in failures(rows))
    notes = f"\nFailed runs:\n{notes}\n" if notes else ""
    atomic_write_text(out / "results.md", f"# {title}\n\n{table}{notes}")
    atomic_write_text(out / "results.csv", _csv_text(rows))
    plots = {
        "accuracy_vs_macs": plot_accuracy(
            rows, "macs", "MACs per image", out / "accuracy_vs_macs.png"
        ),
        "accuracy_vs_time": plot_accuracy(
            rows, "train_seconds", "training time (s)", out / "accuracy_vs_time.png"
        ),
    }
    atomic_write_text(out / "report.html", _html(title, rows, plots))
    return {
        "markdown": out / "results.md",
        "csv": out / "results.csv",
        **plots,
        "html": out / "report.html",
    }


def _html(title: str, rows: list[dict], plots: dict[str, Path]) -> str:
    """One page with the table and the plots embedded (no other files needed)."""
    failed = "".join(f"<li>{html.escape(line)}</li>" for line in failures(rows))
    body = [
        f"<h1>{html.escape(title)}</h1>",
        "<p>Mean ± sample standard deviation over seeds; errors in percent.</p>",
        results_table(rows).html(),
        f"<p>Failed runs:</p><ul>{failed}</ul>" if failed else "",
        *(png_data_uri(path) for path in plots.values()),
    ]
    return html_page(title, body)
