"""CAM, Grad-CAM++, Score-CAM, SmoothGrad and integrated gradients against independent values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from explain_nets import FlattenHeadNet, TinyGapNet, randomized_batch_norm
from pytorch_grad_cam import GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import cnnlab
from cnnlab.errors import OptionError
from cnnlab.explain import explain
from cnnlab.explain.methods import cam_maps, gradcam_plus_plus_maps, scorecam_maps

TARGETS = torch.tensor([0, 2, 1])


class LinearNet(TinyGapNet):
    """`TinyGapNet` without its nonlinearities: every gradient is the same for every input."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2[1](self.block2[0](self.block1[0](x)))


def _hooked_activations_and_gradients(
    model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """A plain forward hook and torch.autograd.grad, independent of cnnlab's hooks."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, output: seen.append(output))
    try:
        logits = model(images)
    finally:
        handle.remove()
    (gradients,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), seen[0])
    return seen[0].detach().numpy(), gradients.numpy()


def _max_scaled(maps: np.ndarray) -> np.ndarray:
    return maps / maps.max(axis=(1, 2), keepdims=True)


def test_cam_is_the_class_weighted_sum_of_the_last_feature_maps(
    net: TinyGapNet, images: torch.Tensor
) -> None:
    features = net.forward_features(images).detach()
    expected = torch.zeros(3, 10, 10)
    for n, target in enumerate(TARGETS.tolist()):
        for k in range(features.shape[1]):
            expected[n] += net.fc.weight[target, k].item() * features[n, k]
    torch.testing.assert_close(cam_maps(net, images, TARGETS, "block2"), expected)
    maps = explain(net, images, "cam", target=TARGETS.tolist()).maps
    low = expected.amin(dim=(1, 2), keepdim=True)
    scaled = (expected - low) / (expected.amax(dim=(1, 2), keepdim=True) - low)
    np.testing.assert_allclose(maps, scaled.numpy(), atol=1e-6)


def test_nin_cam_is_the_class_map_of_its_1x1_classifier() -> None:
    model = cnnlab.create_model("nin", num_classes=5, dropout=0.0).eval()
    images = torch.randn(1, 3, 131, 131)  # 3x3 class maps
    result = explain(model, images, "cam", target=3)
    assert result.layer == "features.9"
    with torch.no_grad():
        class_map = model.classifier(model.forward_features(images))[:, 3:4]
    assert class_map.shape[-2:] == (3, 3)
    class_map = F.interpolate(class_map, size=(131, 131), mode="bilinear")[:, 0]
    class_map = class_map - class_map.amin()  # the bias is gone too
    np.testing.assert_allclose(result.maps, (class_map / class_map.amax()).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "make_model",
    [lambda: FlattenHeadNet(side=16), lambda: cnnlab.create_model("lenet5_modern", image_size=16)],
)
def test_cam_is_refused_without_global_average_pooling(make_model) -> None:
    model = make_model().eval()
    with pytest.raises(OptionError, match=r"global average pooling and one linear layer.*gradcam"):
        explain(model, torch.randn(1, 1, 16, 16), "cam")
    assert explain(model, torch.randn(1, 1, 16, 16), "gradcam").maps.shape == (1, 16, 16)


def test_cam_takes_only_the_last_feature_maps(net: TinyGapNet, images: torch.Tensor) -> None:
    with pytest.raises(OptionError, match="CAM uses the last feature maps \\('block2'\\) only"):
        explain(net, images, "cam", layer="block1")


def test_gradcam_plus_plus_matches_pytorch_grad_cam(net: TinyGapNet, images: torch.Tensor) -> None:
    with torch.no_grad():
        net.fc.weight *= 100  # gradients well above pytorch-grad-cam's epsilon (1e-6 on g^2)
    activations, gradients = _hooked_activations_and_gradients(net, net.block2, images, TARGETS)
    with GradCAMPlusPlus(net, target_layers=[net.block2]) as reference:
        expected = reference.get_cam_image(images, net.block2, None, activations, gradients)
    ours = gradcam_plus_plus_maps(net, images, TARGETS, "block2")
    assert expected.max() > 0
    np.testing.assert_allclose(ours.numpy(), np.maximum(expected, 0), rtol=1e-3, atol=1e-5)


def test_scorecam_matches_pytorch_grad_cam(net: TinyGapNet, images: torch.Tensor) -> None:
    # pytorch-grad-cam softmaxes the target's scores across channels; on log-probabilities that
    # is the paper's class probability up to a factor per image, which max-scaling removes.
    log_probabilities = nn.Sequential(net, nn.LogSoftmax(dim=1)).eval()
    activations, _ = _hooked_activations_and_gradients(net, net.block2, images, TARGETS)
    targets = [ClassifierOutputTarget(int(target)) for target in TARGETS]
    with ScoreCAM(log_probabilities, target_layers=[net.block2]) as reference:
        expected = reference.get_cam_image(images, net.block2, targets, activations, None)
    ours = scorecam_maps(net, images, TARGETS, "block2").numpy()
    np.testing.assert_allclose(_max_scaled(ours), _max_scaled(np.maximum(expected, 0)), atol=1e-4)


def test_smoothgrad_equals_saliency_on_a_linear_network(images: torch.Tensor) -> None:
    model = randomized_batch_norm(LinearNet())
    smooth = explain(model, images, "smoothgrad", target=1).maps
    np.testing.assert_allclose(smooth, explain(model, images, "saliency", target=1).maps, atol=1e-5)


def test_smoothgrad_is_seeded_and_smooths(net: TinyGapNet, images: torch.Tensor) -> None:
    first = explain(net, images, "smoothgrad", target=1).maps
    np.testing.assert_array_equal(first, explain(net, images, "smoothgrad", target=1).maps)
    assert not np.allclose(first, explain(net, images, "saliency", target=1).maps, atol=1e-3)


def test_integrated_gradients_is_input_times_gradient_on_a_linear_network(
    images: torch.Tensor,
) -> None:
    model = randomized_batch_norm(LinearNet())
    result = explain(model, images, "integrated-gradients", target=TARGETS.tolist())
    inputs = images.clone().requires_grad_(True)
    (gradients,) = torch.autograd.grad(model(inputs).gather(1, TARGETS[:, None]).sum(), inputs)
    # Linear from the zero baseline: the path integral of the gradient is the gradient itself.
    expected = (images * gradients).sum(dim=1).abs().numpy()
    np.testing.assert_allclose(result.maps, _max_scaled(expected), atol=1e-4)
