"""Motion between consecutive sampled frames, for the temporal heads (never for `per_frame`).

    motion = build_motion("blockmatch")
    m = motion(frames)            # (B, T, 3, S, S) normalised frames -> (B, T, M), M = motion.out_dim

A frozen ImageNet encoder pooled to a 2x2 grid keeps *what* is where, but a pan, a zoom or one small
object crossing the frame barely changes those features: the direction of a motion is lost before any
temporal head sees it. So the temporal heads also read where the picture moved, measured directly:

- each frame is turned to grey, brought to three scales (64, 32 and 16 px) and standardised (zero mean,
  unit variance: a fade changes nothing here, it stays visible in the appearance features);
- on every scale, each cell of a 4x4 grid is matched against the previous frame over all shifts of up to
  3 px (block matching, sum of squared differences), the best shift refined to sub-pixel precision by a
  parabola through its neighbours: the cell's displacement (dx, dy) in tenths of the frame side, and the
  match's confidence (how much better the best shift is than the average shift, 0..1);
- the three scales reach 5%, 9% and 19% of the frame per step, so slow and fast motion both register.

M = 3 scales x 16 cells x 3 = 144 numbers per step; step 0 (no previous frame) is all zeros. The module
has no parameters: it is deterministic, part of the model (a bundle rebuilds it from its config), and
runs wherever the model runs. It depends on each clip alone, so batching never changes a result, and a
padded step never changes a valid one (step t reads frames t-1 and t only).

Why the per-frame baseline never reads it: the displacement between two frames *is* temporal
information. `per_frame` must show what one frame alone tells, so it sees the appearance features only,
while every temporal head sees both (heads.py, `motion_dim`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videoseq.registry import Registry


class BlockMatchMotion(nn.Module):
    """(B, T, 3, S, S) -> (B, T, M): per-cell displacement and confidence vs the previous frame."""

    def __init__(self, *, scales: tuple[int, ...] = (64, 32, 16), grid: int = 4, radius: int = 3):
        super().__init__()
        if not scales or min(scales) < grid or grid < 1 or radius < 1:
            raise ValueError(f"blockmatch: bad geometry scales={scales} grid={grid} radius={radius}")
        self.scales, self.grid, self.radius = tuple(scales), grid, radius
        self.out_dim = len(self.scales) * grid * grid * 3

    def cache_id(self) -> str:
        return f"blockmatch{'-'.join(map(str, self.scales))}g{self.grid}r{self.radius}"

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        out = frames.new_zeros(b, t, self.out_dim, dtype=torch.float32)          # (B, T, M)
        if t < 2:
            return out
        grey = frames.float().mean(dim=2).reshape(b * t, 1, *frames.shape[-2:])  # (B*T, 1, S, S)
        per_scale = []
        for side in self.scales:
            g = _standardise(_resize(grey, side)).reshape(b, t, 1, side, side)
            prev, cur = g[:, :-1].flatten(0, 1), g[:, 1:].flatten(0, 1)           # (B*(T-1), 1, s, s)
            per_scale.append(self._match(prev, cur, side))                        # (B*(T-1), 3*G*G)
        out[:, 1:] = torch.cat(per_scale, dim=1).reshape(b, t - 1, -1)
        return out

    def _match(self, prev: torch.Tensor, cur: torch.Tensor, side: int) -> torch.Tensor:
        """Cost of every shift per cell, its minimum refined to sub-pixel: (N, 3 * G * G)."""
        r, n, g = self.radius, prev.shape[0], self.grid
        k = 2 * r + 1
        padded = F.pad(prev, (r, r, r, r), mode="replicate")                     # (N, 1, s+2r, s+2r)
        costs = []   # a loop of small ops: faster on CPU than unfold or a one-hot conv (measured 3x)
        for uy in range(-r, r + 1):
            for ux in range(-r, r + 1):   # cur(x) vs prev(x - u): the cost is lowest at u = the motion
                shifted = padded[:, :, r - uy:r - uy + side, r - ux:r - ux + side]
                costs.append(F.adaptive_avg_pool2d((cur - shifted) ** 2, g))      # (N, 1, G, G)
        cost = torch.cat(costs, dim=1).reshape(n, k, k, g * g)                   # (N, uy, ux, cells)
        flat = cost.reshape(n, k * k, g * g)
        best = flat.argmin(dim=1)                                                # (N, cells)
        iy, ix = best // k, best % k
        dy = iy.float() - r + _parabola(cost, iy, ix, axis=1)
        dx = ix.float() - r + _parabola(cost, iy, ix, axis=2)
        low, mean = flat.min(dim=1).values, flat.mean(dim=1)
        confidence = (mean - low) / (mean + 1e-6)                                 # (N, cells) in [0, 1]
        scale = 10.0 / side                                                       # tenths of the frame
        return torch.cat([dx * scale, dy * scale, confidence], dim=1)


def _parabola(cost: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor, *, axis: int) -> torch.Tensor:
    """Sub-pixel offset (-0.5..0.5) of the minimum along `axis` (1 = y, 2 = x); 0 on the border."""
    k = cost.shape[1]
    i = iy if axis == 1 else ix

    def at(delta: int) -> torch.Tensor:
        y = (iy + delta if axis == 1 else iy).clamp(0, k - 1)
        x = (ix + delta if axis == 2 else ix).clamp(0, k - 1)
        flat = (y * k + x)[:, None, :]                                           # (N, 1, cells)
        return cost.reshape(cost.shape[0], k * k, -1).gather(1, flat)[:, 0]       # (N, cells)

    left, mid, right = at(-1), at(0), at(1)
    curvature = left - 2 * mid + right
    offset = torch.where(curvature > 1e-9, (left - right) / (2 * curvature.clamp_min(1e-9)),
                         torch.zeros_like(mid))
    inside = (i > 0) & (i < k - 1)
    return torch.where(inside, offset.clamp(-0.5, 0.5), torch.zeros_like(mid))


def _resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """(N, 1, S, S) -> (N, 1, side, side): area average when shrinking, bilinear when growing."""
    if x.shape[-1] == side:
        return x
    if x.shape[-1] > side:
        return F.adaptive_avg_pool2d(x, side)
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Each frame to zero mean, unit variance (flat frames stay zero)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True, unbiased=False)
    return (x - mean) / (std + 1e-3)


MOTIONS: Registry[type[nn.Module]] = Registry("motion")
MOTIONS.register("blockmatch")(BlockMatchMotion)


def build_motion(name: str | None) -> nn.Module | None:
    """The motion stream `name` ("blockmatch"), or None for "none"/None (appearance only)."""
    if name in (None, "none"):
        return None
    return MOTIONS.get(name)()


def list_motions() -> list[str]:
    return ["none", *MOTIONS.names()]
