"""Temporal heads: T frame features -> one video label. A registry picks them by name.

    head = build_head("lstm", in_dim=1280, num_classes=5, hidden=128)
    logits = head(feats, mask)               # (B, T, D), (B, T) bool -> (B, C)
    timeline = head.forward_steps(feats, mask)  # (B, T, C) log-probs: the belief after each frame
    logits, timeline = head.forward_and_steps(feats, mask)   # both from one pass (classify)

Every head first projects each frame alone (dropout, Linear to `hidden`, ReLU), so the baseline and
the temporal heads see the same per-frame representation and differ only in how they combine frames.
The last `motion_dim` feature dimensions, when there are any, are the motion stream (motion.py: how
the picture moved since the previous frame); they carry time, so `per_frame` drops them and reads the
appearance features alone, while every other head reads both.
- per_frame: classify each frame alone, average the T log-probabilities (no memory at all);
- rnn / lstm / gru: recurrent over the valid steps, classify the last valid state;
- conv1d: causal temporal convolutions (residual, dilations 1, 2, 4, ...), masked mean over T.

Masks are prefix masks: the valid steps of a video come first (short videos are padded at the end);
every row needs at least one valid step. `mask=None` means all steps are valid. Outputs for a padded
video equal the outputs for the same video unpadded. In forward_steps, padded steps repeat the last
valid step. `bidirectional=True` makes rnn/lstm/gru/conv1d see the future; their forward_steps then
recompute the prefix x[:, :t+1] for each t (exact, T times the work). per_frame ignores it.
Traced into a graph (torch.jit.trace, torch.onnx.export: infer/export.py), causal recurrent heads run
unpacked, with the same numbers (`RecurrentHead._run_unpacked`).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from videoseq.models.embed import DiffCNN, FixedLinear, FrameEmbed  # noqa: F401  (heads' embedding)
from videoseq.registry import Registry


def mask_lengths(mask: torch.Tensor | None, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) bool prefix mask (or None) -> (mask, lengths (B,) int64), validated."""
    b, t = x.shape[:2]
    if mask is None:
        mask = torch.ones(b, t, dtype=torch.bool, device=x.device)
    if mask.shape != (b, t):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match features {tuple(x.shape)}")
    mask = mask.to(device=x.device, dtype=torch.bool)
    lengths = mask.sum(dim=1)
    steps = torch.arange(t, device=x.device)
    if bool((lengths == 0).any()) or not torch.equal(mask, steps[None, :] < lengths[:, None]):
        raise ValueError("mask must mark a non-empty prefix of each row (valid steps first)")
    return mask, lengths


def hold_last_valid(steps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, C): steps past a row's length repeat its last valid step."""
    t = steps.shape[1]
    idx = torch.minimum(torch.arange(t, device=steps.device)[None, :], (lengths - 1)[:, None])
    return steps.gather(1, idx[:, :, None].expand(-1, -1, steps.shape[2]))


class TemporalHead(nn.Module):
    """Base: the shared per-frame projection, the loss, and forward_steps by prefixes."""

    reads_motion = True   # False: the head sees only the first in_dim - motion_dim dimensions

    def __init__(self, in_dim: int, num_classes: int, *, hidden: int = 128, layers: int = 1,
                 dropout: float = 0.3, bidirectional: bool = False, motion_dim: int = 0,
                 stream_dropout: float = 0.0, image_shape: tuple[int, int, int] | None = None,
                 stream_norm: bool = False, stream_dims: list[int] | None = None,
                 stream_bottleneck: int = 0, modality_dropout: float = 0.0,
                 stream_summaries: list[torch.Tensor] | None = None, stream_stats: bool = False,
                 stats_norm: bool = False):
        super().__init__()
        if (in_dim < 1 or num_classes < 1 or hidden < 1 or layers < 1 or not 0 <= dropout < 1
                or not 0 <= motion_dim < in_dim):
            raise ValueError(f"{type(self).__name__}: bad sizes in_dim={in_dim} num_classes="
                             f"{num_classes} hidden={hidden} layers={layers} dropout={dropout} "
                             f"motion_dim={motion_dim}")
        self.in_dim, self.num_classes, self.hidden = in_dim, num_classes, hidden
        self.layers, self.dropout, self.bidirectional = layers, dropout, bidirectional
        self.motion_dim = motion_dim
        self.image_shape = tuple(image_shape) if image_shape else None
        self.embed = FrameEmbed(in_dim - motion_dim, motion_dim if self.reads_motion else 0,
                                hidden=hidden, dropout=dropout, stream_dropout=stream_dropout,
                                image_shape=self.image_shape, stream_norm=stream_norm,
                                stream_dims=stream_dims, stream_bottleneck=stream_bottleneck,
                                modality_dropout=modality_dropout,
                                stream_summaries=[m.shape[1] for m in stream_summaries] if stream_summaries else None,
                                stream_stats=stream_stats, stats_norm=stats_norm)
        if stream_summaries:
            self.embed.set_summaries(stream_summaries)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError  # (B, T, D), (B, T) -> (B, C)

    def forward_steps(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, C) log-probs, step t = the prediction had the video ended at t."""
        mask, lengths = mask_lengths(mask, x)
        steps = [F.log_softmax(self(x[:, :t + 1], mask[:, :t + 1]), dim=-1)
                 for t in range(x.shape[1])]
        return hold_last_valid(torch.stack(steps, dim=1), lengths)

    def forward_and_steps(self, x: torch.Tensor, mask: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(self(x, mask), self.forward_steps(x, mask)), bit for bit; heads that can share the work
        between the two (one recurrent pass instead of two) override it."""
        return self(x, mask), self.forward_steps(x, mask)

    def loss(self, x: torch.Tensor, mask: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        """Video-level cross-entropy; y (B,) int64 class indices."""
        return F.cross_entropy(self(x, mask), y)


HEADS: Registry[type[TemporalHead]] = Registry("head")


@HEADS.register("per_frame")
class PerFrameHead(TemporalHead):
    """The baseline without memory: each frame classified alone, log-probs averaged over valid frames.
    It reads the appearance features only: the motion stream compares a frame with the one before."""

    reads_motion = False

    def __init__(self, in_dim: int, num_classes: int, **kw):
        super().__init__(in_dim, num_classes, **kw)
        self.classifier = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(self.hidden, num_classes))

    def frame_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, C): each frame's own logits."""
        return self.classifier(self.embed(x))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_and_steps(x, mask)[0]

    def forward_steps(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, C): each frame's own log-probs, not their running mean (that is
        `metrics.accuracy_over_frames_seen(..., cumulative_mean=True)`); padded steps repeat the last valid."""
        _, lengths = mask_lengths(mask, x)
        return hold_last_valid(F.log_softmax(self.frame_logits(x), dim=-1), lengths)

    def forward_and_steps(self, x: torch.Tensor, mask: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward, forward_steps) from one pass over the frames: the mean log-probs over the valid
        frames (B, C) and each frame's own (B, T, C)."""
        mask, lengths = mask_lengths(mask, x)
        logp = F.log_softmax(self.frame_logits(x), dim=-1)                   # (B, T, C)
        mean = logp.masked_fill(~mask[:, :, None], 0.0).sum(dim=1) / lengths[:, None].to(logp.dtype)
        return mean, hold_last_valid(logp, lengths)                          # (B, C), (B, T, C)

    def loss(self, x: torch.Tensor, mask: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        """Frame-level cross-entropy: every valid frame is a sample labelled with its video's class."""
        mask, _ = mask_lengths(mask, x)
        logits = self.frame_logits(x)                                        # (B, T, C)
        frame_y = y[:, None].expand(-1, x.shape[1])                          # (B, T)
        return F.cross_entropy(logits[mask], frame_y[mask])


class RecurrentHead(TemporalHead):
    """nn.RNN / nn.LSTM / nn.GRU over the valid steps (packed), classifier on the last valid state."""

    cell: type[nn.RNNBase] = nn.RNN

    def __init__(self, in_dim: int, num_classes: int, **kw):
        super().__init__(in_dim, num_classes, **kw)
        self.rnn = self.cell(self.hidden, self.hidden, num_layers=self.layers, batch_first=True,
                             dropout=self.dropout if self.layers > 1 else 0.0,
                             bidirectional=self.bidirectional)
        dirs = 2 if self.bidirectional else 1
        self.classifier = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(self.hidden * dirs, num_classes))

    def _run(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> outputs (B, T, H*dirs) zero past each length, final hidden (layers*dirs, B, H)."""
        steps = torch.arange(x.shape[1], device=x.device)
        h = self.embed(x, steps[None, :] < lengths[:, None])                 # (B, T, H)
        if torch.jit.is_tracing() and not self.bidirectional:
            return self._run_unpacked(h, lengths)
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        h_n = state[0] if isinstance(state, tuple) else state               # LSTM: (h, c)
        return out, h_n

    def _run_unpacked(self, h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`_run` for graphs (torch.jit.trace, torch.onnx.export), which cannot hold packed sequences:
        the recurrence over all T steps. A causal recurrence's output at step t depends on steps <= t
        only, so up to each row's length it is the packed run's, and the final hidden state of the last
        layer (all `_classify_last` reads) is the output at the row's last valid step."""
        out, _ = self.rnn(h)                                                 # (B, T, H)
        t = torch.arange(out.shape[1], device=out.device)
        out = out * (t[None, :] < lengths[:, None]).to(out.dtype)[:, :, None]   # zero past each length
        last = out.gather(1, (lengths - 1)[:, None, None].expand(-1, 1, out.shape[2]))  # (B, 1, H)
        return out, last.transpose(0, 1)                                     # (B, T, H), (1, B, H)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        _, lengths = mask_lengths(mask, x)
        _, h_n = self._run(x, lengths)
        return self._classify_last(h_n)

    def _classify_last(self, h_n: torch.Tensor) -> torch.Tensor:
        last = torch.cat([h_n[-2], h_n[-1]], dim=-1) if self.bidirectional else h_n[-1]  # (B, H*dirs)
        return self.classifier(last)                                         # (B, C)

    def forward_steps(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, C) log-probs of the classifier on the state after each step: one
        recurrent pass when causal, prefix by prefix (`TemporalHead.forward_steps`) when bidirectional."""
        if self.bidirectional:
            return super().forward_steps(x, mask)
        _, lengths = mask_lengths(mask, x)
        out, _ = self._run(x, lengths)                                       # (B, T, H)
        return hold_last_valid(F.log_softmax(self.classifier(out), dim=-1), lengths)

    def forward_and_steps(self, x: torch.Tensor, mask: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward, forward_steps) from one recurrent pass when causal; as the base class when bidirectional."""
        if self.bidirectional:
            return super().forward_and_steps(x, mask)
        _, lengths = mask_lengths(mask, x)
        out, h_n = self._run(x, lengths)                                     # one recurrent pass
        steps = hold_last_valid(F.log_softmax(self.classifier(out), dim=-1), lengths)
        return self._classify_last(h_n), steps                               # (B, C), (B, T, C)


@HEADS.register("rnn")
class RNNHead(RecurrentHead):
    """An Elman RNN (`nn.RNN`, tanh) over the valid steps; classifies the last valid state."""

    cell = nn.RNN


@HEADS.register("lstm")
class LSTMHead(RecurrentHead):
    """An LSTM over the valid steps; classifies the last valid hidden state."""

    cell = nn.LSTM


@HEADS.register("gru")
class GRUHead(RecurrentHead):
    """A GRU over the valid steps; classifies the last valid hidden state."""

    cell = nn.GRU


@HEADS.register("conv1d")
class Conv1dHead(TemporalHead):
    """`layers` residual temporal convolutions (kernel 3, dilation 2**i; causal unless
    bidirectional), then the mean over valid steps and a linear classifier."""

    kernel = 3

    def __init__(self, in_dim: int, num_classes: int, **kw):
        super().__init__(in_dim, num_classes, **kw)
        self.convs = nn.ModuleList(nn.Conv1d(self.hidden, self.hidden, self.kernel, dilation=2 ** i)
                                   for i in range(self.layers))
        self.drop = nn.Dropout(self.dropout)
        self.classifier = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(self.hidden, num_classes))

    def step_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, H), zero on padded steps, which therefore never leak into valid ones."""
        keep = mask[:, None, :].to(x.dtype)                                  # (B, 1, T)
        z = self.embed(x, mask).transpose(1, 2) * keep                       # (B, H, T)
        for conv in self.convs:
            pad = (self.kernel - 1) * conv.dilation[0]
            padding = (pad // 2, pad - pad // 2) if self.bidirectional else (pad, 0)
            z = z + self.drop(F.relu(conv(F.pad(z, padding)))) * keep
        return z.transpose(1, 2)                                             # (B, T, H)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask, lengths = mask_lengths(mask, x)
        return self._classify_mean(self.step_features(x, mask), lengths)

    def _classify_mean(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        pooled = z.sum(dim=1) / lengths[:, None].to(z.dtype)                 # (B, H)
        return self.classifier(pooled)                                       # (B, C)

    def forward_steps(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, C) log-probs of the classifier on the running mean of the step features;
        prefix by prefix (`TemporalHead.forward_steps`) when bidirectional."""
        if self.bidirectional:
            return super().forward_steps(x, mask)
        mask, lengths = mask_lengths(mask, x)
        return self._steps(self.step_features(x, mask), lengths)

    def _steps(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        counts = torch.arange(1, z.shape[1] + 1, device=z.device, dtype=z.dtype)
        running_mean = z.cumsum(dim=1) / counts[None, :, None]              # (B, T, H)
        return hold_last_valid(F.log_softmax(self.classifier(running_mean), dim=-1), lengths)

    def forward_and_steps(self, x: torch.Tensor, mask: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward, forward_steps) from one pass of the convolutions when causal; as the base class
        when bidirectional."""
        if self.bidirectional:
            return super().forward_and_steps(x, mask)
        mask, lengths = mask_lengths(mask, x)
        z = self.step_features(x, mask)                                      # (B, T, H), once
        return self._classify_mean(z, lengths), self._steps(z, lengths)


def build_head(name: str, in_dim: int, num_classes: int, *, hidden: int = 128, layers: int = 1,
               dropout: float = 0.3, bidirectional: bool = False, motion_dim: int = 0,
               stream_dropout: float = 0.0, image_shape: tuple[int, int, int] | None = None,
               stream_norm: bool = False, stream_dims: list[int] | None = None,
               stream_bottleneck: int = 0, modality_dropout: float = 0.0,
               stream_summaries: list[torch.Tensor] | None = None, stream_stats: bool = False,
               stats_norm: bool = False) -> TemporalHead:
    """The registered head `name` (see `list_heads()`); the last `motion_dim` of the `in_dim` input
    dimensions are the motion stream (read by every head but `per_frame`; `stream_dropout`,
    `stream_dims`, `stream_bottleneck`, `modality_dropout`, `stream_summaries`, `stream_stats`,
    `stats_norm`: FrameEmbed)."""
    return HEADS.get(name)(in_dim, num_classes, hidden=hidden, layers=layers, dropout=dropout,
                           bidirectional=bidirectional, motion_dim=motion_dim, stream_dropout=stream_dropout,
                           image_shape=image_shape, stream_norm=stream_norm, stream_dims=stream_dims,
                           stream_bottleneck=stream_bottleneck, modality_dropout=modality_dropout,
                           stream_summaries=stream_summaries, stream_stats=stream_stats,
                           stats_norm=stats_norm)


def list_heads() -> list[str]:
    """The head names `build_head` accepts, sorted."""
    return HEADS.names()
