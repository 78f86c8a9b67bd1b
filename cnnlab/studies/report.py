"""The study report, from the study folder alone: Markdown with PNG figures and one offline page.

Every number is a mean ± sample std over the finished seeds with their count n (one seed reads
`n = 1`), from `studies.results`; the tables are `cnnlab.reporting.Table`s, so the Markdown and
the HTML hold the same cells.

- `one-at-a-time`: per factor, a table of each value's own runs against the base (difference of
  mean scored accuracies with Welch's 95% interval, **significant** / **within noise**, **at
  chance**), a figure of each metric against the value and the mean learning curves.
- `grid`: the full grid (every combination against the base cell), a heat map when there are
  two factors, and per factor its marginal means, labelled "marginal mean over <the others>".

Then the best values (those significantly better than the base, or "no value beats the base"),
the published rows beside the measured ones when the spec names a `reference`, the tuned
combination against the base when `cnnlab study best` has run it, and the provenance. A study
with `validation` is scored on its validation holdout: its columns read `val acc`, and its
tuned-against-default table reads the test split on fresh seeds.
"""

from __future__ import annotations

import datetime
import html
from pathlib import Path
from typing import Any

import yaml

from cnnlab.fileio import atomic_write_text
from cnnlab.reporting import Table, html_page, png_data_uri, signed
from cnnlab.studies.figures import plot_curves, plot_factor, plot_heat_map
from cnnlab.studies.reference import BASE, BEST, agreement
from cnnlab.studies.results import METRICS, StudyResults, Summary, load_results, metric_names
from cnnlab.studies.results import value_text as text_of
from cnnlab.studies.spec import BASE_POINT, Point, final_name, fresh_seeds

REPORT_FOLDER = "report"
Section = tuple[str, list[str], list[Table], list[Path]]  # title, paragraphs, tables, figures
PUBLISHED = {"loss": "train_loss", "train_acc": "train_acc", "test_acc": "scored_acc"}


def summary_row(label: str, summary: Summary) -> list[str]:
    """`label | n | diverged | failed | train loss | train acc | scored acc`."""
    counts = [str(summary.done), str(summary.diverged), str(summary.failed)]
    return [label, *counts, *(summary.metrics[key].text() for key in METRICS)]


def summary_columns(split: str) -> list[str]:
    """`n | diverged | failed | train loss | train acc | <split> acc`."""
    return ["n", "diverged", "failed", *metric_names(split).values()]


def _against_base(summary: Summary) -> list[str]:
    shown = "-" if summary.against_base is None else summary.against_base.text()
    return ["(base)" if summary.is_base else shown, summary.verdict()]


def _compared_columns(split: str) -> list[str]:
    return [f"Δ {split} acc vs base [95% CI]", "verdict"]


def factor_table(factor: str, rows: list[Summary], split: str = "test") -> Table:
    """One-at-a-time: each value's own runs against the base."""
    return Table(
        f"{factor}: each value against the base (mean ± sample std over seeds; Δ = value − base, "
        "Welch's 95% interval)",
        [factor, *summary_columns(split), *_compared_columns(split)],
        [summary_row(row.label, row) + _against_base(row) for row in rows],
    )


def marginal_table(factor: str, rows: list[Summary], others: list[str], split: str) -> Table:
    """Grid: the factor's marginal means (every run with the value, whatever the others)."""
    over = ", ".join(others) or "nothing else"
    return Table(
        f"{factor}: marginal mean over {over} (every run with the value; mean ± sample std)",
        [factor, *summary_columns(split)],
        [summary_row(row.label, row) for row in rows],
    )


def grid_table(results: StudyResults) -> Table:
    """Grid: every combination, each against the base cell."""
    factors = list(results.spec["factors"])
    rows = [
        [text_of(cell.value[f]) for f in factors] + summary_row("", cell)[1:] + _against_base(cell)
        for cell in results.cells
    ]
    split = results.split
    return Table(
        "Every combination (mean ± sample std over seeds; Δ = cell − base cell, Welch's 95% "
        "interval)",
        [*factors, *summary_columns(split), *_compared_columns(split)],
        rows,
    )


def best_table(results: StudyResults) -> Table:
    """The best values: those significantly better than the base (see `StudyResults.best`)."""
    split, base = results.split, results.base.metrics["scored_acc"].text()
    rows = []
    for winner in results.best():
        shown = winner.label if results.grid else _factor_of(results, winner)
        rows.append([shown, winner.metrics["scored_acc"].text(), base, winner.against_base.text()])
    if not rows:
        rows = [["no value beats the base", "-", base, "-"]]
    what = "combination" if results.grid else "value per factor"
    return Table(
        f"Best {what}: the highest mean {split} accuracy among those significantly better than "
        "the base (95% interval of the difference above 0)",
        [what, f"{split} acc", f"base {split} acc", "Δ [95% CI]"],
        rows,
    )


def _factor_of(results: StudyResults, winner: Summary) -> str:
    factor = next(f for f, rows in results.factors.items() if any(r is winner for r in rows))
    return f"{factor}={winner.label}"


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
        rows.append(summary_row(label, results.point(name, seeds)))
    return Table(title, ["config", *summary_columns("test")], rows)


def reference_table(results: StudyResults) -> tuple[Table, str]:
    """The published rows beside the measured ones, and how many accuracy rows agree."""
    rows, verdicts = [], []
    for published in results.spec["reference"]:
        label, measured = _measured(results, published)
        for column, metric in PUBLISHED.items():
            if published[column] is None:
                continue
            stat = measured.metrics[metric]
            verdict = agreement(stat, published[column]) if stat.n else "not run"
            delta = "-" if not stat.n else signed(stat.mean - published[column])
            name = metric_names(results.split)[metric]
            rows.append([label, name, stat.text(), f"{published[column]:.3f}", delta, verdict])
            if column == "test_acc":
                verdicts.append(verdict)
    agree = verdicts.count("agrees")
    count = f"{agree} of {len(verdicts)} published test-accuracy rows agree"
    table = Table(
        "Against the published rows (agrees: published within measured mean ± (2 standard "
        "errors + 0.005))",
        ["row", "metric", "measured", "published", "measured − published", "verdict"],
        rows,
    )
    return table, count


def _measured(results: StudyResults, published: dict[str, Any]) -> tuple[str, Summary]:
    """The measured group a published row stands beside: the base, a value, a combination."""
    factor, value = published["factor"], published["value"]
    if factor == BASE:
        return "base", results.base
    changes = value if factor == BEST else {factor: value}
    name = _point_name(results, changes)
    if factor != BEST and not results.grid:
        row = next(r for r in results.factors[factor] if _same(r.value, value))
        return f"{factor}={text_of(value)}", row
    if results.validation is not None and factor == BEST:
        return f"best: {name} (final runs)", results.point(final_name(name))
    return f"{factor}: {name}", results.point(name)


def _point_name(results: StudyResults, changes: dict[str, Any]) -> str:
    """The study's name for the point of `changes` (factor order, base values left out)."""
    base = results.base_values()
    kept = [
        (factor, changes[factor])
        for factor in results.spec["factors"]
        if factor in changes and not _same(changes[factor], base[factor])
    ]
    return Point(tuple(kept)).name


def _same(a: Any, b: Any) -> bool:
    return text_of(a) == text_of(b)


def write_report(folder: str | Path) -> Path:
    """Write `report/report.md`, its PNGs and `report/report.html`; the HTML page's path."""
    results = load_results(folder)
    out = Path(folder) / REPORT_FOLDER
    sections = _grid_sections(results, out) if results.grid else _factor_sections(results, out)
    sections.append(("Best values", [], [best_table(results)], []))
    if results.spec.get("reference"):
        table, count = reference_table(results)
        sections.append(("Published rows", [f"{count}."], [table], []))
    if results.best_point is not None:
        tuned = tuned_table(results, results.best_point)
        sections.append(("Tuned against default", [], [tuned], []))
    provenance = _provenance(results)
    atomic_write_text(out / "report.md", _markdown(results, sections, provenance))
    page = out / "report.html"
    atomic_write_text(page, _html(results, sections, provenance))
    return page


def _factor_sections(results: StudyResults, out: Path) -> list[Section]:
    names, sections = metric_names(results.split), []
    for factor, rows in results.factors.items():
        title = f"{factor}: mean ± sample std over seeds"
        figures = [
            plot_factor(factor, rows, out / f"{factor}.png", names, title),
            plot_curves(factor, rows, out / f"{factor}_curves.png", names),
        ]
        table = factor_table(factor, rows, results.split)
        sections.append((f"Factor `{factor}`", [], [table], figures))
    return sections


def _grid_sections(results: StudyResults, out: Path) -> list[Section]:
    names, factors = metric_names(results.split), list(results.spec["factors"])
    figures = []
    if len(factors) == 2:
        values = tuple(results.spec["factors"][f] for f in factors)
        path = out / "grid.png"
        figures.append(
            plot_heat_map(tuple(factors), values, results.cells, path, names["scored_acc"])
        )
    note = (
        []
        if any(c.is_base for c in results.cells)
        else [
            "The grid holds no base cell (every factor at its base value): nothing is set against "
            "the base."
        ]
    )
    sections: list[Section] = [("Every combination", note, [grid_table(results)], figures)]
    for factor, rows in results.factors.items():
        others = [f for f in factors if f != factor]
        title = f"{factor}: marginal mean over {', '.join(others) or 'nothing else'}"
        figure = plot_factor(factor, rows, out / f"{factor}.png", names, title)
        table = marginal_table(factor, rows, others, results.split)
        sections.append((f"Factor `{factor}` (marginal means)", [], [table], [figure]))
    return sections


def _provenance(results: StudyResults) -> dict:
    finished = [r.wall_seconds for r in results.runs if r.wall_seconds is not None]
    return {
        "written": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "runs": results.counts,
        "run seconds, summed": round(sum(finished), 1),
        "environment": results.environment,
        "spec": results.spec,
    }


def _markdown(results: StudyResults, sections: list[Section], provenance: dict) -> str:
    parts = [f"# Study report: {results.folder}", headline(results)]
    for title, paragraphs, tables, figures in sections:
        parts += [f"## {title}", *paragraphs]
        parts += [table.markdown() for table in tables]
        parts += [f"![{figure.stem}]({figure.name})" for figure in figures]
    parts += ["## Provenance", "```yaml\n" + yaml.safe_dump(provenance, sort_keys=False) + "```"]
    return "\n\n".join(parts) + "\n"


def _html(results: StudyResults, sections: list[Section], provenance: dict) -> str:
    body = [
        f"<h1>Study report: {html.escape(str(results.folder))}</h1>",
        f"<p>{html.escape(headline(results))}</p>",
    ]
    for title, paragraphs, tables, figures in sections:
        body.append(f"<h2>{html.escape(title.replace('`', ''))}</h2>")
        body += [f"<p>{html.escape(text)}</p>" for text in paragraphs]
        body += [table.html() for table in tables]
        body += [png_data_uri(figure) for figure in figures]
    text = html.escape(yaml.safe_dump(provenance, sort_keys=False))
    body += ["<h2>Provenance</h2>", f"<pre>{text}</pre>"]
    return html_page(f"cnnlab study {results.folder.name}", body)


def headline(results: StudyResults) -> str:
    """The study in one paragraph: model, data, mode, seeds, epochs, the split it is scored on."""
    spec, counts = results.spec, results.counts
    seeds = spec["seeds"]
    shown = ", ".join(f"{counts[s]} {s}" for s in counts if counts[s])
    epochs = spec["base"]["epochs"]
    if results.validation is None:
        scored = "scored on: test split"
    else:
        scored = (
            f"scored on: validation holdout ({results.validation:.0%} of each class of the "
            "training split, seed 0, not trained on; `val acc`); the test split is read only by "
            "`study best`, on fresh seeds"
        )
    chance = "" if results.classes is None else f"; chance is 1/{results.classes} classes"
    return (
        f"{spec['base']['model']} on {spec['base']['data']}, mode {spec['mode']}, "
        f"{len(seeds)} seed{'' if len(seeds) == 1 else 's'}, {epochs} epochs per run (base), {scored}{chance}; runs: {shown}."
    )
