"""LeNet-5, from LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 86(11), 1998.

C1 (6 maps, 5x5) -> S2 (2x2 subsampling) -> C3 (16 maps, 5x5) -> S4 -> C5 (120) -> F6 (84) ->
output. `lenet5` is the network as it is usually reproduced (d2l): sigmoid units and average
pooling. `lenet5_modern` is the same network with ReLU, max pooling and batch normalization,
which trains in a fraction of the steps.

The layer sizes depend on the input side, so both take `image_size`; the flattened size that
feeds C5 is computed from it together with `kernel_size`, `c1_kernel_size` and `pool_size`.

Two options reproduce the classic Fashion-MNIST ablation, which changed single layers:
`conv_activation` is the activation of C1 and C3 only (the sigmoids of C5 and F6 stay), and
`c1_kernel_size` the kernel of C1 only. Both default to the network-wide option
(`activation`, `kernel_size`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.errors import InputSizeError, OptionError
from cnnlab.models.layers import ClassifierNet, make_activation, make_pool
from cnnlab.models.registry import (
    ModelOption,
    in_channels_option,
    num_classes_option,
    register_model,
)

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

# The paper centres the 28x28 MNIST digits in a 32x32 field, so C1 sees 32x32 inputs.
PAPER_FIELD = 32


def _c1_padding(image_size: int, kernel_size: int) -> tuple[int, int]:
    """Zero padding of C1 (before, after) on each axis: 'same' below the paper's 32x32 field.

    At 28x28 a 5x5 kernel pads by 2 (d2l's choice), which reproduces the paper's
    28 -> 14 -> 10 -> 5. An even kernel cannot be centred: it pads one more after (right and
    bottom) than before, as PyTorch's and TensorFlow's 'same' padding do, so C1 still keeps
    28 -> 28 (a 4x4 kernel pads 1 before and 2 after).
    """
    if image_size >= PAPER_FIELD:
        return 0, 0
    return (kernel_size - 1) // 2, kernel_size // 2


def _feature_side(image_size: int, kernel_size: int, pool_size: int, c1_kernel_size: int) -> int:
    """Side of S4's maps: two rounds of (convolution, non-overlapping pooling)."""
    if min(kernel_size, pool_size, c1_kernel_size) < 1:
        raise OptionError(
            f"kernel_size, c1_kernel_size and pool_size must be >= 1, "
            f"got {kernel_size}, {c1_kernel_size}, {pool_size}"
        )
    if c1_kernel_size > image_size:
        raise InputSizeError(
            f"LeNet-5's c1_kernel_size={c1_kernel_size} is larger than the image allows "
            f"(image_size={image_size}: at most {image_size})"
        )
    side = image_size + sum(_c1_padding(image_size, c1_kernel_size))
    for kernel in (c1_kernel_size, kernel_size):  # C1/S2, then C3/S4
        side = (side - kernel + 1) // pool_size
        if side < 1:
            raise InputSizeError(
                f"LeNet-5 with kernel_size={kernel_size} and pool_size={pool_size} leaves no "
                f"feature map at image_size={image_size}; use larger images or a smaller kernel_size or pool_size"
            )
    return side


def _layer(
    name: str, layer: nn.Conv2d | nn.Linear, activation: str, batch_norm: bool
) -> list[tuple[str, nn.Module]]:
    """A named convolution or fully connected layer, its optional batch norm and activation."""
    modules: list[tuple[str, nn.Module]] = [(name, layer)]
    if batch_norm:
        if isinstance(layer, nn.Conv2d):
            modules.append((f"{name}_bn", nn.BatchNorm2d(layer.out_channels)))
        else:
            modules.append((f"{name}_bn", nn.BatchNorm1d(layer.out_features)))
    modules.append((f"{name}_act", make_activation(activation)))
    return modules


class LeNet5(ClassifierNet):
    """LeNet-5 with configurable activations, pooling, kernel and pooling sizes.

    Deviations from the paper, all as in d2l and every modern reproduction:
    - C3 connects to all six S2 maps (2,416 weights) instead of the paper's hand-made sparse
      connection table (1,516 weights);
    - S2/S4 are plain pooling layers; the paper's subsampling units also had a trainable
      coefficient and bias per map, followed by the squashing function;
    - the output layer is a linear layer trained with cross-entropy, not the paper's Euclidean
      RBF units;
    - the default squashing function is the logistic sigmoid; the paper used the scaled tanh
      1.7159 * tanh(2a / 3) (`activation="tanh"` is the closest choice).
    """

    classifier_name = "classifier.output"

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = PAPER_FIELD,
        activation: str = "sigmoid",
        pooling: str = "avg",
        kernel_size: int = 5,
        pool_size: int = 2,
        batch_norm: bool = False,
        conv_activation: str | None = None,
        c1_kernel_size: int | None = None,
    ) -> None:
        super().__init__()
        conv_activation = activation if conv_activation is None else conv_activation
        c1_kernel_size = kernel_size if c1_kernel_size is None else c1_kernel_size
        side = _feature_side(image_size, kernel_size, pool_size, c1_kernel_size)
        self.num_classes = num_classes
        bias = not batch_norm  # batch norm's shift makes a bias before it redundant
        before, after = _c1_padding(image_size, c1_kernel_size)
        c1_pad: list[tuple[str, nn.Module]] = []
        if before != after:  # an even kernel: 'same' padding is one wider after than before
            c1_pad = [("c1_pad", nn.ZeroPad2d((before, after, before, after)))]
            before = 0
        c1 = nn.Conv2d(in_channels, 6, c1_kernel_size, padding=before, bias=bias)
        c3 = nn.Conv2d(6, 16, kernel_size, bias=bias)
        # C5 is a 5x5 convolution over S4's 5x5 maps in the paper, i.e. a fully connected layer
        # at 32x32; as a Linear on the flattened maps it also covers other input sizes.
        c5 = nn.Linear(16 * side * side, 120, bias=bias)
        f6 = nn.Linear(120, 84, bias=bias)
        self.features = nn.Sequential(
            OrderedDict(
                [
                    *c1_pad,
                    *_layer("c1", c1, conv_activation, batch_norm),
                    ("s2", make_pool(pooling, pool_size, stride=pool_size)),
                    *_layer("c3", c3, conv_activation, batch_norm),
                    ("s4", make_pool(pooling, pool_size, stride=pool_size)),
                ]
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    *_layer("c5", c5, activation, batch_norm),
                    *_layer("f6", f6, activation, batch_norm),
                    ("output", nn.Linear(84, num_classes)),
                ]
            )
        )
        _init_weights(self.features, conv_activation)
        _init_weights(self.classifier, activation)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier[:-1](torch.flatten(x, 1))
        return x if pre_logits else self.classifier[-1](x)


def _init_weights(model: nn.Module, activation: str) -> None:
    """Glorot-uniform weights for saturating units, He-normal (fan-in) for rectifiers; zero biases.

    Glorot & Bengio (2010) derived their scheme for sigmoid/tanh networks (d2l initializes
    LeNet so); He et al. (2015) derived theirs for ReLU-like units.
    """
    saturating = activation in ("sigmoid", "tanh")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if saturating:
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


_PAPER = "LeCun et al. 1998, Proc. IEEE 86(11):2278-2324"


# The knobs of the classic LeNet ablations; the two variants differ only in their defaults.
FAITHFUL_OPTIONS = {
    "num_classes": num_classes_option(10),
    "in_channels": in_channels_option(1),
    "image_size": ModelOption(32, "input side the fully connected layers are sized for"),
    "activation": ModelOption(
        "sigmoid", "activation of the hidden layers C1, C3, C5, F6: sigmoid, tanh, relu, ..."
    ),
    "pooling": ModelOption("avg", "subsampling layers: avg or max pooling"),
    "kernel_size": ModelOption(5, "side of the convolution kernels of C1 and C3"),
    "pool_size": ModelOption(2, "side and stride of the pooling windows (1: no pooling)"),
    "batch_norm": ModelOption(False, "batch norm after every hidden layer"),
    "conv_activation": ModelOption(
        None, "activation of the convolutions C1 and C3 only (default: `activation`)", str
    ),
    "c1_kernel_size": ModelOption(
        None, "side of C1's kernel only ('same' padding below 32 px; default: `kernel_size`)", int
    ),
}
MODERN_OPTIONS = {
    **FAITHFUL_OPTIONS,
    "image_size": ModelOption(28, FAITHFUL_OPTIONS["image_size"].help),
    "activation": ModelOption("relu", FAITHFUL_OPTIONS["activation"].help),
    "pooling": ModelOption("max", FAITHFUL_OPTIONS["pooling"].help),
    "batch_norm": ModelOption(True, FAITHFUL_OPTIONS["batch_norm"].help),
}


@register_model(
    input_size=(1, 32, 32), paper=_PAPER, mean=MNIST_MEAN, std=MNIST_STD, options=FAITHFUL_OPTIONS
)
def lenet5(**options) -> LeNet5:
    """LeNet-5 as usually reproduced: sigmoid units, 2x2 average pooling, 61,706 parameters."""
    return LeNet5(**options)


@register_model(
    input_size=(1, 28, 28), paper=_PAPER, mean=MNIST_MEAN, std=MNIST_STD, options=MODERN_OPTIONS
)
def lenet5_modern(**options) -> LeNet5:
    """LeNet-5 with ReLU, max pooling and batch norm after every hidden layer (d2l's BN LeNet)."""
    return LeNet5(**options)
