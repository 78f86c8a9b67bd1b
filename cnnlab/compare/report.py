"""The comparison's report: one table (Markdown, CSV) and accuracy against cost (PNG), in one
self-contained HTML page.

Each model's row gathers its finished seeds: mean ± sample standard deviation (n seeds) of the
training time and of the top-1 and top-5 test errors (top-5 only with more than 5 classes), with
its parameters, MACs per image and mean training images/s. Runs that diverged or failed count in
no mean: the table's status column says how many, and the page lists each failure's error.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import statistics
from collections import Counter
from pathlib import Path

from cnnlab.engine.plots import new_figure, save_figure
from cnnlab.fileio import atomic_write_text

COLUMNS = (
    "model",
    "seeds",
    "params",
    "macs",
    "train_seconds",
    "train_seconds_std",
    "images_per_sec",
    "top1_error",
    "top1_error_std",
    "top5_error",
    "top5_error_std",
    "status",
)


def summarize_results(records: list[dict]) -> list[dict]:
    """One row per model (in first-seen order) with the mean and std over its finished seeds.

    `status` is `done`, or how many runs diverged or failed (`1 diverged, 2 failed`); `errors`
    lists each failed run's error.
    """
    by_model: dict[str, list[dict]] = {}
    for record in records:
        by_model.setdefault(record["model"], []).append(record)
    rows = []
    for model, runs in by_model.items():
        done = [r for r in runs if r["status"] == "done"]
        row = {
            "model": model,
            "seeds": len(done),
            "params": runs[0]["params"],
            "macs": runs[0]["macs"],
            "images_per_sec": _mean_std([r["images_per_sec"] for r in done])[0],
            "status": _status(runs),
            "errors": [f"seed {r['seed']}: {r['error']}" for r in runs if r["error"]],
        }
        for key, source in (
            ("train_seconds", "seconds"),
            ("top1_error", "top1_error"),
            ("top5_error", "top5_error"),
        ):
            row[key], row[f"{key}_std"] = _mean_std([r[source] for r in done])
        rows.append(row)
    return rows


def _status(runs: list[dict]) -> str:
    counts = Counter(r["status"] for r in runs if r["status"] != "done")
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "done"


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else None


def _pm(mean: float | None, std: float | None, scale: float = 1.0, digits: int = 1) -> str:
    if mean is None:
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def _si(value: float) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2f}{prefix}"
    return f"{value:.0f}"


def markdown_table(rows: list[dict]) -> str:
    """The table as Markdown: errors in percent, times in seconds, mean ± std over seeds.

    A status column appears when a run diverged or failed.
    """
    show_top5 = any(row["top5_error"] is not None for row in rows)
    show_status = any(row["status"] != "done" for row in rows)
    header = ["Model", "Params", "MACs", "Train time (s)", "Images/s", "Top-1 error (%)"]
    header += ["Top-5 error (%)"] if show_top5 else []
    header += ["Seeds"] + (["Status"] if show_status else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["model"],
            _si(row["params"]),
            _si(row["macs"]),
            _pm(row["train_seconds"], row["train_seconds_std"], digits=0),
            "-" if row["images_per_sec"] is None else f"{row['images_per_sec']:.0f}",
            _pm(row["top1_error"], row["top1_error_std"], 100),
        ]
        cells += [_pm(row["top5_error"], row["top5_error_std"], 100)] if show_top5 else []
        cells += [str(row["seeds"])] + ([row["status"]] if show_status else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def failures(rows: list[dict]) -> list[str]:
    """One line per failed run: the model, the seed and the error."""
    return [f"{row['model']} {error}" for row in rows for error in row["errors"]]


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in COLUMNS})
    return buffer.getvalue()


def plot_accuracy(rows: list[dict], key: str, label: str, path: Path) -> Path:
    """Top-1 accuracy (%) against `key`, each point named, error bars over seeds.

    The axis is logarithmic when the values span a factor of 10 or more (MACs from LeNet to VGG),
    linear otherwise (a log axis within one decade shows only crowded minor-tick labels).
    """
    figure = new_figure(6.0, 4.2)
    axes = figure.add_subplot()
    finished = [row for row in rows if row["top1_error"] is not None]  # a run of it finished
    for row in finished:
        x, y = row[key], 100 * (1 - row["top1_error"])
        std = 100 * (row["top1_error_std"] or 0.0)
        axes.errorbar([x], [y], yerr=[std], fmt="o", capsize=3, color="tab:blue")
        axes.annotate(row["model"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if spans_decades([row[key] for row in finished]):
        axes.set_xscale("log")
    axes.set_xlabel(label)
    axes.set_ylabel("top-1 test accuracy (%)")
    axes.grid(True, alpha=0.3, linewidth=0.6)
    return save_figure(figure, path)


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
    lines = markdown_table(rows).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    body = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    head_html = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    rows_html = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"
        for cells in body
    )
    failed = "".join(f"<li>{html.escape(line)}</li>" for line in failures(rows))
    failed = f"<p>Failed runs:</p><ul>{failed}</ul>" if failed else ""
    images = "".join(
        f'<img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode()}">'
        for name, path in plots.items()
    )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:48%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Mean ± sample standard deviation over seeds; errors in percent.</p>"
        f"<table><thead><tr>{head_html}</tr></thead><tbody>{rows_html}</tbody></table>"
        f"{failed}{images}</body></html>\n"
    )
