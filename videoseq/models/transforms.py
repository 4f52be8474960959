"""uint8 RGB frames -> the normalised float tensors an encoder expects."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def frames_to_tensor(frames: np.ndarray | torch.Tensor, *, size: int,
                     mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(..., H, W, 3) uint8 RGB -> (..., 3, size, size) float32, (x/255 - mean) / std, laid out
    channels-last in memory (not `is_contiguous()`; `.contiguous()` it where a view needs that).

    Frames of another size are resized (bilinear, antialiased when shrinking); frames are expected
    square already (video.py crops them), a non-square frame is stretched. The result stays on the
    input tensor's device.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"frames_to_tensor: expected (..., H, W, 3) uint8 RGB, "
                         f"got {tuple(x.shape)} {x.dtype}")
    lead, (h, w) = x.shape[:-3], x.shape[-3:-1]
    # (N, 3, H, W) in channels-last memory (the frames' own HWC order: converting is one contiguous
    # pass, then in place), which is also what the channels-last encoders read fastest. Values are the
    # same in any memory format.
    x = x.reshape(-1, h, w, 3).permute(0, 3, 1, 2).float().div_(255.0)               # (N, 3, H, W)
    if (h, w) != (size, size) and x.shape[0] > 0:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=min(h, w) > size)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = x.sub_(m).div_(s)
    return x.reshape(*lead, 3, size, size)                                 # (..., 3, size, size)
