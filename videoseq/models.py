"""VideoClassifier: a frame encoder and a temporal head, split as forward_features / forward_head.

    model = build_model(cfg.model, head="lstm", num_classes=5)
    x = frames_to_tensor(clip.frames, size=model.encoder.input_size,
                         mean=model.encoder.mean, std=model.encoder.std)[None]   # (1, T, 3, S, S)
    logits = model(x, torch.from_numpy(clip.mask)[None])                         # (1, C)

Frozen training never calls the encoder here: features are cached once (features.py) and the head
is trained with `forward_head`. Fine-tuning calls `forward` end to end.
"""
from __future__ import annotations

import torch
from torch import nn

from videoseq.config import ModelConfig
from videoseq.encoders import FrameEncoder, build_encoder, weights_label
from videoseq.heads import TemporalHead, build_head


class VideoClassifier(nn.Module):
    def __init__(self, encoder: FrameEncoder, head: TemporalHead, *, chunk_size: int = 64):
        super().__init__()
        if head.in_dim != encoder.out_dim:
            raise ValueError(f"head expects {head.in_dim}-d features, encoder "
                             f"{encoder.name} gives {encoder.out_dim}")
        self.encoder = encoder
        self.head = head
        self.chunk_size = chunk_size   # frames per encoder call: bounds activation memory

    def forward_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) -> (B, T, D), the encoder run over the B*T frames in chunks."""
        b, t = frames.shape[:2]
        flat = frames.reshape(b * t, *frames.shape[2:])                         # (B*T, 3, S, S)
        feats = [self.encoder(chunk) for chunk in flat.split(self.chunk_size)]  # [(n, D)]
        return torch.cat(feats).reshape(b, t, -1)                               # (B, T, D)

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
    temporal = build_head(head, encoder.out_dim, num_classes, hidden=config.hidden,
                          layers=config.layers, dropout=config.dropout,
                          bidirectional=config.bidirectional)
    return VideoClassifier(encoder, temporal)

