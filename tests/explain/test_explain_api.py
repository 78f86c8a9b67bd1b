"""`cnnlab.explain`: Grad-CAM and saliency against independent computations, targets, hooks."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from explain_nets import SharedReluNet, TinyGapNet, randomized_batch_norm

import cnnlab
from cnnlab.errors import InputSizeError, OptionError
from cnnlab.explain import METHODS, Explanation, explain
from cnnlab.explain.hooks import LayerRecording, trace_layers
from cnnlab.explain.methods import gradcam_maps, optional_import


def _max_scaled(maps: torch.Tensor) -> np.ndarray:
    """Each map over its maximum; an all-zero map stays zero."""
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return torch.nan_to_num(maps / peak).numpy()


def test_public_api() -> None:
    assert cnnlab.explain is explain
    assert METHODS == (
        "cam", "gradcam", "gradcam++", "scorecam", "saliency", "smoothgrad", "integrated-gradients"
    )  # fmt: skip


def test_gradcam_matches_captum_layer_gradcam(net: TinyGapNet, images: torch.Tensor) -> None:
    targets = torch.tensor([0, 1, 2])
    ours = gradcam_maps(net, images, targets, "block2")
    reference = LayerGradCam(net, net.block2).attribute(
        images, target=targets, relu_attributions=True
    )
    assert reference.abs().sum() > 0
    torch.testing.assert_close(ours, reference[:, 0].detach(), rtol=1e-5, atol=1e-6)


def test_gradcam_on_a_cifar_resnet_matches_captum() -> None:
    model = randomized_batch_norm(cnnlab.create_model("resnet20", num_classes=4))
    images = torch.randn(2, 3, 32, 32)
    result = explain(model, images, "gradcam", target=[1, 3])
    assert result.layer == "layer3"
    raw = LayerGradCam(model, model.layer3).attribute(images, target=[1, 3], relu_attributions=True)
    expected = F.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    assert (expected.amax(dim=(1, 2)) > 0).any()
    np.testing.assert_allclose(result.maps, _max_scaled(expected.detach()), atol=1e-5)


def test_explanation_fields(net: TinyGapNet, images: torch.Tensor) -> None:
    result = explain(net, images)
    assert isinstance(result, Explanation)
    assert result.maps.shape == (3, 10, 10) and result.maps.dtype == np.float32
    assert result.maps.min() >= 0 and np.allclose(result.maps.max(axis=(1, 2)), 1)
    assert result.method == "gradcam" and result.layer == "block2"
    probabilities = net(images).softmax(dim=1).detach().numpy()
    np.testing.assert_allclose(result.probabilities, probabilities, rtol=1e-5)
    assert result.targets == probabilities.argmax(axis=1).tolist()


def test_saliency_matches_autograd(net: TinyGapNet) -> None:
    images = torch.randn(2, 3, 9, 9)
    model = randomized_batch_norm(TinyGapNet(in_channels=3))
    result = explain(model, images, "saliency", target=[2, 0])
    inputs = images.clone().requires_grad_(True)
    logits = model(inputs)
    (gradients,) = torch.autograd.grad(logits[0, 2] + logits[1, 0], inputs)
    expected = gradients.abs().amax(dim=1)
    np.testing.assert_allclose(result.maps, _max_scaled(expected), rtol=1e-5, atol=1e-7)
    assert result.layer == "input" and result.targets == [2, 0]


@pytest.mark.parametrize("target", [1, np.int64(1), [1, 1, 1], (1, 1, 1), torch.tensor([1, 1, 1])])
def test_fixed_target_forms(net: TinyGapNet, images: torch.Tensor, target: object) -> None:
    assert explain(net, images, "saliency", target=target).targets == [1, 1, 1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "lime"}, "unknown method 'lime'"),
        ({"target": "best"}, "target must be 'predicted'"),
        ({"target": [0, 1]}, "2 targets for 3 images"),
        ({"target": 3}, "target class 3 does not exist; the model has 3"),
        ({"layer": "block9"}, "unknown layer 'block9'; layers with feature maps: block1.0, "),
        ({"method": "saliency", "layer": "block1"}, "--layer applies to cam"),
    ],
)
def test_bad_options_are_one_line(
    net: TinyGapNet, images: torch.Tensor, options: dict, message: str
) -> None:
    with pytest.raises(
        OptionError, match=message.replace("(", r"\(").replace("+", r"\+")
    ) as caught:
        explain(net, images, **options)
    assert "\n" not in str(caught.value)


def test_images_must_be_a_float_batch(net: TinyGapNet) -> None:
    with pytest.raises(InputSizeError, match=r"float tensor \(N, C, H, W\)"):
        explain(net, torch.randn(1, 10, 10))
    with pytest.raises(InputSizeError):
        explain(net, torch.zeros(1, 1, 10, 10, dtype=torch.uint8))


def test_shared_activation_is_refused_and_blocks_are_listed() -> None:
    model = SharedReluNet().eval()
    with pytest.raises(OptionError, match="'relu' runs more than once.*conv1, conv2"):
        explain(model, torch.randn(1, 1, 8, 8), layer="relu")
    assert explain(model, torch.randn(1, 1, 8, 8), layer="conv2").layer == "conv2"


def test_frozen_weights_and_training_flag(net: TinyGapNet, images: torch.Tensor) -> None:
    net.train()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    maps = explain(net, images).maps
    assert maps.max() == pytest.approx(1.0)
    assert net.training
    assert all(parameter.grad is None for parameter in net.parameters())


def test_no_hook_or_recording_outlives_a_call(net: TinyGapNet) -> None:
    for index in range(12):
        method = METHODS[1 + index % 3]  # gradcam, gradcam++, scorecam
        explain(net, torch.randn(2, 1, 10, 10), method)
    with pytest.raises(OptionError):
        explain(net, torch.randn(2, 1, 10, 10), layer="nothing")
    for module in net.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks
    gc.collect()
    assert not [obj for obj in gc.get_objects() if type(obj) is LayerRecording]


def test_a_missing_optional_package_says_how_to_install_it() -> None:
    with pytest.raises(
        OptionError, match=r"this needs no_such_package: pip install 'cnnlab\[explain\]'"
    ):
        optional_import("no_such_package.stats")


def test_a_network_without_forward_features_needs_a_named_layer() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    with pytest.raises(OptionError, match="pass --layer with one of: 0, 1, 2"):
        explain(model, torch.randn(1, 1, 6, 6))
    assert explain(model, torch.randn(1, 1, 6, 6), layer="1").layer == "1"


@pytest.mark.parametrize(
    ("name", "block"),
    [
        ("alexnet", "features.12"),
        ("googlenet", "inception5b"),
        ("inception_v3", "Mixed_7c"),
        ("lenet5_modern", "features.s4"),
        ("nin", "features.9"),
        ("resnet20", "layer3"),
        ("resnext50_32x4d", "layer4"),
        ("vgg16_bn", "features.43"),
    ],
)
def test_auto_is_the_last_feature_block_of_every_family(name: str, block: str) -> None:
    with torch.device("meta"):
        model = cnnlab.create_model(name).eval()
    channels, height, width = cnnlab.model_info(name).input_size
    trace = trace_layers(model, torch.empty(1, channels, height, width, device="meta"))
    assert trace.last_block == block and block in trace.feature_layers
