"""`cnnlab compare`: several architectures trained on one dataset, with one table and plots.

`recipes` picks each model's training recipe at the data's resolution, `runner` trains every
model and seed as the runs of a study store (resuming like a study), `report` writes the table
and the plots.
"""

from cnnlab.compare.report import report_title, summarize_results, write_report
from cnnlab.compare.runner import CompareSpec, is_comparison, run_compare, stored_records

__all__ = [
    "CompareSpec",
    "is_comparison",
    "report_title",
    "run_compare",
    "stored_records",
    "summarize_results",
    "write_report",
]
