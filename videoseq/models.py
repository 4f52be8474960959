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
from videoseq.encoders import FrameEncoder, build_encoder, weights_label
from videoseq.heads import TemporalHead, build_head
from videoseq.motion import build_motion


class VideoClassifier(nn.Module):
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

    def forward_head(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(feats, mask)                                           # (B, T, D) -> (B, C)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(frames), mask)           # (B, C)

    def forward_steps(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.forward_steps(self.forward_features(frames), mask)     # (B, T, C) log-probs

    def loss(self, frames: torch.Tensor, mask: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
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
    in_dim, motion_dim = feature_dims(encoder, motion)
    temporal = build_head(head, in_dim, num_classes, hidden=config.hidden, layers=config.layers,
                          dropout=config.dropout, bidirectional=config.bidirectional, motion_dim=motion_dim,
                          stream_dropout=config.stream_dropout)
    return VideoClassifier(encoder, temporal, motion=motion)


def feature_dims(encoder: FrameEncoder, motion: nn.Module | None) -> tuple[int, int]:
    """(D + M, M): a head's input width and how much of it is the motion stream."""
    m = motion.out_dim if motion is not None else 0
    return encoder.out_dim + m, m

