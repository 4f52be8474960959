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
  parabola through its neighbours (unless the match is exact: a still cell reads exactly 0): the cell's
  displacement (dx, dy) in tenths of the frame side, and the
  match's confidence (how much better the best shift is than the average shift, 0..1);
- the three scales reach 5%, 9% and 19% of the frame per step, so slow and fast motion both register;
- a cell with nothing to match (blank in either frame: the black frames of a fade) reads as no motion
  with zero confidence, and exact ties (a uniform background) go to the smallest shift.

M = 3 scales x 16 cells x 3 = 144 numbers per step; step 0 (no previous frame) is all zeros. The module
has no parameters: it is deterministic, part of the model (a bundle rebuilds it from its config), and
runs wherever the model runs. It depends on each clip alone, so batching never changes a result, and a
padded step never changes a valid one (step t reads frames t-1 and t only). Traced into a graph with a
dynamic batch (infer/export.py), it computes the same sums with im2col (`_tiles`, `_traced_cross`).

Why the per-frame baseline never reads it: the displacement between two frames *is* temporal
information. `per_frame` must show what one frame alone tells, so it sees the appearance features only,
while every temporal head sees both (heads.py, `motion_dim`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



FLAT = 1e-4    # mean squared value (of a frame standardised to unit variance) below which a cell is blank
TIE = 1e-6     # cost added per squared pixel of shift: breaks exact ties towards no motion
EXACT = 1e-3   # a best cost below this share of the mean cost is an exact match: no sub-pixel offset


class BlockMatchMotion(nn.Module):
    """(B, T, 3, S, S) -> (B, T, M): per-cell displacement and confidence vs the previous frame."""

    def __init__(self, *, scales: tuple[int, ...] = (64, 32, 16), grid: int = 4, radius: int = 3):
        super().__init__()
        if not scales or min(scales) < grid or grid < 1 or radius < 1:
            raise ValueError(f"blockmatch: bad geometry scales={scales} grid={grid} radius={radius}")
        self.scales, self.grid, self.radius = tuple(scales), grid, radius
        self.out_dim = len(self.scales) * grid * grid * 3
        self._matrices: dict[tuple, torch.Tensor] = {}   # constant pooling / box-sum matrices per shape

    def cache_id(self) -> str:
        """The stream's name in feature-cache folders: scales, grid, radius and a tag for the matching
        rule (blank cells and exact ties read as no motion, exact matches get no sub-pixel offset), so
        features of another rule are never reused."""
        return f"blockmatch{'-'.join(map(str, self.scales))}g{self.grid}r{self.radius}v3"

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t, s = frames.shape[0], frames.shape[1], frames.shape[-1]
        out = frames.new_zeros(b, t, self.out_dim, dtype=torch.float32)          # (B, T, M)
        if t < 2:
            return out
        grey = frames.float().mean(dim=2).reshape(b * t, s, s)                   # (B*T, S, S)
        costs = []
        for side in self.scales:
            g = standardise(self._resize(grey, side)).reshape(b, t, side, side)
            prev, cur = g[:, :-1].flatten(0, 1), g[:, 1:].flatten(0, 1)           # (B*(T-1), s, s)
            costs.append(self._cost(prev, cur))                                   # (N, k, k, G*G)
        cost = torch.cat(costs, dim=3)                                            # (N, k, k, scales*G*G)
        out[:, 1:] = self._displacement(cost).reshape(b, t - 1, -1)
        return out

    def _cost(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Mean squared difference between each cell of `cur` and `prev` shifted by every u:
        (N, uy, ux, G*G), index i meaning u = i - r; cur(x) vs prev(x - u) is lowest at u = the motion.

        As sum(cur^2) - 2 sum(cur * prev_u) + sum(prev_u^2) per cell: the cross term is one depthwise
        convolution of each cell's search window by the cell itself, the last term a box sum (two small
        matrix products). Three ops a scale instead of three per shift (7x7 shifts)."""
        r, n, g = self.radius, prev.shape[0], self.grid
        side = int(prev.shape[-1])   # int: when traced, a constant (sizes are tensors then)
        k, c = 2 * r + 1, side // g
        w, m = c + 2 * r, n * g * g
        padded = F.pad(prev[:, None], (r, r, r, r), mode="replicate")[:, 0]      # (N, s+2r, s+2r)
        if torch.jit.is_tracing():   # torch.jit.trace, torch.onnx.export: see _traced_cross
            windows, cells = _tiles(padded, w, c), _tiles(cur, c, c)
            cross = _traced_cross(windows, cells, k)
        else:
            windows = padded.unfold(1, w, c).unfold(2, w, c).reshape(m, w, w)    # (N*G*G, w, w)
            cells = cur.unfold(1, c, c).unfold(2, c, c).reshape(m, c, c)         # (N*G*G, c, c)
            cross = F.conv2d(windows[None], cells[:, None], groups=m)[0]         # (N*G*G, k, k)
        box = self._box(w, c, prev.device)                                       # (k, w)
        prev2 = box @ (windows * windows) @ box.T                                # (N*G*G, k, k)
        cur2 = (cells * cells).sum(dim=(1, 2))[:, None, None]                    # (N*G*G, 1, 1)
        cost = (prev2 - 2 * cross + cur2) / (c * c)     # index a reads prev(x + a - r): u = r - a
        # a cell with no texture in either frame (a black frame of a fade, a flat background) matches
        # every shift equally: mark it with an infinite cost, read as "no motion" by _displacement
        blank = (cur2 < FLAT * c * c) | (prev2[:, r:r + 1, r:r + 1] < FLAT * c * c)
        cost = cost.masked_fill(blank, float("inf"))
        return cost.reshape(n, g * g, k, k).permute(0, 2, 3, 1).flip(1).flip(2)

    def _displacement(self, cost: torch.Tensor) -> torch.Tensor:
        """(N, k, k, scales*cells) costs -> (N, M): per scale dx, dy (tenths of the frame), confidence."""
        r, n, cells = self.radius, cost.shape[0], self.grid * self.grid
        k = 2 * r + 1
        blank = torch.isinf(cost[:, 0, 0])                                       # (N, scales*cells)
        shift = torch.arange(k, device=cost.device, dtype=cost.dtype) - r
        # exact ties (a uniform cell) go to the smallest shift, not to the first one tried
        cost = (cost.masked_fill(blank[:, None, None], 0.0)
                + TIE * (shift[:, None, None] ** 2 + shift[None, :, None] ** 2)).contiguous()
        flat = cost.reshape(n, k * k, -1)
        low, best = flat.min(dim=1)                                              # (N, scales*cells)
        iy, ix = best // k, best % k
        mean = flat.mean(dim=1)
        # a parabola through an exact match's asymmetric neighbours would invent a sub-pixel shift
        # (up to 0.5 px on a still clip): an exact match stays on its whole-pixel shift
        inexact = (low > EXACT * mean).float()
        dy = iy.float() - r + inexact * _parabola(cost, iy, ix, axis=1)
        dx = ix.float() - r + inexact * _parabola(cost, iy, ix, axis=2)
        confidence = ((mean - low) / (mean + 1e-6)).clamp(0, 1)                  # in [0, 1]
        dx, dy, confidence = (v.masked_fill(blank, 0.0) for v in (dx, dy, confidence))
        tenths = torch.tensor([10.0 / side for side in self.scales], device=cost.device)
        tenths = tenths.repeat_interleave(cells)                                 # (scales*cells,)
        per_scale = torch.stack([dx * tenths, dy * tenths, confidence], dim=1)   # (N, 3, scales*cells)
        return per_scale.reshape(n, 3, len(self.scales), cells).transpose(1, 2).reshape(n, -1)

    def _resize(self, grey: torch.Tensor, side: int) -> torch.Tensor:
        """(N, S, S) -> (N, side, side): area average when shrinking (adaptive average pooling, as two
        matrix products), bilinear when growing."""
        s = int(grey.shape[-1])   # int: when traced, a constant, and so are the matrices made from it
        if s == side:
            return grey
        if s < side:
            return F.interpolate(grey[:, None], size=(side, side), mode="bilinear", align_corners=False)[:, 0]
        pool = self._matrix(("pool", s, side), grey.device, lambda: pool_matrix(s, side))
        return pool @ grey @ pool.T

    def _box(self, w: int, c: int, device: torch.device) -> torch.Tensor:
        """(w - c + 1, w): row a sums positions a .. a + c - 1."""
        return self._matrix(("box", w, c), device, lambda: _band(w - c + 1, w, c))

    def _matrix(self, key: tuple, device: torch.device, make) -> torch.Tensor:
        key = (*key, str(device))
        if key not in self._matrices:   # a race between threads only computes the same matrix twice
            self._matrices[key] = make().to(device)
        return self._matrices[key]


def pool_matrix(src: int, dst: int) -> torch.Tensor:
    """(dst, src): row i averages source positions floor(i*src/dst) .. ceil((i+1)*src/dst) - 1, the
    windows of `adaptive_avg_pool2d`."""
    m = torch.zeros(dst, src, dtype=torch.float64)
    for i in range(dst):
        lo, hi = (i * src) // dst, -(-(i + 1) * src // dst)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m.float()


def _band(rows: int, cols: int, width: int) -> torch.Tensor:
    """(rows, cols): ones at positions i .. i + width - 1 of row i."""
    m = torch.zeros(rows, cols)
    for i in range(rows):
        m[i, i:i + width] = 1.0
    return m


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


def _tiles(x: torch.Tensor, size: int, step: int) -> torch.Tensor:
    """(N, H, W) -> (N * rows * cols, size, size): the tiles every `step` pixels, row by row, as
    `x.unfold(1, size, step).unfold(2, size, step)` gives them, by im2col."""
    cols = F.unfold(x[:, None], kernel_size=size, stride=step)                  # (N, size*size, L)
    return cols.transpose(1, 2).reshape(-1, size, size)


def _traced_cross(windows: torch.Tensor, cells: torch.Tensor, k: int) -> torch.Tensor:
    """`_cost`'s cross term in a traced graph: (N, w, w) windows, (N, c, c) cells -> (N, k, k), each
    window's patches times its own cell. A graph fixes a grouped convolution's group count, which is N
    and grows with the batch; im2col and a batched product hold any N. The same sums in another order."""
    c = int(cells.shape[-1])                                                    # traced sizes are tensors
    patches = F.unfold(windows[:, None], kernel_size=c)                         # (N, c*c, k*k)
    return (cells.reshape(-1, 1, c * c) @ patches).reshape(-1, k, k)


def standardise(x: torch.Tensor) -> torch.Tensor:
    """(N, s, s): each frame to zero mean, unit variance (flat frames stay zero). Two passes of plain
    means: torch's `std` is much slower on these small rows."""
    flat = x.flatten(1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    std = (centred * centred).mean(dim=1, keepdim=True).sqrt()
    return (centred / (std + 1e-3)).view_as(x)


