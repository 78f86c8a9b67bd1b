"""cnnlab: build, train, compare, ablate, transfer and diagnose the landmark CNNs."""

from cnnlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.evaluate import evaluate
from cnnlab.engine.evaluate_run import evaluate_checkpoint
from cnnlab.engine.trainer import train
from cnnlab.errors import CnnlabError
from cnnlab.explain import explain
from cnnlab.models import create_model, list_models, model_info
from cnnlab.studies import run_study
from cnnlab.transfer import transfer

__version__ = "0.1.0"

__all__ = [
    "CnnlabError",
    "TrainConfig",
    "__version__",
    "create_model",
    "evaluate",
    "evaluate_checkpoint",
    "explain",
    "list_models",
    "load_checkpoint",
    "model_from_checkpoint",
    "model_info",
    "run_study",
    "train",
    "transfer",
]
