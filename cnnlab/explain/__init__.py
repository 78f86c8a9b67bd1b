"""Visual diagnosis: where a trained network looks (`explain`), what its layers see
(`features`), and whether the maps mean anything (`sanity`)."""

from cnnlab.explain.methods import METHODS, Explanation, explain

__all__ = ["METHODS", "Explanation", "explain"]
