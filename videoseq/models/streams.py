"""The temporal streams by name, and a stack of them: what temporal heads read besides appearance.

    motion = build_motion("blockmatch+photometric")   # config `model.motion`; "none" -> None
    m = motion(frames)          # (B, T, 3, S, S) normalised frames -> (B, T, M), M = motion.out_dim

`model.motion` names one stream or several joined by "+"; their outputs are concatenated, vector
streams in the order named, then at most one image stream (`rgbdiff`), which the head convolves
(heads.DiffCNN) instead of reading through a Linear layer. Streams have no parameters: a bundle
rebuilds them from its config. Every stream reads two or more frames, so every stream is temporal
evidence: `per_frame` never reads any of them (heads.py, `reads_motion`).

- blockmatch   displacement per cell of a 4x4 grid at 64/32/16 px, +-3 px (motion.py), 144
- photometric  change of colour means and log contrast, whole frame + 2x2 grid (changes.py), 20
- speed        coarse block matching (2x2 grid, 32/16/8 px) + content change per cell (changes.py), 48
- tempo        log ratio of the picture's change over two steps to that over one, 3 scales (changes.py), 3
- rgbdiff      the colour frame difference at 32x32 px, for a learned CNN (changes.py), 3072
"""
from __future__ import annotations

import math

import torch
from torch import nn

from videoseq.models.changes import PhotometricStream, RGBDiffStream, SpeedStream, TempoStream
from videoseq.models.motion import BlockMatchMotion
from videoseq.registry import Registry

MOTIONS: Registry[type[nn.Module]] = Registry("motion")
MOTIONS.register("blockmatch")(BlockMatchMotion)
MOTIONS.register("photometric")(PhotometricStream)
MOTIONS.register("speed")(SpeedStream)
MOTIONS.register("tempo")(TempoStream)
MOTIONS.register("rgbdiff")(RGBDiffStream)


class StreamStack(nn.Module):
    """Several temporal streams side by side: (B, T, 3, S, S) -> (B, T, sum of M)."""

    def __init__(self, names: list[str]):
        super().__init__()
        streams = [MOTIONS.get(n)() for n in names]
        images = [s for s in streams if getattr(s, "image_shape", None)]
        if len(images) > 1:
            raise ValueError(f"model.motion: at most one image stream, got {len(images)}")
        order = [i for i, s in enumerate(streams) if s not in images] + \
                [i for i, s in enumerate(streams) if s in images]
        self.names = [names[i] for i in order]
        self.streams = nn.ModuleList([streams[i] for i in order])
        self.out_dim = sum(s.out_dim for s in self.streams)
        self.image_shape: tuple[int, int, int] | None = images[0].image_shape if images else None
        self.vector_dim = self.out_dim - (math.prod(self.image_shape) if self.image_shape else 0)
        # the widths of the vector streams, in output order (a head may project each on its own)
        self.vector_dims: list[int] = [s.out_dim for s in self.streams if not getattr(s, "image_shape", None)]

    def parts(self) -> list[tuple[str, nn.Module, slice]]:
        """(name, stream, the dimensions of the stack's output it fills), in output order."""
        out, start = [], 0
        for name, s in zip(self.names, self.streams):
            out.append((name, s, slice(start, start + s.out_dim)))
            start += s.out_dim
        return out

    def summary_matrices(self) -> list[torch.Tensor]:
        """Per vector stream, the fixed (out_dim, s) pooling to its whole-frame summary (`summary_matrix`)."""
        return [summary_matrix(s) for s in self.streams if not getattr(s, "image_shape", None)]

    def cache_id(self) -> str:
        """The streams' cache names joined by "+"."""
        return "+".join(s.cache_id() for s in self.streams)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if len(self.streams) == 1:
            return self.streams[0](frames)
        return torch.cat([s(frames).float() for s in self.streams], dim=2)     # (B, T, M)


def summary_matrix(stream: nn.Module) -> torch.Tensor:
    """(out_dim, s): the whole-frame summary of a vector stream's output as a fixed linear map. Grid
    streams (blockmatch, speed: consecutive runs of grid*grid cells) average each run over the cells;
    photometric keeps its whole-frame region (its first 4 numbers); any other stream is kept whole."""
    d = stream.out_dim
    if isinstance(stream, (BlockMatchMotion, SpeedStream)):
        cells = stream.grid * stream.grid
        return torch.kron(torch.eye(d // cells), torch.full((cells, 1), 1.0 / cells))     # (d, d / cells)
    if isinstance(stream, PhotometricStream):
        return torch.eye(d)[:, :4]
    return torch.eye(d)


def motion_names(name: str | None) -> list[str]:
    """The stream names in a `model.motion` value ("none" or None: no stream); unknown names raise
    `UnknownNameError` listing the choices, a name given twice a ValueError."""
    if name in (None, "none", ""):
        return []
    names = [n.strip() for n in str(name).split("+")]
    for n in names:
        MOTIONS.get(n)   # raises for an unknown name
    if len(set(names)) != len(names):
        raise ValueError(f"model.motion: {name!r} names a stream twice")
    return names


def build_motion(name: str | None) -> StreamStack | None:
    """The streams of `model.motion` ("blockmatch", "blockmatch+photometric", ...), or None for
    "none"/None (appearance only)."""
    names = motion_names(name)
    return StreamStack(names) if names else None


def list_motions() -> list[str]:
    """The stream names `model.motion` accepts ("none", or registered names joined by "+")."""
    return ["none", *MOTIONS.names()]
