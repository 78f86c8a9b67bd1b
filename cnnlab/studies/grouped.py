"""Many LeNet-5s as one: grouped convolutions and batched matrix products over stacked weights.

The seed ensemble (`studies/batched.py`) trains its members' stacked parameters through
`GroupedLayers`: the members' images are concatenated along the channels, each convolution is
one `conv2d(groups=members)` over the stacked kernels and each fully connected layer one
`baddbmm`, so a step costs one set of kernel launches for all members (the per-step overhead
that dominates small batches is shared) and no per-member Python work. `evaluate_grouped`
scores every member on the test split in the same way, each row equal to its own run's.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cnnlab.data.loader import BatchLoader
from cnnlab.models.lenet import LeNet5


class GroupedLayers(nn.Module):
    """The members' forward pass as grouped convolutions and batched matrix products.

    Works on LeNet-5's layer kinds, in forward order: convolutions, batch norms, parameter-free
    layers (padding, activations, pooling) on the members' channel-concatenated maps
    (B, members x C, H, W), member-major; then the flattened features as (members, B, F)
    through fully connected layers, batch norms and activations. The stacked parameters and
    buffers are viewed, never copied, so gradients and running statistics land in the stack.
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], members: int) -> None:
        super().__init__()
        self.names = [name for name, _ in layers]
        self.layers = nn.ModuleList([copy.deepcopy(layer).to("meta") for _, layer in layers])
        self.members = members

    @classmethod
    def of(cls, model: nn.Module, members: int) -> GroupedLayers | None:
        """The grouped form of `model`, or None when its layers are not LeNet-5's."""
        if not isinstance(model, LeNet5):
            return None
        layers = [
            *((f"features.{name}", layer) for name, layer in model.features.named_children()),
            ("flatten", nn.Flatten()),
            *((f"classifier.{name}", layer) for name, layer in model.classifier.named_children()),
        ]
        return cls(layers, members)

    def forward(self, params: dict, buffers: dict, images: Tensor) -> Tensor:
        """Logits (members, B, classes) of `images` (B, members x C, H, W)."""
        # Channels-last: oneDNN's grouped convolutions over a few channels per group run 2-5x
        # faster so than in NCHW on the CPU (measured: docs/studies.md, "Seed batching").
        x, members = images.contiguous(memory_format=torch.channels_last), self.members
        for name, layer in zip(self.names, self.layers, strict=True):
            weight, bias = params.get(f"{name}.weight"), params.get(f"{name}.bias")
            if isinstance(layer, nn.Conv2d):
                kernels = weight.reshape(-1, *weight.shape[2:])  # member-major output channels
                x = F.conv2d(
                    x,
                    kernels,
                    None if bias is None else bias.reshape(-1),
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    layer.groups * members,
                )
            elif isinstance(layer, nn.Flatten):
                x = x.reshape(x.shape[0], members, -1).transpose(0, 1)
            elif isinstance(layer, nn.Linear):
                x = (
                    torch.bmm(x, weight.transpose(1, 2))
                    if bias is None
                    else torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
                )
            elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
                x = self._batch_norm(name, layer, weight, bias, buffers, x)
            else:
                x = layer(x)
        return x

    def _batch_norm(
        self, name: str, layer: nn.Module, weight, bias, buffers: dict, x: Tensor
    ) -> Tensor:
        """Batch norm per member and channel: the stacked statistics as one long channel axis."""
        features = x.dim() == 3  # (members, B, F): the members' features side by side
        if features:
            batch = x.shape[1]
            x = x.transpose(0, 1).reshape(batch, -1)
        mean, var = buffers.get(f"{name}.running_mean"), buffers.get(f"{name}.running_var")
        momentum = layer.momentum
        if self.training and layer.track_running_stats:
            tracked = buffers[f"{name}.num_batches_tracked"]
            tracked.add_(1)
            if momentum is None:  # cumulative average, as nn.BatchNorm does it
                momentum = 1.0 / float(tracked[0])
        x = F.batch_norm(
            x,
            None if mean is None else mean.view(-1),
            None if var is None else var.view(-1),
            None if weight is None else weight.reshape(-1),
            None if bias is None else bias.reshape(-1),
            self.training or mean is None,
            0.0 if momentum is None else momentum,
            layer.eps,
        )
        if features:
            x = x.reshape(batch, self.members, -1).transpose(0, 1)
        return x


def evaluate_grouped(
    grouped: GroupedLayers, params: dict, buffers: dict, loader: BatchLoader
) -> list[dict]:
    """Every member's test loss, top-1 and top-5 accuracy (`Trainer.evaluate`'s row) on
    `loader`'s images, in one eval-mode pass; the sums are read once, at the end."""
    members = grouped.members
    loss = torch.zeros(members, dtype=torch.float64, device=loader.device)
    correct = torch.zeros(members, 2, dtype=torch.int64, device=loader.device)
    count, classes = 0, 0
    grouped.eval()
    with torch.inference_mode():
        for images, labels in loader:
            logits = grouped(params, buffers, images.repeat(1, members, 1, 1)).float()
            classes = logits.shape[-1]
            losses = F.cross_entropy(
                logits.reshape(-1, classes), labels.repeat(members), reduction="none"
            )
            loss += losses.view(members, -1).sum(dim=1, dtype=torch.float64)
            hits = logits.topk(min(5, classes), dim=-1).indices == labels[None, :, None]
            correct += torch.stack((hits[..., 0].sum(dim=1), hits.any(dim=-1).sum(dim=1)), dim=1)
            count += len(labels)
    grouped.train()
    return [
        {
            "test_loss": member_loss / count,
            "test_acc": top1 / count,
            "test_top5": top5 / count if classes > 5 else None,  # else always 100%
        }
        for member_loss, (top1, top5) in zip(loss.tolist(), correct.tolist(), strict=True)
    ]
