"""cnnlab: build, train, compare, ablate, transfer and diagnose the landmark CNNs.

The public API below is imported on first use (PEP 562), so `import cnnlab` and the command
line's `--help` do not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_API = {
    "CnnlabError": "cnnlab.errors",
    "TrainConfig": "cnnlab.engine.config",
    "create_model": "cnnlab.models",
    "evaluate": "cnnlab.engine.evaluate",
    "evaluate_checkpoint": "cnnlab.engine.evaluate_run",
    "explain": "cnnlab.explain",
    "list_models": "cnnlab.models",
    "load_checkpoint": "cnnlab.engine.checkpoint",
    "model_from_checkpoint": "cnnlab.engine.checkpoint",
    "model_info": "cnnlab.models",
    "run_study": "cnnlab.studies",
    "train": "cnnlab.engine.trainer",
    "transfer": "cnnlab.transfer",
}

__all__ = sorted([*_API, "__version__"])


def __getattr__(name: str) -> object:
    if name not in _API:
        raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _verb(name: str) -> property:
    """`cnnlab.NAME`, the function, even once the subpackage `cnnlab.NAME` is imported (the
    import system then sets that subpackage as the attribute: the setter ignores it)."""
    return property(
        lambda package: getattr(importlib.import_module(_API[name]), name),
        lambda package, subpackage: None,
    )


class _Package(types.ModuleType):
    explain = _verb("explain")
    transfer = _verb("transfer")


sys.modules[__name__].__class__ = _Package
