"""Where a network looks: class activation maps and saliency maps, as one call, `explain`.

The CAM family is written here, on `hooks.record_layer` (a few lines each, and one hook
mechanism that refuses shared modules):
- `cam` (Zhou et al. 2016): the classifier's weights for the class times the last feature maps;
  only for networks that end in global average pooling and one linear layer. NiN's classifier
  is a 1x1 convolution applied before the averaging, which is the same product, so its CAM is
  the class's own map (less the bias).
- `gradcam` (Selvaraju et al. 2017): feature maps weighted by their spatially averaged
  gradients, rectified.
- `gradcam++` (Chattopadhay et al. 2018): pixel-wise weights from the second and third powers
  of the gradient (the usual closed form that assumes an exponential of the score).
- `scorecam` (Wang et al. 2020): each feature map, upsampled and scaled to [0, 1], masks the
  input; the class probability of the masked input is that map's weight.

The gradient methods come from captum: `saliency` (|gradient|, maximum over channels, as in
Simonyan et al. 2014), `smoothgrad` (the same averaged over noisy copies) and
`integrated-gradients` (zero baseline, i.e. the training mean image; |sum over channels|).
"""

from __future__ import annotations

import contextlib
import importlib
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlab.errors import InputSizeError, OptionError
from cnnlab.explain.hooks import record_layer, resolve_layer, trace_layers

LAYER_METHODS = ("cam", "gradcam", "gradcam++", "scorecam")
GRADIENT_METHODS = ("saliency", "smoothgrad", "integrated-gradients")
METHODS: tuple[str, ...] = LAYER_METHODS + GRADIENT_METHODS
INPUT_LAYER = "input"  # what gradient methods report as their layer
SMOOTHGRAD_SAMPLES = 25
SMOOTHGRAD_NOISE = 0.15  # noise std as a fraction of the input's value range (the paper's 10-20%)
INTEGRATED_GRADIENTS_STEPS = 32
SCORECAM_BATCH = 64
NOISE_SEED = 0

Target = str | int | Sequence[int]


@dataclass
class Explanation:
    """Maps of N images, (N, H, W) float32 in [0, 1] at input resolution, and what they explain."""

    maps: np.ndarray
    targets: list[int]
    probabilities: np.ndarray
    method: str
    layer: str


def explain(
    model: nn.Module,
    images: Tensor,
    method: str = "gradcam",
    target: Target = "predicted",
    layer: str = "auto",
) -> Explanation:
    """Explain `model`'s scores for `images` ((N, C, H, W), normalized as the model expects).

    `target` is "predicted" (each image's top class), one class index for all images, or one
    per image. `layer` (CAM family only) is "auto", the last feature block, or a module name.
    The model runs in eval mode on its own device; its training flag is restored afterwards.
    """
    if method not in METHODS:
        raise OptionError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
    if images.dim() != 4 or not images.is_floating_point():
        raise InputSizeError(
            f"images must be a float tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    device = next(model.parameters()).device
    inputs = images.detach().to(device, torch.float32)
    with eval_mode(model):
        with torch.no_grad():
            logits = model(inputs).float()
        targets = resolve_targets(target, logits)
        if method in LAYER_METHODS:
            layer_name = resolve_layer(model, layer, trace_layers(model, inputs[:1]))
            raw = LAYER_MAPS[method](model, inputs, targets, layer_name)
        else:
            if layer != "auto":
                raise OptionError(
                    f"--layer applies to {', '.join(LAYER_METHODS)}; {method} explains input pixels"
                )
            layer_name = INPUT_LAYER
            raw = GRADIENT_MAPS[method](model, inputs.clone().requires_grad_(True), targets)
    maps = unit_range(upsample(raw, inputs.shape[-2:]), signed=method == "cam")
    return Explanation(
        maps=maps.cpu().numpy(),
        targets=targets.tolist(),
        probabilities=logits.softmax(dim=-1).cpu().numpy(),
        method=method,
        layer=layer_name,
    )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode with autograd on; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        model.train(was_training)


def resolve_targets(target: Target, logits: Tensor) -> Tensor:
    """One class index per image: the top class, a fixed class, or the given list."""
    count, num_classes = logits.shape
    if isinstance(target, str):
        if target != "predicted":
            raise OptionError(f"target must be 'predicted' or a class index, got '{target}'")
        return logits.argmax(dim=1)
    if isinstance(target, numbers.Integral):
        indices = [int(target)] * count
    else:
        indices = [int(t) for t in target]
    if len(indices) != count:
        raise OptionError(f"{len(indices)} targets for {count} images; give one per image")
    wrong = [index for index in indices if not 0 <= index < num_classes]
    if wrong:
        raise OptionError(f"target class {wrong[0]} does not exist; the model has {num_classes}")
    return torch.tensor(indices, device=logits.device)


def upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """(N, h, w) maps resized bilinearly to `size`."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[
        :, 0
    ]


def unit_range(maps: Tensor, signed: bool = False) -> Tensor:
    """Scale each non-negative map by its maximum (zeros stay exactly zero); a `signed` map is
    shifted by its minimum first. A constant map becomes all zeros."""
    maps = maps.detach().float()
    if signed:
        maps = maps - maps.amin(dim=(1, 2), keepdim=True)
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp_min(1e-30), torch.zeros_like(maps))


def target_scores(logits: Tensor, targets: Tensor) -> Tensor:
    """Each image's logit for its target class."""
    return logits.gather(1, targets[:, None])[:, 0]


def layer_activations_and_gradients(
    model: nn.Module, inputs: Tensor, targets: Tensor, layer: str
) -> tuple[Tensor, Tensor]:
    """Layer `layer`'s output for `inputs` and the gradient of the target logits with respect to
    it. Images are independent in eval mode, so one backward pass serves the whole batch."""
    inputs = inputs.detach().requires_grad_(True)  # a graph even when all weights are frozen
    with record_layer(model, layer) as recording:
        score = target_scores(model(inputs), targets).sum()
        torch.autograd.grad(score, inputs)
    return recording.activation, recording.gradient


def gradcam_maps(model: nn.Module, inputs: Tensor, targets: Tensor, layer: str) -> Tensor:
    """Grad-CAM at the layer's resolution: ReLU(sum_k mean(dy/dA_k) A_k)."""
    activations, gradients = layer_activations_and_gradients(model, inputs, targets, layer)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations).sum(dim=1))


def gradcam_plus_plus_maps(model: nn.Module, inputs: Tensor, targets: Tensor, layer: str) -> Tensor:
    """Grad-CAM++ at the layer's resolution (closed-form alphas, as in the paper's eq. 19)."""
    activations, gradients = layer_activations_and_gradients(model, inputs, targets, layer)
    squared, cubed = gradients.pow(2), gradients.pow(3)
    denominator = 2 * squared + activations.sum(dim=(2, 3), keepdim=True) * cubed
    # No epsilon: gradients of 1e-3 square to 1e-6, where the usual 1e-6 would halve the alphas.
    defined = denominator != 0
    alphas = torch.where(defined, squared / torch.where(defined, denominator, 1), 0)
    weights = (alphas * F.relu(gradients)).sum(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations).sum(dim=1))


def scorecam_maps(model: nn.Module, inputs: Tensor, targets: Tensor, layer: str) -> Tensor:
    """Score-CAM at the layer's resolution: maps weighted by the target probability of the input
    masked by each map (upsampled with aligned corners and scaled to [0, 1])."""
    with torch.no_grad(), record_layer(model, layer) as recording:
        model(inputs)
    activations = recording.activation
    channels = activations.shape[1]
    weights = torch.empty(activations.shape[:2], device=inputs.device)
    with torch.no_grad():
        for index in range(len(inputs)):
            masks = F.interpolate(
                activations[index][:, None], inputs.shape[-2:], mode="bilinear", align_corners=True
            )
            low = masks.amin(dim=(2, 3), keepdim=True)
            high = masks.amax(dim=(2, 3), keepdim=True)
            masks = (masks - low) / torch.where(high > low, high - low, torch.ones_like(high))
            for start in range(0, channels, SCORECAM_BATCH):
                masked = inputs[index] * masks[start : start + SCORECAM_BATCH]
                probabilities = model(masked).float().softmax(dim=-1)
                weights[index, start : start + SCORECAM_BATCH] = probabilities[:, targets[index]]
    return F.relu((weights[:, :, None, None] * activations).sum(dim=1))


def cam_maps(model: nn.Module, inputs: Tensor, targets: Tensor, layer: str) -> Tensor:
    """Classic CAM: sum_k w_{class,k} A_k over the last feature maps (no bias; signed)."""
    features = _check_cam_head(model, inputs[:1])
    if layer != features:
        raise OptionError(
            f"CAM uses the last feature maps ('{features}') only; drop --layer or use gradcam"
        )
    with torch.no_grad():
        maps = model.forward_features(inputs)
        weights = _classifier_matrix(model)[targets]
    return torch.einsum("nk,nkhw->nhw", weights, maps)


def _classifier_matrix(model: nn.Module) -> Tensor:
    """The classifier's weights as (classes, features): a Linear's, or a 1x1 convolution's."""
    classifier = model.get_classifier()
    return classifier.weight.reshape(classifier.weight.shape[0], -1)


def _check_cam_head(model: nn.Module, example: Tensor) -> str:
    """The last feature block's name, if the head is global average pooling and one linear map
    of the pooled features (checked numerically on `example`); else an `OptionError`."""
    name = getattr(model, "model_name", None) or type(model).__name__
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    reason = "it has no classifier layer"
    if isinstance(classifier, nn.Linear | nn.Conv2d):
        with torch.no_grad():
            features = model.forward_features(example)
            logits = model.forward_head(features)
        weights = _classifier_matrix(model)
        reason = f"its classifier sees {weights.shape[1]} values, not the {features.shape[1]} feature maps"
        if weights.shape[1] == features.shape[1] and (
            classifier.kernel_size == (1, 1) if isinstance(classifier, nn.Conv2d) else True
        ):
            pooled = features.mean(dim=(2, 3)) @ weights.T
            if classifier.bias is not None:
                pooled = pooled + classifier.bias
            if torch.allclose(pooled, logits, rtol=1e-4, atol=1e-4):
                return resolve_layer(model, "auto", trace_layers(model, example))
            reason = "its head is more than global average pooling and one linear layer"
    raise OptionError(
        f"CAM needs a network that ends in global average pooling and one linear layer; {name} "
        f"does not ({reason}); use --method gradcam"
    )


def optional_import(name: str) -> ModuleType:
    """Import a package of the `explain` extra when first needed (captum takes seconds to
    import); a missing one is an error that says how to install it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        package = name.partition(".")[0]
        raise OptionError(f"this needs {package}: pip install 'cnnlab[explain]'") from None


def saliency_maps(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """|d score / d pixel|, the maximum over channels (captum's `Saliency`)."""
    saliency = optional_import("captum.attr").Saliency(model)
    return saliency.attribute(inputs, target=targets, abs=True).amax(dim=1)


def smoothgrad_maps(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """Saliency averaged over noisy copies of each image (captum's `NoiseTunnel`), seeded."""
    attr = optional_import("captum.attr")
    spread = (inputs.amax() - inputs.amin()).item() or 1.0
    with torch.random.fork_rng(devices=[inputs.device] if inputs.is_cuda else []):
        torch.manual_seed(NOISE_SEED)
        gradients = attr.NoiseTunnel(attr.Saliency(model)).attribute(
            inputs,
            nt_type="smoothgrad",
            nt_samples=SMOOTHGRAD_SAMPLES,
            nt_samples_batch_size=SMOOTHGRAD_SAMPLES,
            stdevs=SMOOTHGRAD_NOISE * spread,
            target=targets,
            abs=True,
        )
    return gradients.amax(dim=1)


def integrated_gradients_maps(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """|sum over channels| of integrated gradients from the zero (mean-image) baseline."""
    integrated_gradients = optional_import("captum.attr").IntegratedGradients(model)
    attributions = integrated_gradients.attribute(
        inputs,
        baselines=torch.zeros_like(inputs),
        target=targets,
        n_steps=INTEGRATED_GRADIENTS_STEPS,
        internal_batch_size=max(len(inputs), INTEGRATED_GRADIENTS_STEPS),
    )
    return attributions.sum(dim=1).abs()


LAYER_MAPS: dict[str, Callable[[nn.Module, Tensor, Tensor, str], Tensor]] = {
    "cam": cam_maps,
    "gradcam": gradcam_maps,
    "gradcam++": gradcam_plus_plus_maps,
    "scorecam": scorecam_maps,
}
GRADIENT_MAPS: dict[str, Callable[[nn.Module, Tensor, Tensor], Tensor]] = {
    "saliency": saliency_maps,
    "smoothgrad": smoothgrad_maps,
    "integrated-gradients": integrated_gradients_maps,
}
