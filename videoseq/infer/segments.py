"""Long videos as overlapping segments: one prediction per window of `window` seconds, every `stride`.

    for seg in classify_segments("match.mp4", bundle, window=4.0, stride=2.0):
        print(f"{seg.start:7.2f}-{seg.end:7.2f} {seg.label} {seg.score:.2f}")
    for seg in iter_segments(camera_frames(), 30.0, bundle, window=4.0, stride=2.0):
        ...   # frames from any iterator: (H, W, 3) uint8 RGB, one at a time

Windows: window k covers the frames [a_k, b_k) with a_k = round(k * stride * fps) and
b_k = round((k * stride + window) * fps) (halves round up). Each window is sampled like a file made of
exactly its frames (`io.video.read_frames`, `infer.frames.clip_from_frames`): the bundle's T segment
centres of its n = b_k - a_k frames (with n < T, repeated frames or masked steps as `bundle.short`
says), each resized and centre-cropped to S by `io.video.resize_crop`, and the clip goes through
`predict.predict_clips` padded to `batch_size` clips on `inference_threads(workers)` torch threads.
So a segment's probabilities are bit-identical to `predict_frames(bundle, frames[a_k:b_k])` (and to
classifying a file that decodes to those frames) with the same `batch_size` and `workers`.

The end of the video: windows that end past the last frame N are cut at N. The first such window
(the one that reaches the last frame; later ones are inside it) is kept when it covers frames no full
window covered and has at least min(T, one second of) frames, or when the video is shorter than one
window (then it is the only segment). Its sample positions depend on N, known only when the stream
ends, so the frames of the oldest unfinished window are held, resized: memory is bounded by
`held_frames_bound` (about window x fps + batch_size x T frames of S x S x 3), whatever the length.

A file is decoded once, sequentially (`io.video.iter_frames` resizing as it decodes: the same pixels
as `resize_crop` on the RGB frame, since resizing acts on each channel alone).
"""
from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple

import numpy as np

from videoseq.config import INFERENCE_BATCH_SIZE
from videoseq.errors import VideoReadError
from videoseq.infer.clips import Sampling
from videoseq.infer.frames import sample_positions
from videoseq.infer.predict import inference_threads, predict_clips
from videoseq.io.video import Clip, VideoInfo, resize_crop
from videoseq.runtime import torch_threads

if TYPE_CHECKING:
    from videoseq.models.bundle import Bundle


class Segment(NamedTuple):
    """The classification of one window of a long video."""
    index: int                     # k: windows in order, from 0
    start: float                   # seconds: first frame / fps
    end: float                     # seconds: (last frame + 1) / fps
    label: str                     # the most probable class
    score: float                   # its probability
    probs: dict[str, float]        # class -> probability, in the bundle's class order
    head: str
    first: int                     # a_k: the window's first frame number
    frames: int                    # n = b_k - a_k: frames in the window (fewer for a cut last window)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable (class, probability) pairs, most probable first."""
        return sorted(self.probs.items(), key=lambda kv: -kv[1])[:max(1, k)]

    def to_json(self) -> dict:
        """The JSON record of the segment: `classify --window --json` adds the path."""
        return {"segment": self.index, "start": round(self.start, 6), "end": round(self.end, 6),
                "label": self.label, "score": self.score, "probs": self.probs, "head": self.head}


def window_bounds(k: int, fps: float, window: float, stride: float) -> tuple[int, int]:
    """(a_k, b_k): the frame numbers [a_k, b_k) of window k (halves round up)."""
    return _frame_at(k * stride, fps), _frame_at(k * stride + window, fps)


def check_window(fps: float, window: float, stride: float) -> None:
    """`ValueError` unless fps, window and stride are positive and finite and a window holds >= 1 frame."""
    for name, value in (("fps", fps), ("window", window), ("stride", stride)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if window * fps < 1:
        raise ValueError(f"window {window:g} s holds no frame at {fps:g} fps; make it at least {1 / fps:g} s")


def held_frames_bound(fps: float, window: float, *, frames: int, batch_size: int = INFERENCE_BATCH_SIZE) -> int:
    """The most (S, S, 3) frames `iter_segments` holds at once: one window's frames (plus rounding)
    and the clips waiting for a full batch. It does not depend on the video's length."""
    return math.ceil(window * fps) + 2 + batch_size * frames


def iter_segments(frames: Iterable[Any], fps: float, bundle: "Bundle", *, window: float, stride: float,
                  batch_size: int = INFERENCE_BATCH_SIZE, workers: int = 2,
                  stats: dict | None = None) -> Iterator[Segment]:
    """One `Segment` per window of a stream of frames, (H, W, 3) uint8 RGB arrays (or tensors) at `fps`,
    in order and as soon as each batch of `batch_size` windows is complete; the stream is read once.

    `stats`, when given, gets "held_peak" (the most frames held at once; <= `held_frames_bound`) and
    "frames" (frames read). `ValueError` for bad window, stride or fps (at the call), or a frame that is
    not RGB uint8 (when it is read).

        segs = list(iter_segments(iter_frames("a.mp4"), 25.0, bundle, window=4.0, stride=2.0))
    """
    check_window(fps, window, stride)
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    return _segments(iter(frames), fps, bundle, window, stride, batch_size, workers, stats)


def _segments(frames: Iterator[Any], fps: float, bundle: "Bundle", window: float, stride: float,
              batch_size: int, workers: int, stats: dict | None) -> Iterator[Segment]:
    """`iter_segments` after its arguments are checked: the generator."""
    import torch

    sampling = Sampling(bundle.frames, bundle.size, bundle.short)
    stats = stats if stats is not None else {}
    stats.update(held_peak=0, frames=0)
    held: deque[np.ndarray] = deque()   # resized (S, S, 3) frames [base, base + len(held))
    base = 0                            # frame number of held[0]
    k = 0                               # the oldest window not yet complete
    a, b = window_bounds(0, fps, window, stride)
    last_end = 0                        # b of the last full window
    queue: list[tuple[int, int, int, Clip]] = []   # (k, a, n, clip) complete, waiting for a batch
    threads = min(torch.get_num_threads(), inference_threads(workers))
    n_read = 0
    for i, frame in enumerate(frames):
        n_read = i + 1
        if i >= a:                      # in some window: keep it, resized
            if not held:
                base = i
            held.append(_resized(_rgb(frame, i), sampling.size))       # (S, S, 3) uint8
        while b <= n_read:              # window k is complete
            queue.append((k, a, b - a, _clip(held, base, a, b - a, sampling)))
            stats["held_peak"] = max(stats["held_peak"], len(held) + len(queue) * sampling.frames)
            last_end = b
            k += 1
            a, b = window_bounds(k, fps, window, stride)
            while held and base < a:   # frames before the next window are needed no more
                held.popleft()
                base += 1
        if len(queue) >= batch_size:    # several at once when windows are less than a frame apart
            yield from _predict(bundle, queue, fps, batch_size, threads)
            queue = []
    stats["frames"] = n_read
    if n_read > a and (last_end == 0 or (n_read > last_end and n_read - a >= _min_tail(fps, sampling))):
        queue.append((k, a, n_read - a, _clip(held, base, a, n_read - a, sampling)))
    stats["held_peak"] = max(stats["held_peak"], len(held) + len(queue) * sampling.frames)
    if queue:
        yield from _predict(bundle, queue, fps, batch_size, threads)


def classify_segments(path: str | Path, bundle: "Bundle", *, window: float, stride: float,
                      batch_size: int = INFERENCE_BATCH_SIZE, workers: int = 2,
                      stats: dict | None = None) -> Iterator[Segment]:
    """The segments of a video file: one sequential decode at the file's frame rate (`io.video.probe`),
    frames resized as they are decoded; the same segments as `iter_segments` on `iter_frames(path)`.
    `VideoReadError` (at the call) when the file cannot be probed or has no frame rate, or (while
    iterating) when decoding fails midway; `ValueError` for a bad window or stride.

        for seg in classify_segments("a.mp4", load_bundle("runs/demo/models/lstm"), window=4, stride=2):
            print(seg.start, seg.label)
    """
    from videoseq.io.video import iter_frames, probe

    info: VideoInfo = probe(path)
    if not info.fps > 0:
        raise VideoReadError(path, "the container gives no frame rate; segments need one")
    return iter_segments(iter_frames(path, size=bundle.size), info.fps, bundle, window=window,
                             stride=stride, batch_size=batch_size, workers=workers, stats=stats)


# --- internals -----------------------------------------------------------------------------------

def _frame_at(seconds: float, fps: float) -> int:
    """The frame number at `seconds`: round half up, tolerant of float error (2.0 * 25 is 50, not 49)."""
    return int(math.floor(seconds * fps + 0.5 + 1e-9))


def _min_tail(fps: float, sampling: Sampling) -> int:
    """Frames a cut last window needs to be kept: min(T, one second), at least 1."""
    return max(1, min(sampling.frames, round(fps)))


def _rgb(frame: Any, i: int) -> np.ndarray:
    """`frame` as an (H, W, 3) uint8 numpy array; `ValueError` naming frame `i` otherwise."""
    from videoseq.infer.frames import as_frames

    if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 \
            and min(frame.shape[:2]) >= 1:
        return np.ascontiguousarray(frame)
    try:
        return np.ascontiguousarray(as_frames(frame[None])[0])
    except (ValueError, TypeError, IndexError) as e:
        raise ValueError(f"frame {i}: expected an (H, W, 3) uint8 RGB array or tensor ({e})") from None


def _resized(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) -> (size, size, 3) by `resize_crop`, never a view of `frame` (a camera may reuse it)."""
    small = resize_crop(frame, size)
    return small.copy() if np.shares_memory(small, frame) else small


def _clip(held: deque, base: int, a: int, n: int, sampling: Sampling) -> Clip:
    """The clip of window [a, a + n) from the held frames, sampled as `clip_from_frames` samples n frames."""
    count, size = sampling.frames, sampling.size
    indices, mask = sample_positions(n, sampling)                     # (T,) positions in the window, (T,)
    out = np.zeros((count, size, size, 3), np.uint8)                  # (T, S, S, 3); padded steps stay black
    for step, j in enumerate(indices):
        if mask[step]:
            out[step] = held[a + int(j) - base]
    frame_numbers = np.where(mask, indices + a, -1).astype(np.int64)  # (T,) numbers in the whole video
    info = VideoInfo(path="", codec="", fps=0.0, width=size, height=size, rotation=0, duration=0.0,
                     num_frames=int(n), frames_exact=True)
    return Clip(out, frame_numbers, mask, info)


def _predict(bundle: "Bundle", queue: list, fps: float, batch_size: int, threads: int) -> Iterator[Segment]:
    """The segments of the queued windows, predicted in batches of `batch_size` (padded)."""
    with torch_threads(threads):
        probs, _ = predict_clips(bundle, [clip for *_, clip in queue], batch_size=batch_size)  # (n, C)
    for (k, a, n, _), p in zip(queue, probs):
        best = int(np.argmax(p))
        yield Segment(index=k, start=a / fps, end=(a + n) / fps, label=bundle.classes[best],
                      score=float(p[best]), probs={c: float(x) for c, x in zip(bundle.classes, p)},
                      head=bundle.head, first=a, frames=n)
