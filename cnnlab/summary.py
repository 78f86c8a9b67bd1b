"""Model summaries: a per-layer table, parameter counts, MACs/FLOPs and activation memory.

One forward pass of one image, on the meta device wherever the model allows it, gives
everything: forward hooks on the leaf modules record each layer's output shape, and
`torch.utils.flop_counter.FlopCounterMode` counts the FLOPs of every matrix product and
convolution (a multiply-accumulate is two FLOPs). Meta tensors carry shapes but no storage, so
VGG-19 or ResNet-152 summarize in milliseconds without allocating their weights.

Layers the pass does not run (auxiliary classifiers, used in training only) are listed
after the others with their parameters, so the parameter column sums to the model's total.

Activations follow one rule (see docs/summary.md): the input plus the output of every
convolution, pooling and fully connected layer. Activation functions, normalization, dropout
and an adaptive pool that leaves its input's shape unchanged add nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.errors import InputSizeError, OptionError
from cnnlab.models.registry import create_model_for_input, model_info

# Layers whose outputs count as activations. Pooling that cannot change the shape of its
# input (an adaptive pool already at its target size) is an identity and is skipped.
_ACTIVATION_LAYERS = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._LPPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)
_ADAPTIVE_POOLS = (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)


@dataclass(frozen=True)
class LayerSummary:
    """One call of a leaf module, with its output shape per image (without the batch axis).

    `params` counts the module's parameters on its first call only, so the column sums to the
    model's total; `activations` is the number of output values the counting rule keeps.
    """

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    activations: int


@dataclass(frozen=True)
class ModelSummary:
    """Per-layer rows and exact totals of a model for one input size.

    `flops`, `macs` and `activations` are per image; `batch_size` only scales the training
    memory estimate.
    """

    model: str
    input_size: tuple[int, int, int]
    batch_size: int
    layers: tuple[LayerSummary, ...]
    params: int
    trainable_params: int
    flops: int
    activations: int

    BYTES_PER_VALUE: ClassVar[int] = 4  # float32

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image: convolutions and matrix products cost 2 FLOPs each."""
        return self.flops // 2

    @property
    def param_bytes(self) -> int:
        """Memory of the parameters in float32."""
        return self.params * self.BYTES_PER_VALUE

    @property
    def activation_bytes(self) -> int:
        """Memory of one image's activations in float32."""
        return self.activations * self.BYTES_PER_VALUE

    def training_memory_bytes(self, optimizer_slots: int = 1) -> int:
        """Estimated float32 memory of one training step at `batch_size`.

        parameters + (gradient + `optimizer_slots` state tensors) per trainable parameter +
        saved activations for the batch. `optimizer_slots` is 0 for plain SGD, 1 for SGD with
        momentum, 2 for Adam/AdamW. Not included: outputs of normalization and non-in-place
        activation layers, dropout masks, convolution workspaces and allocator overhead.
        """
        values = (
            self.params
            + self.trainable_params * (1 + optimizer_slots)
            + self.batch_size * self.activations
        )
        return values * self.BYTES_PER_VALUE

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: totals, memory estimates and the per-layer rows."""
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "batch_size": self.batch_size,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "flops": self.flops,
            "activations": self.activations,
            "param_bytes": self.param_bytes,
            "activation_bytes": self.activation_bytes,
            "training_memory_bytes": self.training_memory_bytes(),
            "layers": [
                {**asdict(layer), "output_shape": list(layer.output_shape)} for layer in self.layers
            ],
        }


def summarize(
    model: nn.Module | str,
    input_size: tuple[int, int, int],
    *,
    batch_size: int = 1,
    **model_options: object,
) -> ModelSummary:
    """Summarize `model` (a module, or a registered name built for `input_size`).

    A name is built on the meta device as `create_model_for_input` would build it for data of
    `input_size` (C, H, W): `in_channels` from the input, `image_size` for networks that take
    it, and `model_options` (e.g. `num_classes=10`) on top. A module is summarized as it is
    (its parameters are neither moved nor changed).
    """
    input_size = _check_input_size(input_size)
    if batch_size < 1:
        raise OptionError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(model, str):
        name, module = model, _build_on_meta(model, input_size, model_options)
    elif model_options:
        raise OptionError(
            f"options {', '.join(model_options)} apply to a model name, not to a built module"
        )
    else:
        name, module = getattr(model, "model_name", type(model).__name__), model
    with _eval_mode(module):
        layers, flops = _trace(module, input_size)
    return ModelSummary(
        model=name,
        input_size=input_size,
        batch_size=batch_size,
        layers=tuple(layers),
        params=sum(p.numel() for p in module.parameters()),
        trainable_params=sum(p.numel() for p in module.parameters() if p.requires_grad),
        flops=flops,
        activations=math.prod(input_size) + sum(layer.activations for layer in layers),
    )


def _check_input_size(input_size: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_size) != 3 or any(int(side) < 1 for side in input_size):
        raise InputSizeError(
            f"input size must be three positive numbers (C, H, W), got {tuple(input_size)}"
        )
    channels, height, width = (int(side) for side in input_size)
    return channels, height, width


def _build_on_meta(
    name: str, input_size: tuple[int, int, int], options: dict[str, object]
) -> nn.Module:
    options = dict(options)
    num_classes = options.pop("num_classes", model_info(name).defaults["num_classes"])
    with torch.device("meta"):
        return create_model_for_input(name, input_size, num_classes, **options)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the summary; every submodule's own mode is restored afterwards."""
    modes = {sub: sub.training for sub in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes.items():
            sub.training = training


def _trace(module: nn.Module, input_size: tuple[int, int, int]) -> tuple[list[LayerSummary], int]:
    """Rows of every leaf-module call and the total FLOPs of one forward pass of one image."""
    try:
        return _trace_on(module, input_size, torch.device("meta"))
    except (NotImplementedError, RuntimeError):
        # An operation without a meta kernel (or one that reads values): run for real.
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        try:
            return _trace_on(module, input_size, device)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0]
            raise InputSizeError(
                f"{type(module).__name__} cannot take a {'x'.join(map(str, input_size))} "
                f"input: {first_line}"
            ) from error


def _trace_on(
    module: nn.Module, input_size: tuple[int, int, int], device: torch.device
) -> tuple[list[LayerSummary], int]:
    names = {sub: name for name, sub in module.named_modules()}
    leaves = [sub for sub in names if next(sub.children(), None) is None]
    layers: list[LayerSummary] = []
    seen: set[nn.Module] = set()
    counter = FlopCounterMode(display=False)
    flops_before: list[int] = []

    def before(sub: nn.Module, args: tuple) -> None:
        flops_before.append(counter.get_total_flops())

    def after(sub: nn.Module, args: tuple, output: object) -> None:
        first_call = sub not in seen
        seen.add(sub)
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        layers.append(
            LayerSummary(
                name=names[sub] or type(sub).__name__,
                type=type(sub).__name__,
                output_shape=shape,
                params=sum(p.numel() for p in sub.parameters()) if first_call else 0,
                macs=(counter.get_total_flops() - flops_before.pop()) // 2,
                activations=_counted_activations(sub, args, shape),
            )
        )

    handles = [sub.register_forward_pre_hook(before) for sub in leaves]
    handles += [sub.register_forward_hook(after) for sub in leaves]
    try:
        with counter, torch.no_grad():
            _forward(module, torch.zeros(1, *input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    # Layers the eval-mode pass skips (auxiliary classifiers) still hold parameters: listed
    # too, so the parameter column sums to the model's total.
    for sub in leaves:
        params = sum(p.numel() for p in sub.parameters())
        if sub not in seen and params:
            kind = f"{type(sub).__name__} (not run in eval mode)"
            layers.append(LayerSummary(names[sub], kind, (), params, 0, 0))
    return layers, counter.get_total_flops()


def _forward(module: nn.Module, x: torch.Tensor) -> object:
    """Run `module` on `x`, with stand-in meta tensors for its state when `x` is on meta."""
    if x.device.type != "meta":
        return module(x)
    state = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    meta_state = {key: torch.empty_like(value, device="meta") for key, value in state.items()}
    return functional_call(module, meta_state, (x,))


def _counted_activations(module: nn.Module, args: tuple, shape: tuple[int, ...]) -> int:
    if not isinstance(module, _ACTIVATION_LAYERS) or not shape:
        return 0
    inputs = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if isinstance(module, _ADAPTIVE_POOLS) and inputs is not None and inputs.shape[1:] == shape:
        return 0
    return math.prod(shape)
