"""Classify a video held in memory: all its frames as one (N, H, W, 3) uint8 RGB array or tensor.

    frames = np.stack(list(iter_frames("a.mp4")))        # (N, H, W, 3) uint8 RGB, every decoded frame
    prediction = predict_frames(bundle, frames)          # probs == classify_paths(["a.mp4"], bundle)'s

The frames are treated as the full sequential decode of a file: the bundle's T frame numbers are
sampled from N the way `io.video.read_frames` samples a file (segment centres; with N < T, repeated
frames or masked steps as `bundle.short` says), each sampled frame is resized and centre-cropped by
`io.video.resize_crop`, and the clip goes through `predict.predict_clips` (padded to `batch_size`
clips, on `predict.inference_threads(workers)` torch threads, as `classify_paths` runs it). So the
probabilities are bit-identical to classifying a file whose decode gives these frames, with the same
`batch_size` and `workers`. Only the T sampled frames are copied; the input is never modified.
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from videoseq.config import INFERENCE_BATCH_SIZE
from videoseq.infer.predict import (Prediction, Sampling, inference_threads, predict_clips, prediction_of,
                                    thumbnails_of)
from videoseq.io.video import Clip, VideoInfo, resize_crop, sample_indices
from videoseq.runtime import torch_threads

if TYPE_CHECKING:
    from videoseq.models.bundle import Bundle

FRAMES_NAME = "<frames>"           # Prediction.path of frames given without a name


def as_frames(frames: Any) -> np.ndarray:
    """`frames` as a (N, H, W, 3) uint8 numpy array (a view where possible), from a numpy array or a
    torch tensor (any device) of that shape and dtype; `ValueError` saying what is wrong otherwise.

        as_frames(np.zeros((10, 48, 64, 3), np.uint8)).shape    # (10, 48, 64, 3)
    """
    torch = sys.modules.get("torch")     # a tensor means torch is loaded already: never import it here
    if torch is not None and isinstance(frames, torch.Tensor):
        if frames.dtype != torch.uint8:
            raise ValueError(f"frames: expected a uint8 tensor (0..255 RGB), got {frames.dtype}")
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        hint = "; stack a list of frames with np.stack" if isinstance(frames, (list, tuple)) else ""
        raise ValueError(f"frames: expected a video path or a (N, H, W, 3) uint8 RGB array or tensor, "
                         f"got {type(frames).__name__}{hint}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames: expected dtype uint8 (0..255 RGB), got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected shape (N, H, W, 3) (every frame of one video, RGB), "
                         f"got {tuple(frames.shape)}")
    if min(frames.shape[:3]) < 1:
        raise ValueError(f"frames: expected at least one frame of at least 1x1 pixels, "
                         f"got shape {tuple(frames.shape)}")
    return frames


def sample_positions(n: int, sampling: Sampling) -> tuple[np.ndarray, np.ndarray]:
    """The T positions (in 0..n-1) a video of n frames is sampled at, and the mask: segment centres
    (repeating frames of a short video), or with short="mask" every frame then padding (-1, False)."""
    count = sampling.frames
    if sampling.short not in ("repeat", "mask"):
        raise ValueError(f"unknown short-video policy {sampling.short!r}; choose from mask, repeat")
    if n >= count or sampling.short == "repeat":
        return sample_indices(n, count=count, mode="uniform"), np.ones(count, bool)   # (T,), (T,)
    indices = np.full(count, -1, np.int64)                          # short="mask": every frame, then padding
    indices[:n] = np.arange(n)
    return indices, np.arange(count) < n


def clip_from_frames(frames: Any, sampling: Sampling, *, name: str = FRAMES_NAME) -> Clip:
    """The clip `io.video.read_frames` returns for a file whose full decode is `frames`: T sampled
    frame numbers, those frames resized and centre-cropped to S, the mask (False on padded steps).

        clip_from_frames(np.zeros((10, 48, 64, 3), np.uint8), Sampling(4, 32, "repeat")).indices
        # array([1, 3, 6, 8])
    """
    frames = as_frames(frames)                                     # (N, H, W, 3) uint8 RGB
    n, height, width = frames.shape[:3]
    count, size = sampling.frames, sampling.size
    indices, mask = sample_positions(n, sampling)                  # (T,), (T,)
    out = np.zeros((count, size, size, 3), np.uint8)               # (T, S, S, 3); padded steps stay black
    for step, k in enumerate(indices):
        if mask[step]:
            out[step] = resize_crop(np.ascontiguousarray(frames[k]), size)
    info = VideoInfo(path=name, codec="", fps=0.0, width=int(width), height=int(height), rotation=0,
                     duration=0.0, num_frames=int(n), frames_exact=True)
    return Clip(out, indices, mask, info)


def predict_frames(bundle: "Bundle", frames: Any, *, batch_size: int = INFERENCE_BATCH_SIZE,
                   workers: int = 2, thumbnails: bool = False, name: str = FRAMES_NAME) -> Prediction:
    """Classify one video given as all its frames, a (N, H, W, 3) uint8 RGB array or tensor: the
    `Prediction` that `classify_paths` gives for a file decoding to those frames (same probabilities,
    steps, indices, thumbnails), with `name` as its path.

        frames = np.stack(list(iter_frames("a.mp4")))      # (N, H, W, 3) uint8 RGB
        predict_frames(load_bundle("runs/demo"), frames).label
    """
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    import torch

    started = time.perf_counter()
    clip = clip_from_frames(frames, Sampling(bundle.frames, bundle.size, bundle.short), name=name)
    # the thread count classify_paths' inference workers use: it can change a result's last bits
    with torch_threads(min(torch.get_num_threads(), inference_threads(workers))):
        probs, steps = predict_clips(bundle, [clip], batch_size=batch_size)   # (1, C), (1, T, C)
    return prediction_of(name, bundle.classes, bundle.head, probs[0], steps[0], clip,
                         time.perf_counter() - started, thumbnails_of(clip.frames) if thumbnails else None)
