"""Temporal streams beyond block-matched displacement: light, speed, tempo, and the raw frame difference.

    stream = PhotometricStream()
    p = stream(frames)        # (B, T, 3, S, S) normalised frames -> (B, T, M), M = stream.out_dim

Each stream compares step t with the steps just before it (t-1; `tempo` also t-2): it is causal, its
first steps (with no frame that far back) are all zeros, it has no parameters, and it is zero on a
still clip. Like the block matcher (motion.py) they are
temporal evidence for the temporal heads alone: `per_frame` never reads them.

- `photometric`: what the light did. Per region (the whole frame and each cell of a 2x2 grid), the
  change of the mean of each colour channel and of the log contrast (the grey level's standard
  deviation) since the previous frame, 5 x 4 = 20 numbers. A fade (to or from black, grey or a
  colour), a lighting change, a flash or a cut moves it; a pan over a uniform scene barely does. The
  block matcher standardises every frame and cannot see any of this.
- `speed`: how far and how much the picture moved, beyond the block matcher's +-3 px at 64-16 px.
  Block matching on a 2x2 grid at 32, 16 and 8 px (each frame standardised) reaches 9%, 19% and 37%
  of the frame per step; with the mean absolute change of the standardised grey picture per cell and
  scale (how much of the content changed, which keeps growing after a match saturates): 3 x 4 x 3 +
  3 x 4 = 48 numbers. Fast-forward, fast hand-held moves and cuts move it.
- `tempo`: how quickly the picture stops resembling itself, per scale (32, 16 and 8 px): the log of
  (the change over two steps + c) / (the change over one step + c), the change being the mean
  absolute difference of the standardised grey picture, 3 numbers. Motion that is smooth at the
  sampling rate accumulates: two steps change the picture up to twice as much as one (log 2 = 0.69).
  Content that moves fast between samples (fast-forward; a shake faster than the sampling) has
  already changed all it will after one step, and a second adds nothing (near 0). A ratio of two
  changes of the same picture, it does not depend on how textured the picture is, as the change
  itself does. Steps 0 and 1 (no frame two steps back) are zero.
- `rgbdiff`: the colour frame difference at 32 x 32 px (TSN's RGB-difference modality), 3 x 32 x 32
  = 3072 numbers per step, for a small CNN in the head (heads.DiffCNN) that learns end to end which
  changes matter. It is an *image* stream (`image_shape`): the head convolves it instead of reading it
  through one Linear layer, and the trainer leaves it unstandardised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videoseq.models.motion import BlockMatchMotion, pool_matrix, standardise


CONTRAST_FLOOR = 0.05   # added to a region's grey std (normalised units) before the log: flat regions stay finite


class _Resizer:
    """Area-average resizing of (..., S, S) to (..., side, side) by two matrix products (bilinear when
    growing); the constant matrices are kept per shape and device."""

    def __init__(self) -> None:
        self._matrices: dict[tuple, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, side: int) -> torch.Tensor:
        s = int(x.shape[-1])   # int: when traced, a constant, and so are the matrices made from it
        if s == side:
            return x
        if s < side:
            lead = x.shape[:-2]
            up = F.interpolate(x.reshape(-1, 1, s, s), size=(side, side), mode="bilinear", align_corners=False)
            return up.reshape(*lead, side, side)
        key = (s, side, str(x.device))
        if key not in self._matrices:   # a race between threads only computes the same matrix twice
            self._matrices[key] = pool_matrix(s, side).to(x.device)
        pool = self._matrices[key]
        return pool @ x @ pool.T


def _steps(stats: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """(B*T, K) per-frame values -> (B, T, K) changes since the previous frame, step 0 zeros."""
    per_clip = stats.reshape(b, t, -1)                                          # (B, T, K)
    return torch.cat([torch.zeros_like(per_clip[:, :1]), per_clip[:, 1:] - per_clip[:, :-1]], dim=1)


def _cells(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, ..., s, s) -> (N, ..., grid*grid): the mean of each cell of a grid x grid partition
    (s a multiple of grid)."""
    s = int(x.shape[-1])
    c = s // grid
    lead = x.shape[:-2]
    return x.reshape(*lead, grid, c, grid, c).mean(dim=(-3, -1)).reshape(*lead, grid * grid)


def _standardised_greys(frames: torch.Tensor, sides: tuple[int, ...], resize: _Resizer) -> list[torch.Tensor]:
    """(B, T, 3, S, S) -> per side, (B, T, side, side): the grey picture area-averaged to that side,
    each frame standardised (zero mean, unit variance: a change of light alone does not move it)."""
    b, t, s = frames.shape[0], frames.shape[1], int(frames.shape[-1])
    grey = frames.float().mean(dim=2).reshape(b * t, s, s)                     # (N, S, S)
    return [standardise(resize(grey, side)).reshape(b, t, side, side) for side in sides]


class PhotometricStream(nn.Module):
    """(B, T, 3, S, S) -> (B, T, (1 + G*G) * 4): per region, the change of the mean of each channel and of
    the log contrast since the previous frame."""

    image_shape = None

    def __init__(self, *, side: int = 32, grid: int = 2):
        super().__init__()
        if grid < 1 or side % grid:
            raise ValueError(f"photometric: side {side} must be a multiple of grid {grid}")
        self.side, self.grid = side, grid
        self.out_dim = (1 + grid * grid) * 4
        self._resize = _Resizer()

    def cache_id(self) -> str:
        """The stream's name in feature-cache folders."""
        return f"photometric{self.side}g{self.grid}"

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[0], frames.shape[1]
        if t < 2:
            return frames.new_zeros(b, t, self.out_dim, dtype=torch.float32)
        s = int(frames.shape[-1])
        x = self._resize(frames.float().reshape(b * t, 3, s, s), self.side)     # (N, 3, side, side)
        grey = x.mean(dim=1)                                                    # (N, side, side)
        means = torch.cat([x.mean(dim=(2, 3))[:, :, None], _cells(x, self.grid)], dim=2)   # (N, 3, 1+G*G)
        g1 = torch.cat([grey.mean(dim=(1, 2))[:, None], _cells(grey, self.grid)], dim=1)    # (N, 1+G*G)
        g2 = torch.cat([(grey * grey).mean(dim=(1, 2))[:, None], _cells(grey * grey, self.grid)], dim=1)
        contrast = torch.log((g2 - g1 * g1).clamp_min(0).sqrt() + CONTRAST_FLOOR)             # (N, 1+G*G)
        stats = torch.cat([means, contrast[:, None]], dim=1)                    # (N, 4, 1+G*G)
        return _steps(stats.transpose(1, 2).reshape(b * t, -1), b, t)           # (B, T, (1+G*G)*4)


class SpeedStream(nn.Module):
    """(B, T, 3, S, S) -> (B, T, M): coarse block matching (2x2 grid at 32, 16, 8 px, +-3 px) and the
    mean absolute change of the standardised grey picture per cell and scale."""

    image_shape = None

    def __init__(self, *, scales: tuple[int, ...] = (32, 16, 8), grid: int = 2, radius: int = 3):
        super().__init__()
        self.match = BlockMatchMotion(scales=scales, grid=grid, radius=radius)
        self.scales, self.grid = tuple(scales), grid
        self.out_dim = self.match.out_dim + len(self.scales) * grid * grid
        self._resize = _Resizer()

    def cache_id(self) -> str:
        """The stream's name in feature-cache folders."""
        return f"speed{'-'.join(map(str, self.scales))}g{self.grid}r{self.match.radius}"

    def displacement(self, moved: torch.Tensor, side: int) -> torch.Tensor:
        """(B, T, M) stream output -> (B, T, 2, G*G): the block-matched dx and dy of each cell at the
        scale `side`, in tenths of the frame."""
        k = self.scales.index(side)
        cells = self.grid * self.grid
        per_scale = moved[..., :self.match.out_dim].reshape(*moved.shape[:2], len(self.scales), 3, cells)
        return per_scale[:, :, k, :2]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[0], frames.shape[1]
        if t < 2:
            return frames.new_zeros(b, t, self.out_dim, dtype=torch.float32)
        energy = []
        for g in _standardised_greys(frames, self.scales, self._resize):      # (B, T, side, side) each
            change = (g[:, 1:] - g[:, :-1]).abs().flatten(0, 1)                 # (B*(T-1), side, side)
            energy.append(_cells(change, self.grid).reshape(b, t - 1, -1))      # (B, T-1, G*G)
        energy = torch.cat(energy, dim=2)                                       # (B, T-1, scales*G*G)
        energy = torch.cat([energy.new_zeros(b, 1, energy.shape[2]), energy], dim=1)
        return torch.cat([self.match(frames), energy], dim=2)                   # (B, T, M)


TEMPO_FLOOR = 0.02   # added to both changes (standardised grey units) before their ratio: a still picture is 0


class TempoStream(nn.Module):
    """(B, T, 3, S, S) -> (B, T, len(scales)): per scale, log((change over steps t-2..t + c) /
    (change over steps t-1..t + c)) of the standardised grey picture."""

    image_shape = None

    def __init__(self, *, scales: tuple[int, ...] = (32, 16, 8)):
        super().__init__()
        self.scales = tuple(scales)
        self.out_dim = len(self.scales)
        self._resize = _Resizer()

    def cache_id(self) -> str:
        """The stream's name in feature-cache folders."""
        return f"tempo{'-'.join(map(str, self.scales))}"

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[0], frames.shape[1]
        if t < 3:
            return frames.new_zeros(b, t, self.out_dim, dtype=torch.float32)
        ratios = []
        for g in _standardised_greys(frames, self.scales, self._resize):      # (B, T, side, side) each
            one = (g[:, 2:] - g[:, 1:-1]).abs().mean(dim=(2, 3))                # (B, T-2)
            two = (g[:, 2:] - g[:, :-2]).abs().mean(dim=(2, 3))                 # (B, T-2)
            ratios.append(torch.log((two + TEMPO_FLOOR) / (one + TEMPO_FLOOR)))
        r = torch.stack(ratios, dim=2)                                          # (B, T-2, scales)
        return torch.cat([r.new_zeros(b, 2, self.out_dim), r], dim=1)           # (B, T, scales)


class RGBDiffStream(nn.Module):
    """(B, T, 3, S, S) -> (B, T, 3*side*side): frame t minus frame t-1, area-averaged to side x side."""

    def __init__(self, *, side: int = 32):
        super().__init__()
        self.side = side
        self.image_shape = (3, side, side)
        self.out_dim = 3 * side * side
        self._resize = _Resizer()

    def cache_id(self) -> str:
        """The stream's name in feature-cache folders."""
        return f"rgbdiff{self.side}"

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[0], frames.shape[1]
        if t < 2:
            return frames.new_zeros(b, t, self.out_dim, dtype=torch.float32)
        s = int(frames.shape[-1])
        x = self._resize(frames.float().reshape(b * t, 3, s, s), self.side)     # (N, 3, side, side)
        return _steps(x.reshape(b * t, -1), b, t)                               # (B, T, 3*side*side)
