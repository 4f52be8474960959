"""Probe videos, sample frame indices (TSN segments), read exactly those frames, resized, streaming.

Frame numbers always mean positions in a full sequential decode. `read_frames` returns exactly the
frames that `iter_frames` would yield at the sampled positions, whatever the container says:

1. A packet pass (no decoding, milliseconds) gives the provisional frame count, keyframes and timestamps.
2. The frames at the indices for that count are fetched by decoding only their packets (MJPEG AVI), by
   seeking (constant-frame-rate files whose keyframes are dense relative to the sampling stride: short
   GOPs; every seek verified by timestamp) or by one sequential pass that decodes all and converts only
   the kept frames.
3. If decoding ends at a different count (a truncated file), the indices are recomputed for the true
   count with the same random offsets, and only the frames still missing are re-read.
Only the kept frames, already resized, are held in memory.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Literal, NamedTuple

import cv2
import numpy as np

from videoseq.io import decode
from videoseq.errors import VideoReadError

logger = logging.getLogger(__name__)


class VideoInfo(NamedTuple):
    """What a probe tells about one video file: codec, frame rate, frame size, rotation, duration and
    frame count."""

    path: str
    codec: str            # FourCC as text: "h264", "MJPG", "FMP4" (mp4v), ...
    fps: float            # container frame rate (the average on variable-frame-rate files)
    width: int            # size of decoded frames, after rotation metadata is applied
    height: int
    rotation: int         # display rotation from the metadata, degrees clockwise (0, 90, 180, 270)
    duration: float       # seconds, from the first to past the last frame timestamp
    num_frames: int       # decodable frames
    frames_exact: bool    # True: confirmed by decoding; False: the count of video packets


class Clip(NamedTuple):
    """The frames sampled from one video, resized and centre-cropped, with their frame numbers and mask."""

    frames: np.ndarray    # (T, S, S, 3) uint8 RGB
    indices: np.ndarray   # (T,) int64 frame numbers in full-sequential-decode order; -1 on padded steps
    mask: np.ndarray      # (T,) bool, False on padded steps (short="mask")
    info: VideoInfo


# ----------------------------------------------------------------------------- frames

def resize_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) -> (size, size, 3): shorter side to `size`, centre crop; channel order kept.

    The central square is cut first (same pixels as resizing first, less work), halved with
    `cv2.pyrDown` while it is at least twice `size`, then resized with INTER_LINEAR.
    """
    h, w = frame.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    square = frame[y0:y0 + side, x0:x0 + side]
    while square.shape[0] >= 2 * size:
        square = cv2.pyrDown(square)
    if square.shape[0] != size:
        square = cv2.resize(square, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(square)


def _rgb_transform(size: int | None):
    def transform(bgr: np.ndarray) -> np.ndarray:
        small = bgr if size is None else resize_crop(bgr, size)
        return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    return transform


def iter_frames(path: str | Path, *, size: int | None = None) -> Iterator[np.ndarray]:
    """Every frame of a full sequential decode, in order: (H, W, 3) uint8 RGB, or (size, size, 3)."""
    transform = _rgb_transform(size)
    with decode.decoder_errors(path):
        cap = decode.open_capture(path)
    try:
        while True:
            with decode.decoder_errors(path):
                ok, frame = cap.read()
            if not ok:
                break
            yield transform(frame)
    finally:
        cap.release()


# ----------------------------------------------------------------------------- sampling

def _segment_indices(num_frames: int, offsets: np.ndarray | None, count: int) -> np.ndarray:
    """Index in each of `count` equal segments of [0, num_frames): at `offsets` (in [0, 1)) or the centre."""
    i = np.arange(count, dtype=np.int64)
    if offsets is None:
        return (2 * i + 1) * num_frames // (2 * count)   # exact integer arithmetic for the centres
    idx = np.floor((i + offsets) * num_frames / count).astype(np.int64)
    return np.minimum(idx, num_frames - 1)


def sample_indices(num_frames: int, *, count: int, mode: Literal["uniform", "random"] = "uniform",
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """(count,) sorted frame numbers, one per equal segment (TSN): the segment centre ("uniform") or a
    random position in it ("random"). With num_frames < count some indices repeat."""
    if num_frames < 1 or count < 1:
        raise ValueError(f"need num_frames >= 1 and count >= 1, got {num_frames} and {count}")
    return _segment_indices(num_frames, _offsets(mode, count, rng), count)


def _offsets(mode: str, count: int, rng: np.random.Generator | None) -> np.ndarray | None:
    if mode == "uniform":
        return None
    if mode == "random":
        return (rng if rng is not None else np.random.default_rng()).random(count)
    raise ValueError(f"unknown sampling mode {mode!r}; choose from random, uniform")


def _plan(num_frames: int, offsets: np.ndarray | None, count: int,
          short: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices (count,), mask (count,)) for a video of num_frames frames; -1 marks padded steps."""
    if num_frames >= count or short == "repeat":
        return _segment_indices(num_frames, offsets, count), np.ones(count, bool)
    indices = np.full(count, -1, np.int64)
    indices[:num_frames] = np.arange(num_frames)
    return indices, np.arange(count) < num_frames


# ----------------------------------------------------------------------------- probing

def _info(path: Path, index: decode.PacketIndex, *, width: int, height: int, rotation: int,
          num_frames: int, exact: bool) -> VideoInfo:
    fps = index.fps if index.fps > 0 else 0.0
    if num_frames and len(index.pts_ms):
        last = index.pts_ms[min(num_frames, len(index.pts_ms)) - 1] - index.pts_ms[0]
        duration = last / 1000.0 + (1.0 / fps if fps else 0.0)
    else:
        duration = num_frames / fps if fps else 0.0
    return VideoInfo(str(path), index.codec, fps, width, height, rotation, round(float(duration), 6),
                     num_frames, exact)


def probe(path: str | Path, *, count_frames: bool = False) -> VideoInfo:
    """Codec, rate, size (after rotation), duration and frame count. Decodes the first frame (a file
    that cannot is unusable); with count_frames=True decodes all, so num_frames is exact."""
    path = Path(path)
    with decode.decoder_errors(path):
        index = decode.index_packets(path)
        cap = decode.open_capture(path)
        try:
            ok, first = cap.read()
            if not ok:
                raise VideoReadError(path, f"cannot decode any frame (codec {index.codec})")
            rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META)) % 360   # clockwise, applied by OpenCV
            num_frames, exact = index.count, False
            if count_frames or not index.count:
                num_frames = 1
                while cap.grab():
                    num_frames += 1
                exact = True
        finally:
            cap.release()
    return _info(path, index, width=first.shape[1], height=first.shape[0], rotation=rotation,
                 num_frames=num_frames, exact=exact)


# ----------------------------------------------------------------------------- reading

def read_frames(path: str | Path, *, count: int = 16, size: int = 112,
                mode: Literal["uniform", "random"] = "uniform", rng: np.random.Generator | None = None,
                short: Literal["repeat", "mask"] = "repeat") -> Clip:
    """The frames at sample_indices(true frame count, ...), exactly as a full sequential decode yields
    them, resized to (size, size) RGB: Clip.frames (count, size, size, 3) uint8."""
    if short not in ("repeat", "mask"):
        raise ValueError(f"unknown short-video policy {short!r}; choose from mask, repeat")
    if count < 1 or size < 1:
        raise ValueError(f"need count >= 1 and size >= 1, got {count} and {size}")
    path = Path(path)
    offsets = _offsets(mode, count, rng)        # drawn once: the same offsets serve any frame count
    transform = _rgb_transform(size)
    with decode.decoder_errors(path):
        index = decode.index_packets(path)
        wanted = np.zeros(0, np.int64)          # no packets seen: count by decoding, then plan
        if index.count:
            indices, mask = _plan(index.count, offsets, count, short)
            wanted = indices[mask]
        got = _fetch(path, index, wanted, transform)
        if got.count == 0:
            raise VideoReadError(path, f"cannot decode any frame (codec {index.codec})")
        if got.count != index.count:            # the packets promised another count: re-plan, re-read
            logger.warning("%s: decoded %d frames, the container has %d packets (truncated or damaged)",
                           path, got.count, index.count)
            indices, mask = _plan(got.count, offsets, count, short)
            missing = set(indices[mask].tolist()) - got.frames.keys()
            if missing:
                more = decode.read_sequential(path, missing, transform, stop_after=max(missing))
                got.frames.update(more.frames)
                got = got._replace(width=got.width or more.width, height=got.height or more.height)
    frames = np.zeros((count, size, size, 3), np.uint8)   # (T, S, S, 3); padded steps stay black
    for step, k in enumerate(indices):
        if mask[step]:
            if k not in got.frames:    # the second decode ended earlier than the first: an unstable file
                raise VideoReadError(path, f"frame {k} decoded once but not again (unstable decode)")
            frames[step] = got.frames[k]
    info = _info(path, index, width=got.width, height=got.height, rotation=got.rotation,
                 num_frames=got.count, exact=True)
    return Clip(frames, indices, mask, info)


def _fetch(path: Path, index: decode.PacketIndex, wanted: np.ndarray,
           transform: decode.Transform) -> decode.Decoded:
    """The frames at `wanted` by the cheapest exact strategy; the sequential decode when others give up."""
    got = None
    if index.jpeg_packets:
        got = decode.read_jpeg_packets(path, index, wanted, transform)
    elif index.seekable and decode.seek_cost(index, wanted) < decode.SEEK_WORTH * index.count:
        got = decode.read_seeking(path, index, wanted, transform)
    return got if got is not None else decode.read_sequential(path, set(wanted.tolist()), transform)
