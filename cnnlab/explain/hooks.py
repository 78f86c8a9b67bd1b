"""Finding and watching a network's layers: the feature layers it has, the last feature block,
and a context manager that records one layer's output and the gradient flowing back into it.

Layers are addressed by their dotted module names (`layer4.1`, `features.s4`). A module called
more than once in one forward pass (a ReLU shared by a block's two convolutions) has no single
output, so it is refused as a target: explanations target blocks, never shared activations.
Hooks are removed when the `with` block ends, however it ends, so none outlives one call.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from cnnlab.errors import OptionError

MAX_LISTED_LAYERS = 40


@dataclass
class LayerTrace:
    """The modules that ran in one `forward_features` pass, in the order they finished.

    `feature_layers` are those that ran once and returned a 4-D map; `last_block` is the block
    whose output is the trunk's output, what `layer="auto"` explains.
    """

    feature_layers: list[str]
    shared: set[str]
    last_block: str | None


def trace_layers(model: nn.Module, example: Tensor) -> LayerTrace:
    """Run `model.forward_features` (a network without one: `model`) on `example`, without
    gradients, and note what each module did."""
    finished: list[tuple[str, weakref.ref]] = []
    calls: Counter[str] = Counter()
    four_d: set[str] = set()

    def note(name: str, _module: nn.Module, _inputs: object, output: object) -> None:
        calls[name] += 1
        if isinstance(output, Tensor):
            finished.append((name, weakref.ref(output)))
            if output.dim() == 4:
                four_d.add(name)

    handles = [
        module.register_forward_hook(lambda *args, name=name: note(name, *args))
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            trunk_output = getattr(model, "forward_features", model)(example)
    finally:
        for handle in handles:
            handle.remove()
    shared = {name for name, count in calls.items() if count > 1}
    order = list(dict.fromkeys(name for name, _ in finished))
    feature_layers = [name for name in order if name in four_d and name not in shared]
    producers = [name for name, ref in finished if ref() is trunk_output]
    return LayerTrace(feature_layers, shared, _last_block(producers, shared, order))


def _last_block(producers: list[str], shared: set[str], ran: list[str]) -> str | None:
    """The outermost module that returns the trunk's output and is not the whole trunk (a
    ResNet's `layer4`, VGG's last pooling layer, NiN's last mlpconv block).

    It must run once, and only its own parents may finish after it: an in-place op (a ReLU)
    finishing later would change the map it returned.
    """
    valid = [
        name
        for index, name in enumerate(producers)
        if name not in shared
        and all(name.startswith(parent + ".") for parent in producers[index + 1 :])
    ]
    blocks = [
        name
        for name in valid
        if not all(other.startswith(name + ".") for other in ran if other != name)
    ]
    if not valid:
        return None
    return min(blocks, key=lambda name: name.count(".")) if blocks else valid[0]


def resolve_layer(model: nn.Module, layer: str, trace: LayerTrace) -> str:
    """The module name `layer` stands for (`auto`: the last feature block), checked to exist."""
    if layer == "auto":
        if trace.last_block not in trace.feature_layers:
            raise OptionError(
                f"cannot find the last feature block of {type(model).__name__} by itself; "
                f"pass --layer with one of: {_listing(trace.feature_layers)}"
            )
        return trace.last_block
    if layer in trace.shared:
        raise OptionError(
            f"layer '{layer}' runs more than once per forward pass (a shared activation), so it "
            f"has no single output; choose a block instead, one of: {_listing(trace.feature_layers)}"
        )
    if layer not in trace.feature_layers and layer in dict(model.named_modules()):
        raise OptionError(
            f"layer '{layer}' has no feature maps (it is not in the convolutional trunk); "
            f"layers with feature maps: {_listing(trace.feature_layers)}"
        )
    if layer not in trace.feature_layers:
        raise OptionError(
            f"unknown layer '{layer}'; layers with feature maps: {_listing(trace.feature_layers)}"
        )
    return layer


def _listing(names: list[str]) -> str:
    """Layer names in forward order; a long list keeps the shallower names and counts the rest."""
    if len(names) <= MAX_LISTED_LAYERS:
        return ", ".join(names)
    depth = 0
    while sum(name.count(".") <= depth + 1 for name in names) <= MAX_LISTED_LAYERS:
        depth += 1
    shown = [name for name in names if name.count(".") <= depth]
    return ", ".join(shown) + f" (and {len(names) - len(shown)} deeper layers)"


@dataclass
class LayerRecording:
    """What a hooked layer produced: its output and the gradient that reached it, per call."""

    name: str
    activations: list[Tensor] = field(default_factory=list)
    gradients: list[Tensor] = field(default_factory=list)

    @property
    def activation(self) -> Tensor:
        return self._single(self.activations, "ran")

    @property
    def gradient(self) -> Tensor:
        return self._single(self.gradients, "received a gradient")

    def _single(self, values: list[Tensor], what: str) -> Tensor:
        if len(values) != 1:
            raise OptionError(
                f"layer '{self.name}' {what} {len(values)} times in one pass; "
                "choose a block that runs once"
            )
        return values[0]


@contextlib.contextmanager
def record_layer(model: nn.Module, name: str) -> Iterator[LayerRecording]:
    """Record the output of module `name` (detached) and, in backward, its output's gradient.

    The gradient hook sits on the output tensor itself, so it sees the gradient with respect to
    the output as the module returned it, even when an in-place op (a ReLU) changes it later;
    the recorded activation is a copy taken at the same moment, so the two always match.
    """
    recording = LayerRecording(name)

    def on_output(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        recording.activations.append(output.detach().clone())
        if output.requires_grad:
            output.register_hook(recording.gradients.append)

    handle = model.get_submodule(name).register_forward_hook(on_output)
    try:
        yield recording
    finally:
        handle.remove()
