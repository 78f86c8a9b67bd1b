"""The model zoo. Importing this package registers every family."""

from cnnlab.models import alexnet, googlenet, inception, lenet, nin, resnet, vgg  # noqa: F401
from cnnlab.models.registry import (
    check_input_size,
    count_parameters,
    create_model,
    create_model_for_input,
    list_models,
    min_input_size,
    model_info,
    register_model,
)

__all__ = [
    "check_input_size",
    "count_parameters",
    "create_model",
    "create_model_for_input",
    "list_models",
    "min_input_size",
    "model_info",
    "register_model",
]
