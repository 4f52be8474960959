"""What every head does to each step alone, before combining steps: `FrameEmbed` projects the
appearance features and the temporal streams of one step to the head's hidden width; `DiffCNN` reads
an image stream (frame differences); `FixedLinear` holds the streams' fixed whole-frame summaries.

    embed = FrameEmbed(appearance_dim=1280, motion_dim=212, hidden=128, dropout=0.3, stream_dims=[144, 20, 48])
    h = embed(x)                          # (B, T, 1280 + 212) -> (B, T, 128)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FrameEmbed(nn.Module):
    """Each step alone, (B, T, D [+ M]) -> (B, T, H).

    Appearance only: Dropout, Linear(D, H), ReLU. With a motion stream the two are projected
    separately and each layer-normalised before they are added (then ReLU): 144 motion numbers next to
    thousands of appearance features would otherwise carry ~3% of the signal at initialisation, and a
    head on a few hundred clips memorises the videos' looks before it learns how they move. For the
    same reason `stream_dropout` hides the whole appearance stream from that share of the training
    clips (all their steps), so the head must also learn to decide from the motion alone
    (docs/benchmarks/train.md has the ablation).

    `stream_dims` (the widths of the vector streams, in feature order: streams.StreamStack.vector_dims)
    gives every vector stream its own Dropout + Linear(dim_k, H) (through a `stream_bottleneck`-wide
    Linear first when > 0), summed; None projects all of them through one Linear (the older layout).
    `stream_summaries` (the width of each vector stream's whole-frame summary; the fixed poolings are
    set by `set_summaries`) adds their concatenation through one more Linear, and `stream_stats` their
    running statistics (`running_stats`: mean, mean magnitude, maximum, minimum and unsteadiness over
    the steps so far) through another: how fast, how much, how suddenly and how unevenly the picture
    has changed, read directly. `stats_norm` standardises each statistic first (`StepNorm`): they
    differ in offset and scale (a mean magnitude is all positive, a running mean centred), and what
    tells two classes apart is often a small shift of one of them.
    `modality_dropout` hides each temporal stream (each projected vector stream, or the one joint
    projection, the summary, the statistics and the image stream) from that share of the training
    clips, independently, but never all of them from one clip: with a few dozen clips per class a head
    otherwise fits the widest, noisiest stream first and ignores the compact one that decides."""

    def __init__(self, appearance_dim: int, motion_dim: int, *, hidden: int, dropout: float,
                 stream_dropout: float = 0.0, image_shape: tuple[int, int, int] | None = None,
                 stream_norm: bool = False, stream_dims: list[int] | None = None,
                 stream_bottleneck: int = 0, modality_dropout: float = 0.0,
                 stream_summaries: list[int] | None = None, stream_stats: bool = False,
                 stats_norm: bool = False):
        super().__init__()
        if not 0 <= stream_dropout < 1:
            raise ValueError(f"stream_dropout must be in [0, 1), got {stream_dropout}")
        if not 0 <= modality_dropout < 1:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        if stream_bottleneck < 0:
            raise ValueError(f"stream_bottleneck must be >= 0, got {stream_bottleneck}")
        image_dim = math.prod(image_shape) if image_shape and motion_dim else 0
        if image_dim > motion_dim:
            raise ValueError(f"image stream {image_shape} is wider than the {motion_dim} motion dimensions")
        self.appearance_dim, self.motion_dim = appearance_dim, motion_dim
        self.vector_dim = motion_dim - image_dim          # the motion dimensions read by a Linear
        self.stream_dropout = stream_dropout
        self.modality_dropout = modality_dropout
        self.stream_dims = [int(d) for d in stream_dims] if stream_dims is not None and motion_dim else None
        if self.stream_dims is not None and (sum(self.stream_dims) != self.vector_dim
                                             or any(d < 1 for d in self.stream_dims)):
            raise ValueError(f"stream_dims {self.stream_dims} do not add up to the {self.vector_dim} "
                             f"vector stream dimensions")
        self.appearance = nn.Sequential(nn.Dropout(dropout), nn.Linear(appearance_dim, hidden))
        self.motion = None
        self.streams = None
        self.image = None
        if motion_dim:
            self.appearance.append(nn.LayerNorm(hidden))
        norm = [nn.LayerNorm(hidden)] if stream_norm else []
        if self.vector_dim and self.stream_dims is None:
            self.motion = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.vector_dim, hidden), *norm)
        elif self.vector_dim:
            def project(d: int) -> nn.Sequential:
                if stream_bottleneck:
                    return nn.Sequential(nn.Dropout(dropout), nn.Linear(d, stream_bottleneck),
                                         nn.Linear(stream_bottleneck, hidden), *norm)
                return nn.Sequential(nn.Dropout(dropout), nn.Linear(d, hidden), *norm)
            self.streams = nn.ModuleList(project(d) for d in self.stream_dims)
        # whole-frame summaries of each vector stream (fixed poolings, set from the streams by the
        # caller: `set_summaries`), read together through one more Linear
        self.summary_dims = [int(k) for k in stream_summaries] if stream_summaries and self.streams is not None \
            else None
        self.pools = None
        self.summary = None
        if self.summary_dims is not None:
            if len(self.summary_dims) != len(self.stream_dims) or min(self.summary_dims) < 1:
                raise ValueError(f"stream_summaries {self.summary_dims} do not match the streams {self.stream_dims}")
            self.pools = nn.ModuleList(FixedLinear(d, k) for d, k in zip(self.stream_dims, self.summary_dims))
            self.summary = nn.Sequential(nn.Dropout(dropout), nn.Linear(sum(self.summary_dims), hidden), *norm)
        # running statistics of the summaries over the steps so far (`running_stats`), one more Linear
        self.stats = None
        if stream_stats and self.summary_dims is not None:
            width = STATS * sum(self.summary_dims)
            self.stats = nn.Sequential(*([StepNorm(width)] if stats_norm else []), nn.Dropout(dropout),
                                       nn.Linear(width, hidden), *norm)
        if image_dim:
            self.image_shape = tuple(image_shape)
            self.image = nn.Sequential(DiffCNN(self.image_shape, hidden), *norm)

    def _vector_slices(self) -> list[slice]:
        """The input dimensions each vector-stream projection reads (one slice when joint)."""
        start = self.appearance_dim
        if self.stream_dims is None:
            return [slice(start, start + self.vector_dim)] if self.motion is not None else []
        out = []
        for d in self.stream_dims:
            out.append(slice(start, start + d))
            start += d
        return out

    def _modality_keep(self, b: int, k: int, device: torch.device) -> torch.Tensor:
        """(B, K) 0/1: which of the K temporal streams each training clip sees; each hidden with
        probability `modality_dropout`, but a clip that would lose all K keeps one of them at random."""
        keep = torch.rand(b, k, device=device) >= self.modality_dropout
        none = ~keep.any(dim=1)                                              # (B,)
        if bool(none.any()):
            pick = torch.randint(k, (b,), device=device)
            keep = keep | (none[:, None] & (torch.arange(k, device=device)[None, :] == pick[:, None]))
        return keep

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), mask (B, T) bool, True on valid steps (None: all valid; only the statistics'
        norm reads it, in training) -> (B, T, H)."""
        h = self.appearance(x[..., :self.appearance_dim])                   # (B, T, H)
        if self.motion_dim:
            p = self.stream_dropout
            if self.training and p > 0:   # hide the appearance stream from a share p of the clips
                keep = torch.rand(h.shape[0], *[1] * (h.dim() - 1), device=h.device) >= p    # (B, 1, 1)
                h = h * keep.to(h.dtype)
            projections = self.streams if self.streams is not None else \
                ([self.motion] if self.motion is not None else [])
            parts = [proj(x[..., dims]) for proj, dims in zip(projections, self._vector_slices())]
            if self.summary is not None:
                pooled = torch.cat([pool(x[..., dims]) for pool, dims in zip(self.pools, self._vector_slices())],
                                   dim=-1)                                  # (B, T, K)
                parts.append(self.summary(pooled))
                if self.stats is not None:
                    z = running_stats(pooled)                               # (B, T, 5K)
                    for layer in self.stats:
                        z = layer(z, mask) if isinstance(layer, StepNorm) else layer(z)
                    parts.append(z)                                         # (B, T, H)
            if self.image is not None:
                start = self.appearance_dim + self.vector_dim
                parts.append(self.image(x[..., start:start + self.motion_dim - self.vector_dim]))
            if self.training and self.modality_dropout > 0 and len(parts) > 1:
                keep = self._modality_keep(h.shape[0], len(parts), h.device).to(h.dtype)   # (B, K)
                parts = [part * keep[:, i].reshape(-1, *[1] * (h.dim() - 1))
                         for i, part in enumerate(parts)]
            for part in parts:
                h = h + part
        return F.relu(h)

    def input_linears(self) -> list[tuple[nn.Linear, slice]]:
        """The first Linear of each stream read through one and the input dimensions it reads (an
        image stream is read by a CNN: its dimensions are never standardised)."""
        out = [(self.appearance[1], slice(0, self.appearance_dim))]
        projections = self.streams if self.streams is not None else \
            ([self.motion] if self.motion is not None else [])
        out += [(proj[1], dims) for proj, dims in zip(projections, self._vector_slices())]
        if self.pools is not None:
            out += list(zip(self.pools, self._vector_slices()))
        return out

    def set_summaries(self, matrices: list[torch.Tensor]) -> None:
        """The fixed (dim_k, s_k) pooling of each vector stream to its whole-frame summary (the
        streams' `summary_matrix()`); a bundle's state dict holds them (folded with the input
        normalisation), so only a freshly built head needs this."""
        if self.pools is None:
            return
        with torch.no_grad():
            for pool, m in zip(self.pools, matrices):
                pool.weight.copy_(m.T.to(pool.weight))
                pool.bias.zero_()


STATS = 5   # running statistics per summary number: mean, mean magnitude, maximum, minimum, unsteadiness


def running_stats(s: torch.Tensor) -> torch.Tensor:
    """(B, T, K) -> (B, T, 5K): at step t, of each of the K numbers, the mean, the mean absolute value,
    the maximum and the minimum over steps 1..t, and the mean absolute change between consecutive
    steps over steps 2..t (how unsteady it is: a shaky camera fast-forwarded changes direction between
    samples, a steady one does not). Step 0 (no previous frame: a temporal stream is zero there) is all
    zeros, and so is the unsteadiness at step 1. Causal: step t reads steps <= t, so a padded clip's
    valid steps are the unpadded clip's. How fast, how much, how suddenly and how unevenly the picture
    changed so far (a cut is one large step, fast-forward a high mean) are a few numbers here, where a
    recurrence on a few dozen clips per class would have to learn to integrate them. A loop over the T
    steps rather than `torch.cummax`, which ONNX has no operator for (T is fixed in an exported graph)."""
    b, t, k = s.shape
    if t < 2:
        return s.new_zeros(b, t, STATS * k)
    d = s[:, 1:]                                                             # (B, T-1, K)
    n = torch.arange(1, t, device=s.device, dtype=s.dtype)[None, :, None]    # (1, T-1, 1)
    mean = d.cumsum(dim=1) / n
    magnitude = d.abs().cumsum(dim=1) / n
    hi, lo = [d[:, 0]], [d[:, 0]]
    for i in range(1, t - 1):
        hi.append(torch.maximum(hi[-1], d[:, i]))
        lo.append(torch.minimum(lo[-1], d[:, i]))
    jumps = torch.cat([torch.zeros_like(d[:, :1]), (d[:, 1:] - d[:, :-1]).abs()], dim=1)   # (B, T-1, K)
    unsteady = jumps.cumsum(dim=1) / (n - 1).clamp_min(1)
    stats = torch.cat([mean, magnitude, torch.stack(hi, dim=1), torch.stack(lo, dim=1), unsteady],
                      dim=2)                                                 # (B, T-1, 5K)
    return torch.cat([stats.new_zeros(b, 1, STATS * k), stats], dim=1)       # (B, T, 5K)


class StepNorm(nn.Module):
    """(..., K) -> (..., K): each of the K numbers standardised over all valid steps of the batch in
    training (a BatchNorm1d over the rows; padded steps, given by `mask`, neither enter the batch
    statistics nor the running ones, and come out zero), by its running mean and variance in
    evaluation: a fixed affine map per number, the same for every step and clip, so causality holds
    and it exports as one."""

    def __init__(self, k: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(k)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., K), mask (...) bool, True on valid steps (None: all valid) -> (..., K)."""
        rows = x.reshape(-1, x.shape[-1])                                    # (B*T, K)
        if not self.training:
            return self.norm(rows).reshape(x.shape)
        valid = None if mask is None else mask.reshape(-1)                   # (B*T,)
        if valid is not None and bool(valid.all()):
            valid = None
        n_valid = rows.shape[0] if valid is None else int(valid.sum())
        if n_valid < 2:                  # one row has no variance: use the running statistics
            n = self.norm
            return F.batch_norm(rows, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0,
                                n.eps).reshape(x.shape)
        if valid is None:
            return self.norm(rows).reshape(x.shape)
        out = rows.new_zeros(rows.shape)
        out[valid] = self.norm(rows[valid])                                  # (n_valid, K)
        return out.reshape(x.shape)


class FixedLinear(nn.Module):
    """x W^T + b with W, b buffers, not parameters (never trained; saved in the state dict, and
    `fold_input_normalization` folds into them like into a Linear)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features))
        self.register_buffer("bias", torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class DiffCNN(nn.Module):
    """A frame-difference image per step, (..., C*H*W) -> (..., hidden): three strided 3x3
    convolutions (16, 32, 64 channels, ReLU), an average pool to 2x2 cells and a Linear. Trained end
    to end with the head: TSN's RGB-difference stream, small enough for a CPU. H and W are multiples
    of 16 (the pool's size is fixed, so the graph exports)."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: int):
        super().__init__()
        c, h, w = image_shape
        if h % 16 or w % 16:
            raise ValueError(f"DiffCNN: image sides must be multiples of 16, got {h}x{w}")
        self.image_shape = tuple(image_shape)
        self.net = nn.Sequential(
            nn.Conv2d(c, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),       # (N, 64, H/8, W/8)
            nn.AvgPool2d((h // 16, w // 16)), nn.Flatten(), nn.Linear(64 * 4, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        images = x.reshape(-1, *self.image_shape)                            # (N, C, H, W)
        return self.net(images).reshape(*lead, -1)                           # (..., hidden)
