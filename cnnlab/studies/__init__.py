"""Ablation studies: a YAML spec of factors and seeds, a SQLite store, workers, and reports."""

from cnnlab.studies.runner import StudyOutcome, run_study
from cnnlab.studies.spec import StudySpec

__all__ = ["StudyOutcome", "StudySpec", "run_study"]
