"""The study report, from the store alone: Markdown with PNG figures and one offline HTML page.

Per factor: a table (value | n | diverged | loss | train acc | test acc, each mean ± sample std
over the seeds), a figure with one panel per metric against the value (error bars; log axis for
the learning rate and the batch size) and the mean learning curves per value with a ±1 std
band. Then the best value per factor, the tuned combination against the base when
`cnnlab study best` has run it, and the provenance: package versions, hardware and the spec.
A study with `validation` is scored on its validation holdout: its columns read `val acc`, and
its tuned-against-default table reads the test split on fresh seeds.
"""

from __future__ import annotations

import base64
import datetime
import html
from dataclasses import dataclass
from pathlib import Path

import yaml

from cnnlab.engine.plots import _style, new_figure, save_figure
from cnnlab.fileio import atomic_write_text
from cnnlab.studies.results import (
    METRICS,
    StudyResults,
    Summary,
    load_results,
    metric_names,
    value_text,
)
from cnnlab.studies.spec import BASE_POINT, final_name, fresh_seeds

LOG_AXIS_FACTORS = ("lr", "batch_size", "weight_decay")
REPORT_FOLDER = "report"


@dataclass
class Table:
    """A titled table: the same rows become Markdown and HTML."""

    title: str
    columns: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = [f"| {' | '.join(self.columns)} |", "|" + "---|" * len(self.columns)]
        lines += [f"| {' | '.join(row)} |" for row in self.rows]
        return f"**{self.title}**\n\n" + "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in self.rows
        )
        return f"<h4>{html.escape(self.title)}</h4><table><tr>{head}</tr>{body}</table>"


def summary_row(label: str, summary: Summary) -> list[str]:
    """`label | n | diverged | failed | loss | train acc | test acc`."""
    counts = [str(summary.done), str(summary.diverged), str(summary.failed)]
    return [label, *counts, *(summary.metrics[key].text() for key in METRICS)]


def summary_columns(split: str) -> list[str]:
    """`n | diverged | failed | train loss | train acc | <split> acc`."""
    return ["n", "diverged", "failed", *metric_names(split).values()]


def factor_table(factor: str, rows: list[Summary], split: str = "test") -> Table:
    """One factor's rows; `split` names the scored split (`test`, or `val`)."""
    return Table(
        f"{factor}: mean ± sample std over seeds",
        [factor, *summary_columns(split)],
        [summary_row(row.label, row) for row in rows],
    )


def best_table(results: StudyResults) -> Table:
    base = results.base_values()
    rows = []
    for factor, best in results.best().items():
        base_row = next(row for row in results.factors[factor] if row.is_base)
        rows.append(
            [
                factor,
                value_text(best.value),
                best.metrics["test_acc"].text(),
                value_text(base[factor]),
                base_row.metrics["test_acc"].text(),
            ]
        )
    split = results.split
    columns = ["factor", "best value", f"{split} acc", "base value", f"base {split} acc"]
    chosen_on = "validation" if results.validation is not None else "test"
    return Table(f"Best value per factor (highest mean {chosen_on} accuracy)", columns, rows)


def tuned_table(results: StudyResults, point: str) -> Table:
    """Base and best combination side by side, each over the study's seeds; with `validation`,
    their final runs: full training split, test split, fresh seeds."""
    names, seeds = [BASE_POINT, point], results.spec["seeds"]
    title = "Tuned against default (same seeds)"
    if results.validation is not None:
        names, seeds = [final_name(name) for name in names], fresh_seeds(seeds)
        shown = f"seeds {seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"
        title = f"Tuned against default (test accuracy, fresh {shown})"
    rows = []
    for name, label in zip(names, ("base (default)", f"best: {point}"), strict=True):
        records = [r for r in results.runs if r.point == name and r.seed in seeds]
        rows.append(summary_row(label, results.summarize(records)))
    return Table(title, ["config", *summary_columns("test")], rows)


def write_report(folder: str | Path) -> Path:
    """Write `report/report.md`, its PNGs and `report/report.html`; the HTML page's path."""
    results = load_results(folder)
    out = Path(folder) / REPORT_FOLDER
    sections: list[tuple[str, list[Table], list[Path]]] = []
    names = metric_names(results.split)
    for factor, rows in results.factors.items():
        figures = [
            plot_factor(factor, rows, out / f"{factor}.png", names),
            plot_curves(factor, rows, out / f"{factor}_curves.png", names),
        ]
        table = factor_table(factor, rows, results.split)
        sections.append((f"Factor `{factor}`", [table], figures))
    sections.append(("Best values", [best_table(results)], []))
    if results.best_point is not None:
        sections.append(("Tuned against default", [tuned_table(results, results.best_point)], []))
    provenance = _provenance(results)
    atomic_write_text(out / "report.md", _markdown(results, sections, provenance))
    page = out / "report.html"
    atomic_write_text(page, _html(results, sections, provenance))
    return page


# ----------------------------------------------------------------------------- figures


def _positions(factor: str, rows: list[Summary]) -> tuple[list[float], bool]:
    """x positions: the values themselves when numeric, else 0, 1, 2, ... (categories)."""
    values = [row.value for row in rows]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return ([float(v) for v in values] if numeric else list(range(len(values)))), numeric


def plot_factor(
    factor: str, rows: list[Summary], path: Path, names: dict[str, str] = METRICS
) -> Path:
    """One panel per metric (titled from `names`): mean ± std against the factor's value."""
    figure = new_figure(4.0 * len(names), 3.2)
    x, numeric = _positions(factor, rows)
    for axes, (key, name) in zip(figure.subplots(1, len(names)), names.items(), strict=True):
        means = [row.metrics[key].mean for row in rows]
        stds = [row.metrics[key].std for row in rows]
        axes.errorbar(x, means, yerr=stds, marker="o", capsize=4, linewidth=1.2)
        for position, row in zip(x, rows, strict=True):
            if row.diverged:
                axes.annotate(
                    f"{row.diverged} diverged",
                    (position, 0),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="#d62728",
                )
        if numeric and factor in LOG_AXIS_FACTORS and min(x) > 0:
            axes.set_xscale("log", base=2 if factor == "batch_size" else 10)
        # Tick at each value, labelled as the spec writes it (also on a log axis).
        axes.set_xticks(x, [row.label.replace(" (base)", "*") for row in rows])
        axes.minorticks_off()
        axes.set_xlabel(factor)
        axes.set_title(name)
        _style(axes)
    figure.suptitle(f"{factor}: mean ± sample std over seeds (* = base)")
    return save_figure(figure, path)


def plot_curves(
    factor: str, rows: list[Summary], path: Path, names: dict[str, str] = METRICS
) -> Path:
    """Mean learning curves per value (training loss, scored accuracy) with a ±1 std band."""
    figure = new_figure(9.0, 3.4)
    for axes, key in zip(figure.subplots(1, 2), ("train_loss", "test_acc"), strict=True):
        for row in rows:
            curve = row.curves[key]
            if not curve:
                continue
            epochs = list(range(1, len(curve) + 1))
            means = [stat.mean for stat in curve]
            low = [stat.mean - stat.std for stat in curve]
            high = [stat.mean + stat.std for stat in curve]
            (line,) = axes.plot(
                epochs,
                means,
                marker="o" if len(epochs) < 30 else None,
                markersize=3,
                label=row.label,
            )
            axes.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
        axes.set_xlabel("epoch")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.set_title(names.get(key, key) if key != "train_loss" else "training loss")
        _style(axes)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, title=factor, loc="outside right", fontsize=8)
    figure.suptitle(f"{factor}: mean learning curves, band = ±1 std over seeds")
    return save_figure(figure, path)


# ----------------------------------------------------------------------------- documents


def _provenance(results: StudyResults) -> dict:
    finished = [r.wall_seconds for r in results.runs if r.wall_seconds is not None]
    return {
        "written": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "runs": results.counts,
        "run seconds, summed": round(sum(finished), 1),
        "environment": results.environment,
        "spec": results.spec,
    }


def _markdown(results: StudyResults, sections: list, provenance: dict) -> str:
    parts = [f"# Study report: {results.folder}", _headline(results)]
    for title, tables, figures in sections:
        parts.append(f"## {title}")
        parts += [table.markdown() for table in tables]
        parts += [f"![{figure.stem}]({figure.name})" for figure in figures]
    parts += ["## Provenance", "```yaml\n" + yaml.safe_dump(provenance, sort_keys=False) + "```"]
    return "\n\n".join(parts) + "\n"


def _html(results: StudyResults, sections: list, provenance: dict) -> str:
    body = [
        f"<h1>Study report: {html.escape(str(results.folder))}</h1>",
        f"<p>{html.escape(_headline(results))}</p>",
    ]
    for title, tables, figures in sections:
        body.append(f"<h2>{html.escape(title.replace('`', ''))}</h2>")
        body += [table.html() for table in tables]
        for figure in figures:
            data = base64.b64encode(figure.read_bytes()).decode()
            body.append(f'<img alt="{figure.stem}" src="data:image/png;base64,{data}">')
    text = html.escape(yaml.safe_dump(provenance, sort_keys=False))
    body += ["<h2>Provenance</h2>", f"<pre>{text}</pre>"]
    return _PAGE.format(
        title=html.escape(f"cnnlab study {results.folder.name}"), body="\n".join(body)
    )


def _headline(results: StudyResults) -> str:
    spec, counts = results.spec, results.counts
    seeds = spec["seeds"]
    shown = ", ".join(f"{counts[s]} {s}" for s in counts if counts[s])
    epochs = spec["base"]["epochs"]
    if results.validation is None:
        scored = "scored on the test split"
    else:
        scored = (
            f"scored on a validation holdout ({results.validation:.0%} of each class of the "
            "training split, seed 0, not trained on); the test split is read only by "
            "`study best`, on fresh seeds"
        )
    return (
        f"{spec['base']['model']} on {spec['base']['data']}, mode {spec['mode']}, "
        f"{len(seeds)} seeds, {epochs} epochs per run (base), {scored}; runs: {shown}."
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; display: block; margin: 0.5em 0 1.5em; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}
</style></head>
<body>
{body}
</body></html>
"""
