"""The model registry, in the manner of timm: `register_model`, `create_model`, `list_models`.

Each family module declares its options once, as a dict of `ModelOption(default, help)`, and
registers its variants with `@register_model(..., options=...)` on small entrypoints taking
`**options`. The registry gives each entrypoint the matching keyword-only signature and an
"Options" section in its docstring, so `help(cnnlab.models.resnet18)` and `cnnlab models
resnet18` show the same options, defaults and meanings. Options are explicit: an unknown option
is an error that lists the valid ones, never silently swallowed.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from cnnlab.errors import InputSizeError, OptionError, UnknownNameError
from cnnlab.weights import load_builtin_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelOption:
    """One option of a model family: its default and what it changes, in a few words.

    A `None` default follows another option (LeNet-5's `conv_activation` follows
    `activation`); such an option names the type of its values in `kind`.
    """

    default: object
    help: str
    kind: type | None = None

    @property
    def value_type(self) -> type:
        """The type every value of the option has: `kind`, else the default's type."""
        return self.kind or type(self.default)


def num_classes_option(default: int = 1000) -> ModelOption:
    return ModelOption(default, "classes the classifier predicts (set from the data when training)")


def in_channels_option(default: int = 3) -> ModelOption:
    return ModelOption(
        default, "channels of the input images: 1 grayscale, 3 RGB (set from the data)"
    )


def dropout_option(default: float) -> ModelOption:
    return ModelOption(default, "dropout probability before the classifier's linear layers")


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one registered variant.

    `mean`/`std` are the normalization its reference weights (ImageNet, MNIST, CIFAR-10) were
    trained with: the default when those weights are loaded or transferred.
    """

    name: str
    family: str
    description: str
    paper: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    builder: Callable[..., nn.Module] = field(repr=False)
    options: dict[str, ModelOption] = field(repr=False)

    @property
    def defaults(self) -> dict[str, object]:
        """Each option's default value."""
        return {name: option.default for name, option in self.options.items()}

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
    options: dict[str, ModelOption],
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model entrypoint (taking `**options`) under its function name.

    The first line of the entrypoint's docstring becomes the model's description; `options`
    are the variant's options with defaults and meanings. `create_model` refuses any other.
    """

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        parameters = inspect.signature(builder).parameters.values()
        if [p.kind for p in parameters] != [inspect.Parameter.VAR_KEYWORD]:
            raise TypeError(f"{name}: a model entrypoint takes **options only")
        _document_options(builder, options)
        _REGISTRY[name] = ModelInfo(
            name=name,
            family=builder.__module__.rpartition(".")[2],
            description=(inspect.getdoc(builder) or "").splitlines()[0] if builder.__doc__ else "",
            paper=paper,
            input_size=input_size,
            mean=mean,
            std=std,
            builder=builder,
            options=dict(options),
        )
        return builder

    return decorate


def _document_options(builder: Callable[..., nn.Module], options: dict[str, ModelOption]) -> None:
    """Give `builder` the keyword-only signature and the docstring section of its options."""
    builder.__signature__ = inspect.Signature(
        [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option.default)
            for name, option in options.items()
        ],
        return_annotation=inspect.signature(builder).return_annotation,
    )
    lines = [
        f"    {name} (default {option.default!r}): {option.help}"
        for name, option in options.items()
    ]
    builder.__doc__ = f"{inspect.getdoc(builder) or ''}\n\nOptions:\n" + "\n".join(lines)


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
    """The model's full option set: its defaults overridden by `options` (validated).

    Each value must have its default's type (a bool, a whole number, a number, a string);
    whole numbers are counts or sizes (at least 1), numbers are at least 0 and dropout
    probabilities below 1. Which strings a family takes, it checks itself.
    """
    info = model_info(name)
    unknown = sorted(set(options) - set(info.defaults))
    if unknown:
        closest = difflib.get_close_matches(unknown[0], info.defaults, n=1)
        suggestion = f"did you mean '{closest[0]}'? " if closest else ""
        raise OptionError(
            f"model '{name}' has no option {', '.join(map(repr, unknown))}; {suggestion}"
            f"valid options: {', '.join(info.defaults)}"
        )
    for option, value in options.items():
        declared = info.options[option]
        if value is None and declared.default is None:
            continue  # None: follow the option it defaults to
        expected = _expected_value(option, declared.value_type, value)
        if expected:
            raise OptionError(f"model '{name}': {option}={value!r} is not valid; {expected}")
    return {**info.defaults, **options}


def _expected_value(option: str, kind: type, value: object) -> str | None:
    """What `value` should be, judged by the option's type; None when it is fine."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if issubclass(kind, bool):
        return None if isinstance(value, bool) else f"{option} is true or false"
    if issubclass(kind, int):
        fine = number and value == int(value) and value >= 1
        return None if fine else f"{option} is a whole number >= 1"
    if issubclass(kind, float):
        if option.endswith("dropout"):
            fine = number and 0 <= value < 1
            return None if fine else f"{option} is a drop probability in [0, 1)"
        return None if number and value >= 0 else f"{option} is a number >= 0"
    if issubclass(kind, str) and not isinstance(value, str):
        return f"{option} is a name (a string)"
    return None


def create_model(name: str, weights: str | None = None, **options: object) -> nn.Module:
    """Build model `name` with `options` (e.g. `num_classes=10, in_channels=1`).

    `weights` names built-in trained weights of the model (e.g. `"cifar10"` for
    `resnet20`; see `cnnlab.weights`): the model is built with their options (which `options`
    may not contradict) and loaded with them. The returned module carries `model_name` and
    `model_options` (the resolved options), which is all a checkpoint needs to rebuild it.
    """
    state = None
    if weights is not None:
        state = load_builtin_weights(f"{name}.{weights}")
        trained = state["model_options"]
        for key, value in options.items():
            if key in trained and trained[key] != value:
                raise OptionError(
                    f"{name}.{weights} was trained with {key}={trained[key]!r}, not {value!r}; "
                    "to train on other data start from it with cnnlab.transfer"
                )
        options = {**trained, **options}
    resolved = resolve_options(name, **options)
    model = model_info(name).builder(**resolved)
    if state is not None:
        model.load_state_dict(state["model_state"])
    model.model_name = name
    model.model_options = resolved
    return model


def count_parameters(name: str, **options: object) -> int:
    """Parameter count of a configuration, computed on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = model_info(name).builder(**resolve_options(name, **options))
    return sum(p.numel() for p in model.parameters())


def _accepts(name: str, options: dict[str, object], shape: tuple[int, int, int]) -> bool:
    """Whether a meta-device forward pass of one image of `shape` succeeds.

    Networks built for one input size are built for `shape` unless `options` fix `image_size`.
    Only errors of the size are a "no": a bad option value raises its own `OptionError`.
    """
    info = model_info(name)
    if info.takes_image_size and "image_size" not in options:
        options = {**options, "image_size": shape[1]}
    with torch.device("meta"):
        try:
            model = info.builder(**resolve_options(name, **options)).eval()
        except InputSizeError:
            return False  # layer sizes computed from image_size leave no feature map
        try:
            with torch.no_grad():
                model(torch.empty(1, *shape))
        except (RuntimeError, ValueError, IndexError):
            return False
    return True


def min_input_size(name: str, **options: object) -> int:
    """The smallest square input side that model `name` (with `options`) accepts.

    For networks built for one input size, the smallest `image_size` they can be built for
    (an `image_size` in `options` is ignored: it follows the input).
    """
    info = model_info(name)
    resolved = resolve_options(name, **options)
    if info.takes_image_size:
        options = {key: value for key, value in options.items() if key != "image_size"}
    channels = int(resolved.get("in_channels", info.input_size[0]))
    sizes = (8, 16, 32, 64, 128, 256, 512, info.input_size[1])
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
    info = model_info(name)
    resolved = resolve_options(name, **options)
    channels = int(resolved.get("in_channels", info.input_size[0]))
    if shape[0] != channels:
        raise InputSizeError(
            f"model '{name}' was built for {channels}-channel input but the data has {shape[0]} "
            f"channel(s); pass in_channels={shape[0]}"
        )
    if _accepts(name, options, shape):
        return
    smallest = min_input_size(name, **options)
    side = min(shape[1:])
    if side >= smallest and info.takes_image_size:
        raise InputSizeError(
            f"model '{name}' was built for image_size={resolved['image_size']} and cannot take "
            f"{shape[1]}x{shape[2]} inputs; build it with image_size={shape[1]} "
            f"(`--model-opt image_size={shape[1]}`) or resize the images to "
            f"{resolved['image_size']} px (`--image-size {resolved['image_size']}`)"
        )
    hint = (
        f"resize the images to at least {smallest}x{smallest} "
        f"(e.g. `cnnlab train --image-size {smallest}`)"
        if side < smallest
        else "use the model's default input size"
    )
    small_form_fits = "small_input" in info.defaults and not resolved.get("small_input")
    if small_form_fits and _accepts(name, {**options, "small_input": True}, shape):
        hint = f"build its small-input form (`--model-opt small_input=true`) or {hint}"
    raise InputSizeError(
        f"model '{name}' cannot take {shape[1]}x{shape[2]} inputs; the smallest it accepts is "
        f"{smallest}x{smallest} (default {'x'.join(map(str, info.input_size))}); {hint}"
    )


def input_size_error(model: nn.Module, images: object) -> InputSizeError | None:
    """The registry's one-line error when `model` (from `create_model`) cannot take `images`.

    None when the model is not a registered one or the shape is not the problem.
    """
    name = getattr(model, "model_name", None)
    if name is None or not isinstance(images, torch.Tensor) or images.dim() != 4:
        return None
    try:
        check_input_size(name, tuple(images.shape[1:]), **model.model_options)
    except InputSizeError as error:
        return error
    return None


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
