"""The model registry, in the manner of timm: `register_model`, `create_model`, `list_models`.

Each family module registers its variants with `@register_model(...)` on a small entrypoint
function whose keyword arguments are the variant's options. Options are explicit: an unknown
option is an error that lists the valid ones, never silently swallowed.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from cnnlab.errors import InputSizeError, OptionError, UnknownNameError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one registered variant."""

    name: str
    family: str
    description: str
    paper: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    builder: Callable[..., nn.Module] = field(repr=False)
    defaults: dict[str, object] = field(repr=False)

    @property
    def takes_image_size(self) -> bool:
        """Whether the network is built for one input size (its layer sizes depend on it)."""
        return "image_size" in self.defaults


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    input_size: tuple[int, int, int],
    paper: str,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    options: dict[str, object] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model entrypoint under its function name.

    The first line of the entrypoint's docstring becomes the model's description. The model's
    options (with their defaults) are the entrypoint's keyword-only parameters or, for an
    entrypoint that takes `**options` (variants of a family sharing one option set), the
    `options` dict given here. Either way `create_model` refuses any other option.
    """

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        parameters = inspect.signature(builder).parameters.values()
        takes_var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        if takes_var_keyword != (options is not None):
            raise TypeError(f"{name}: give options= exactly when the entrypoint takes **options")
        defaults = dict(options) if options is not None else {p.name: p.default for p in parameters}
        _REGISTRY[name] = ModelInfo(
            name=name,
            family=builder.__module__.rpartition(".")[2],
            description=(inspect.getdoc(builder) or "").splitlines()[0] if builder.__doc__ else "",
            paper=paper,
            input_size=input_size,
            mean=mean,
            std=std,
            builder=builder,
            defaults=defaults,
        )
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching `pattern`, sorted.

    A shell-style pattern (`resnet*`, `vgg1?`) matches whole names; text without wildcards
    matches anywhere in a name (`vgg` gives every VGG), as `cnnlab models PATTERN` shows.
    """
    if not set("*?[") & set(pattern):
        pattern = f"*{pattern}*"
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def model_info(name: str) -> ModelInfo:
    """The metadata of model `name`; unknown names raise an error listing the valid ones."""
    if name not in _REGISTRY:
        raise UnknownNameError("model", name, _REGISTRY)
    return _REGISTRY[name]


def resolve_options(name: str, **options: object) -> dict[str, object]:
    """The model's full option set: its defaults overridden by `options` (validated)."""
    info = model_info(name)
    unknown = sorted(set(options) - set(info.defaults))
    if unknown:
        raise OptionError(
            f"model '{name}' has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(info.defaults)}"
        )
    return {**info.defaults, **options}


def create_model(name: str, **options: object) -> nn.Module:
    """Build model `name` with `options` (e.g. `num_classes=10, in_channels=1`).

    The returned module carries `model_name` and `model_options` (the resolved options), which
    is all a checkpoint needs to rebuild it.
    """
    resolved = resolve_options(name, **options)
    model = model_info(name).builder(**resolved)
    model.model_name = name
    model.model_options = resolved
    return model


def count_parameters(name: str, **options: object) -> int:
    """Parameter count of a configuration, computed on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = model_info(name).builder(**resolve_options(name, **options))
    return sum(p.numel() for p in model.parameters())


def _accepts(name: str, options: dict[str, object], shape: tuple[int, int, int]) -> bool:
    """Whether a meta-device forward pass of one image of `shape` succeeds."""
    info = model_info(name)
    if info.takes_image_size and "image_size" not in options:
        options = {**options, "image_size": shape[1]}
    with torch.device("meta"):
        try:
            model = info.builder(**resolve_options(name, **options)).eval()
        except OptionError:
            if not info.takes_image_size:
                raise
            return False  # its layer sizes, computed from image_size, leave no feature map
        try:
            with torch.no_grad():
                model(torch.empty(1, *shape))
        except (RuntimeError, ValueError, IndexError):
            return False
    return True


def min_input_size(name: str, **options: object) -> int:
    """The smallest square input side that model `name` (with `options`) accepts."""
    resolved = resolve_options(name, **options)
    channels = int(resolved.get("in_channels", model_info(name).input_size[0]))
    sizes = (8, 16, 32, 64, 128, 256, 512, model_info(name).input_size[1])
    first = next((s for s in sizes if _accepts(name, options, (channels, s, s))), None)
    if first is None:
        raise OptionError(f"model '{name}' with these options accepts no input size up to 512")
    low, high = 0, first  # invariant: low fails (or is 0), high works
    while high - low > 1:
        mid = (low + high) // 2
        if _accepts(name, options, (channels, mid, mid)):
            high = mid
        else:
            low = mid
    return high


def check_input_size(name: str, shape: tuple[int, int, int], **options: object) -> None:
    """Raise `InputSizeError` with one clear line if model `name` cannot take `shape` (C, H, W)."""
    resolved = resolve_options(name, **options)
    channels = int(resolved.get("in_channels", model_info(name).input_size[0]))
    if shape[0] != channels:
        raise InputSizeError(
            f"model '{name}' was built for {channels}-channel input but the data has {shape[0]} "
            f"channel(s); pass in_channels={shape[0]}"
        )
    if _accepts(name, options, shape):
        return
    smallest = min_input_size(name, **options)
    hint = (
        f"resize the images (e.g. `cnnlab train --image-size {max(smallest, 32)}`)"
        if shape[1] < smallest
        else "use the model's default input size"
    )
    raise InputSizeError(
        f"model '{name}' cannot take {shape[1]}x{shape[2]} inputs; the smallest it accepts is "
        f"{smallest}x{smallest} (default {'x'.join(map(str, model_info(name).input_size))}); {hint}"
    )


def create_model_for_input(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **options: object
) -> nn.Module:
    """Build model `name` for images of `input_shape` (C, H, W) and `num_classes` classes.

    Fills `in_channels` (and `image_size` for networks built for one input size) from the
    data, refusing with one clear line when the model cannot take that shape.
    """
    info = model_info(name)
    for key, value in (("in_channels", input_shape[0]), ("num_classes", num_classes)):
        if key in options and options[key] != value:
            raise OptionError(f"{key}={options[key]} conflicts with the data ({key}={value})")
        options[key] = value
    if info.takes_image_size:
        options.setdefault("image_size", input_shape[1])
    check_input_size(name, input_shape, **options)
    return create_model(name, **options)
