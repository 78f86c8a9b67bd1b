"""The one home of report numbers and tables, for studies and comparisons alike.

`Stat` is a mean with its sample standard deviation over `n` runs, written `0.812 ± 0.010`, or
`0.812 (n = 1)` where one run gives no spread. `difference` is Welch's two-sample interval for a
difference of means (unequal variances, Welch–Satterthwaite degrees of freedom, scipy's t
quantile). `Table` holds cells once and writes them as Markdown and HTML; `html_page` and
`png_data_uri` make one self-contained page (nothing to fetch, it opens offline).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, stdev


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over the `n` finite values (std NaN below 2)."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        finite = [float(v) for v in values if v is not None and math.isfinite(v)]
        if not finite:
            return cls(math.nan, math.nan, 0)
        return cls(fmean(finite), stdev(finite) if len(finite) > 1 else math.nan, len(finite))

    @property
    def sem(self) -> float:
        """The standard error of the mean (NaN below 2 values)."""
        return self.std / math.sqrt(self.n) if self.n > 1 else math.nan

    def text(self, digits: int = 3, scale: float = 1.0) -> str:
        """`mean ± std`, `mean (n = 1)`, or `-` for no value; values times `scale`."""
        if self.n == 0:
            return "-"
        mean = f"{self.mean * scale:.{digits}f}"
        return f"{mean} (n = 1)" if self.n == 1 else f"{mean} ± {self.std * scale:.{digits}f}"


@dataclass(frozen=True)
class Difference:
    """A difference of two means with its confidence interval [low, high]."""

    mean: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """Whether the interval leaves out zero."""
        return self.low > 0 or self.high < 0

    def text(self, digits: int = 3) -> str:
        low, high = signed(self.low, digits), signed(self.high, digits)
        return f"{signed(self.mean, digits)} [{low}, {high}]"


def signed(value: float, digits: int = 3) -> str:
    """`+0.012`, `-0.004`; a value that rounds to zero reads `+0.000`, never `-0.000`."""
    return f"{round(value, digits) + 0.0:+.{digits}f}"


def difference(a: Stat, b: Stat, confidence: float = 0.95) -> Difference | None:
    """`a.mean - b.mean` with Welch's `confidence` interval; None when either has under 2 runs."""
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    delta = a.mean - b.mean
    if va + vb == 0:  # every run of both gave the same value: no spread to widen it
        return Difference(delta, delta, delta)
    from scipy import stats  # imported here: only reports with intervals pay for it

    freedom = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, freedom)) * math.sqrt(va + vb)
    return Difference(delta, delta - half, delta + half)


@dataclass
class Table:
    """A titled table whose cells are written once and shown as Markdown or HTML."""

    title: str
    columns: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = [f"| {' | '.join(self.columns)} |", "|" + "---|" * len(self.columns)]
        lines += [f"| {' | '.join(row)} |" for row in self.rows]
        heading = f"**{self.title}**\n\n" if self.title else ""
        return heading + "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in self.rows
        )
        heading = f"<h4>{html.escape(self.title)}</h4>" if self.title else ""
        return f"{heading}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png_data_uri(path: Path) -> str:
    """An `<img>` holding the PNG at `path` itself (a data URI)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def html_page(title: str, body: list[str]) -> str:
    """One offline page: `body`'s HTML fragments under the shared style."""
    return _PAGE.format(title=html.escape(title), body="\n".join(body))


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
