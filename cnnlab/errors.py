"""Errors a user can cause. The CLI prints each as one red line and exits with code 2.

Anything else that escapes is a bug and keeps its traceback. `CnnlabWarning`s tell the user
something that does not stop the command; the CLI prints each as one yellow line.
"""

from __future__ import annotations

from collections.abc import Iterable


class CnnlabError(Exception):
    """Base class for every error caused by user input (names, files, shapes, options)."""

    exit_code = 2


class UnknownNameError(CnnlabError, KeyError):
    """A model, dataset, optimizer or other name that cnnlab does not know."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        choices = sorted(choices)
        shown = ", ".join(choices[:40]) + (", ..." if len(choices) > 40 else "")
        super().__init__(f"unknown {kind} '{name}'; choose one of: {shown}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class OptionError(CnnlabError, ValueError):
    """An option that does not exist, has a bad value, or conflicts with another."""


class InputSizeError(CnnlabError, ValueError):
    """An input shape that a model cannot take (too small, wrong channel count)."""


class DataError(CnnlabError):
    """Missing, empty, corrupt or unreadable data."""


class CheckpointError(CnnlabError):
    """A checkpoint that is missing, corrupt or does not match what it is loaded into."""


class StudyError(CnnlabError):
    """A study folder or store that is missing, corrupt, locked or from another spec."""


class CnnlabWarning(UserWarning):
    """Data or options that work, but not as the user may expect (a skipped file, a split)."""


class ExportError(CnnlabError):
    """A model that cannot be exported, or whose export does not compute what PyTorch does."""
