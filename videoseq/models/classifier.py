"""VideoClassifier: a frame encoder (+ a motion stream) and a temporal head, split as
forward_features / forward_head.

    model = build_model(cfg.model, head="lstm", num_classes=5)
    x = frames_to_tensor(clip.frames, size=model.encoder.input_size,
                         mean=model.encoder.mean, std=model.encoder.std)[None]   # (1, T, 3, S, S)
    logits = model(x, torch.from_numpy(clip.mask)[None])                         # (1, C)

The features of a frame are the encoder's (D) followed by the motion stream's (M, motion.py: how the
picture moved since the previous sampled frame; zeros when `model.motion` is "none"). The head knows M
(`head.motion_dim`): `per_frame` reads the first D only, temporal heads all D + M.

Frozen training never calls the encoder here: features are cached once (features.py) and the head
is trained with `forward_head`. Fine-tuning calls `forward` end to end.
"""
from __future__ import annotations

import torch
from torch import nn

from videoseq.config import ModelConfig
from videoseq.models.encoders import FrameEncoder, build_encoder, weights_label
from videoseq.models.heads import TemporalHead, build_head
from videoseq.models.streams import build_motion


class VideoClassifier(nn.Module):
    """Frame encoder, optional motion stream and temporal head: (B, T, 3, S, S) frames and a (B, T)
    mask -> (B, C) logits."""

    def __init__(self, encoder: FrameEncoder, head: TemporalHead, *, motion: nn.Module | None = None,
                 chunk_size: int = 64):
        super().__init__()
        motion_dim = motion.out_dim if motion is not None else 0
        if head.in_dim != encoder.out_dim + motion_dim or head.motion_dim != motion_dim:
            raise ValueError(f"head expects {head.in_dim}-d features ({head.motion_dim} of motion), encoder "
                             f"{encoder.name} gives {encoder.out_dim} and the motion stream {motion_dim}")
        self.encoder = encoder
        self.motion = motion
        self.head = head
        self.chunk_size = chunk_size   # frames per encoder call: bounds activation memory

    def forward_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) -> (B, T, D + M): the encoder run over the B*T frames in chunks, then the
        motion stream's M numbers per step (M = 0 without one)."""
        b, t = frames.shape[:2]
        flat = frames.reshape(b * t, *frames.shape[2:])                         # (B*T, 3, S, S)
        feats = [self.encoder(chunk) for chunk in flat.split(self.chunk_size)]  # [(n, D)]
        feats = torch.cat(feats).reshape(b, t, -1)                              # (B, T, D)
        if self.motion is None:
            return feats
        return torch.cat([feats, self.motion(frames).to(feats.dtype)], dim=2)   # (B, T, D + M)

    def clip_features(self, frames: torch.Tensor, count: int) -> torch.Tensor:
        """Inference on a padded batch: (B, T, 3, S, S), the first `count` clips real -> (B, T, D + M).

        The encoder runs on each real clip alone (in calls of `encoder.frames_per_call()` frames,
        always the same split), so a clip's features never depend on the batch it came in, and the
        padding clips cost no encoder time (their appearance features are zero and never read). The
        motion stream runs on the whole batch, unless the head never reads it (`per_frame`: zeros)."""
        b, t = frames.shape[:2]
        step = self.encoder.frames_per_call(frames.device)   # S and device only: the same for every clip
        feats = [torch.cat([self.encoder(part) for part in frames[i].split(step)])
                 for i in range(count)]                                            # count x (T, D)
        appearance = frames.new_zeros(b, t, self.encoder.out_dim)                  # (B, T, D)
        if feats:
            appearance[:count] = torch.stack(feats).to(appearance.dtype)
        if self.motion is None:
            return appearance
        if not self.head.reads_motion:
            moved = appearance.new_zeros(b, t, self.motion.out_dim)                # (B, T, M), unread
        else:
            moved = self.motion(frames).to(appearance.dtype)                       # (B, T, M)
        return torch.cat([appearance, moved], dim=2)                               # (B, T, D + M)

    def forward_head(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D + M) features -> (B, C) logits: the head alone."""
        return self.head(feats, mask)                                           # (B, T, D) -> (B, C)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 3, S, S) frames -> (B, C) logits, end to end."""
        return self.forward_head(self.forward_features(frames), mask)           # (B, C)

    def forward_steps(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 3, S, S) frames -> (B, T, C) log-probs: the head's `forward_steps`, end to end."""
        return self.head.forward_steps(self.forward_features(frames), mask)     # (B, T, C) log-probs

    def loss(self, frames: torch.Tensor, mask: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        """The head's training loss on frames, end to end; y (B,) int64 class indices."""
        return self.head.loss(self.forward_features(frames), mask, y)


def build_model(config: ModelConfig, head: str, num_classes: int, *,
                load_weights: bool = True, freeze_encoder: bool = False) -> VideoClassifier:
    """Encoder and head as the config says.

    `config.input_size` (None = the encoder's default) sets the frame side.
    load_weights=False builds the encoder with random init (the caller is about to load a bundle's
    state dict, so DEFAULT weights need not be present); freeze_encoder for frozen training.
    """
    encoder = build_encoder(config.encoder, weights=config.weights if load_weights else None,
                            pooling=config.pooling, input_size=config.input_size)
    if not load_weights:
        encoder.weights_label = weights_label(config.weights)   # what the loaded state will be
    if freeze_encoder:
        encoder.freeze()
    motion = build_motion(config.motion)
    in_dim, _ = feature_dims(encoder, motion)
    temporal = build_head(head, in_dim, num_classes, **head_options(config, motion))
    return VideoClassifier(encoder, temporal, motion=motion)


def head_options(config: ModelConfig, motion: nn.Module | None) -> dict:
    """The keyword arguments of `build_head` the model config and its temporal streams fix (all but
    the name, input width and class count): training and bundle loading build the same head."""
    per_stream = bool(config.per_stream) and motion is not None
    return dict(hidden=config.hidden, layers=config.layers, dropout=config.dropout,
                bidirectional=config.bidirectional, motion_dim=motion.out_dim if motion is not None else 0,
                stream_dropout=config.stream_dropout, image_shape=image_shape(motion),
                stream_norm=config.stream_norm,
                stream_dims=list(getattr(motion, "vector_dims", [motion.out_dim])) if per_stream else None,
                stream_bottleneck=config.stream_bottleneck if per_stream else 0,
                modality_dropout=config.modality_dropout,
                stream_summaries=motion.summary_matrices() if per_stream and config.stream_summary else None,
                stream_stats=bool(per_stream and config.stream_summary and config.stream_stats),
                stats_norm=bool(config.stats_norm))


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every BatchNorm2d in eval mode into the convolution whose output it normalises, in place,
    and return how many were folded. For inference only (bundles: `load_bundle`): the same function of
    the input (to ~1e-7), one pass over each activation less.

    Pairs are found in every nn.Sequential (a Conv2d directly followed by a BatchNorm2d: torchvision's
    conv-norm-activation blocks, SmallCNN) and in modules that name theirs with `conv_bn_pairs()`."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in list(module.modules()):
        pairs = list(parent.conv_bn_pairs()) if hasattr(parent, "conv_bn_pairs") else []
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            pairs += list(zip(names, names[1:]))
        for conv_name, bn_name in pairs:
            conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and not conv.training
                    and not bn.training and bn.track_running_stats and bn.running_mean is not None):
                channels_last = conv.weight.is_contiguous(memory_format=torch.channels_last) \
                    and not conv.weight.is_contiguous()
                fused = fuse_conv_bn_eval(conv, bn)
                if channels_last:
                    fused.to(memory_format=torch.channels_last)
                setattr(parent, conv_name, fused)
                setattr(parent, bn_name, nn.Identity())
                folded += 1
    return folded


def image_shape(motion: nn.Module | None) -> tuple[int, int, int] | None:
    """(C, H, W) of the image stream among the temporal streams (the last M dimensions' tail), or None."""
    return getattr(motion, "image_shape", None) if motion is not None else None


def feature_dims(encoder: FrameEncoder, motion: nn.Module | None) -> tuple[int, int]:
    """(D + M, M): a head's input width and how much of it is the motion stream."""
    m = motion.out_dim if motion is not None else 0
    return encoder.out_dim + m, m

