"""Prediction: video files in, one `Prediction` per file out, through one path used by every caller.

    bundle = load_bundle("runs/demo/models/lstm")
    for result in classify_paths(["a.mp4", "b.mp4"], bundle):
        print(result.path, result.label if isinstance(result, Prediction) else result.error)

Decoding runs ahead of inference with a bounded number of clips in flight, so memory stays flat over
any number of files. Results come back in input order as soon as each is ready. Several files decode
in `workers` worker processes (clips.iter_clips on pool.ProcessStream, forked from the fork server):
they decode during the whole start-up, while this process imports torch and loads the model (decode
threads waited for the GIL then), and a file that kills its decoder (a segfault, the OOM killer) or is
still decoding after `timeout` seconds (a stalled mount: "timed out after N s") is reported as one
failure while the others still run. A single file decodes in a thread: no process start-up.

Cores: `workers` decoders feed `workers` inference threads, batches predicted side by side
and yielded in order. The parallelism of many files comes from these workers, so while neighbours
decode alongside, each capture gets `DECODE_THREADS // workers` FFmpeg threads (a lone file keeps all
of them), and each inference worker `inference_threads(workers)` torch threads (1 on 2 cores): on a
2-core machine one torch thread would otherwise be the critical path (docs/benchmarks/classify.md).

Exactness: the encoder runs on each clip's T frames alone (`VideoClassifier.clip_features`), and the
motion stream and the head on batches of exactly `batch_size` clips: a batch that is not full is
padded with blank clips, which skip the encoder. So a video's probabilities are bit-identical whether
it is classified alone, among other videos, or by `videoseq evaluate` (same `batch_size`); different
batch sizes may differ in the last bits (floating-point sums in another order). The default,
config.INFERENCE_BATCH_SIZE = 4, costs a single file only the motion and head passes of 3 blank
clips and saves main-process CPU on many files (docs/benchmarks/classify.md).
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from videoseq.config import INFERENCE_BATCH_SIZE, JOB_TIMEOUT
from videoseq.errors import VideoseqError
from videoseq.infer.clips import Sampling, iter_clips

if TYPE_CHECKING:
    from videoseq.models.bundle import Bundle
    from videoseq.data.cache import FrameCache
    from videoseq.io.video import Clip

log = logging.getLogger(__name__)

THUMB = 64                     # side of the thumbnails kept for timelines
PREFETCH_BYTES = 128 << 20     # decoded clips waiting for inference: at most this much memory


class Prediction(NamedTuple):
    """The classification of one video by one bundle."""
    path: str
    label: str                     # the most probable class
    score: float                   # its probability
    probs: dict[str, float]        # class -> probability, in the bundle's class order
    head: str
    frames: int                    # T: frames the model saw (valid steps)
    seconds: float                 # decode + this video's share of inference
    steps: np.ndarray              # (T, C) class probabilities after each step (head.forward_steps)
    indices: np.ndarray            # (T,) frame numbers that were sampled
    thumbnails: np.ndarray | None  # (T, THUMB, THUMB, 3) uint8 RGB when asked for (timelines)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable (class, probability) pairs, most probable first."""
        return sorted(self.probs.items(), key=lambda kv: -kv[1])[:max(1, k)]

    def to_json(self) -> dict:
        """The JSON record `classify --json` prints for it."""
        """The `classify --json` line (docs/design.md)."""
        return {"path": self.path, "label": self.label, "score": self.score, "probs": self.probs,
                "head": self.head, "frames": self.frames, "seconds": round(self.seconds, 4)}


class FailedInput(NamedTuple):
    """A video that could not be classified, and why."""
    path: str
    error: str                     # one line: the reason, without the path

    def to_json(self) -> dict:
        """The JSON record `classify --json` prints for it."""
        return {"path": self.path, "error": self.error}


Result = Prediction | FailedInput

UNKNOWN = "unknown"            # the label of an abstention (`abstain`); never one of a model's classes


def abstain(result: Result, min_score: float) -> Result:
    """The result with label `UNKNOWN` when it is a `Prediction` whose score (its top probability) is
    below `min_score`; otherwise the result unchanged (a `FailedInput` always).

    Only the label changes: `score`, `probs`, `steps` and `top(k)` still give the model's own numbers,
    so an abstention shows what the model leaned towards. "unknown" is not a class: no model outputs
    it, it only says "not sure enough" (a model with a class of that name cannot be told apart from
    an abstention). `min_score` in [0, 1]; 0 never abstains (`classify --min-score`, `Model.predict`).

        abstain(pred, 0.8).label     # pred.label when pred.score >= 0.8, else "unknown"
    """
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score must be between 0 and 1, got {min_score}")
    if not isinstance(result, FailedInput) and result.score < min_score:   # a Prediction or a Segment
        return result._replace(label=UNKNOWN)
    return result


def record_of(result: Result) -> dict:
    """The JSON record of a result: `classify --json`'s line, `{"path", "error"}` for a failure."""
    return result.to_json()


def classify_paths(paths: Iterable[str | Path], bundle: "Bundle", *, batch_size: int = INFERENCE_BATCH_SIZE,
                   workers: int = 2, cache: "FrameCache | None" = None, thumbnails: bool = False,
                   prefetch: int | None = None, timeout: float | None = JOB_TIMEOUT) -> Iterator[Result]:
    """One result per path, in order: a `Prediction`, or a `FailedInput` saying why it failed (a file
    still decoding after `timeout` seconds: "timed out after N s"; None or 0: no limit).

    `prefetch`: decoded clips allowed to wait for inference (default: `prefetch_depth`); at most
    `workers` batches more are being predicted."""
    for results in classify_paths_multi(paths, [bundle], batch_size=batch_size, workers=workers,
                                        cache=cache, thumbnails=thumbnails, prefetch=prefetch,
                                        timeout=timeout):
        yield results[0]


def classify_paths_multi(paths: Iterable[str | Path], bundles: "Sequence[Bundle] | Future", *,
                         sampling: Sampling | None = None, batch_size: int = INFERENCE_BATCH_SIZE,
                         workers: int = 2,
                         cache: "FrameCache | None" = None, thumbnails: bool = False,
                         prefetch: int | None = None, timeout: float | None = JOB_TIMEOUT
                         ) -> Iterator[list[Result]]:
    """Like `classify_paths` for several bundles at once (`classify --compare`): each video is decoded
    once and run through every bundle; yields one list (in bundle order) per path.

    `bundles` may be a Future of the list (`load_bundles_async`): the first videos then decode while
    the models load; `sampling` must be given with it. Loading errors are raised before any result."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(bundles, Future):
        if sampling is None:
            raise ValueError("classify_paths_multi: give `sampling` with a Future of bundles")
        loaded: list | None = None
    else:
        loaded = _check_same_sampling(list(bundles))
        sampling = sampling or _sampling_of(loaded[0])

    def ready() -> list["Bundle"]:
        nonlocal loaded
        if loaded is None:
            loaded = _check_same_sampling(list(bundles.result()))
            if _sampling_of(loaded[0]) != sampling:
                raise VideoseqError(f"{loaded[0].path}: samples {_sampling_of(loaded[0])}, expected {sampling}")
        return loaded

    def inference_thread_counts() -> tuple[int, int]:
        """(threads for each inference worker, the caller's count), read once in the calling thread."""
        import torch

        caller = torch.get_num_threads()
        return min(caller, inference_threads(workers)), caller   # never more than the caller allows

    depth = prefetch or prefetch_depth(sampling, workers=workers, batch_size=batch_size)
    clips = iter_clips(paths, sampling, workers=workers, cache=cache, prefetch=depth, timeout=timeout)
    threads: tuple[int, int] | None = None
    batch: list[tuple[str, "Clip", float]] = []
    pending: list[tuple[int, str, str]] = []   # failures waiting for the batch before them
    out: deque[Future | list[list[Result]]] = deque()   # in input order: batches in inference, failures
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="infer") as infer:
        for path, clip, seconds in clips:
            if isinstance(clip, str):
                if not batch:
                    out.append([[FailedInput(path, clip)] * len(ready())])
                else:
                    pending.append((len(batch), path, clip))
            else:
                batch.append((path, clip, seconds))
                if len(batch) == batch_size:
                    threads = threads or inference_thread_counts()
                    out.append(infer.submit(_predict_batch, batch, pending, ready(), batch_size,
                                            thumbnails, threads))
                    batch, pending = [], []
            while out and (len(out) > workers or not isinstance(out[0], Future) or out[0].done()):
                yield from _take(out.popleft())
        if batch:
            threads = threads or inference_thread_counts()
            out.append(infer.submit(_predict_batch, batch, pending, ready(), batch_size, thumbnails, threads))
        while out:
            yield from _take(out.popleft())
    ready()  # no inputs at all: still report a model that cannot load


def prefetch_depth(sampling: Sampling, *, workers: int, batch_size: int) -> int:
    """How many decoded clips may wait for inference: as many as fit in PREFETCH_BYTES (so decoding
    keeps going while the model loads or a batch runs), at least 2 batches, at most 256."""
    clip_bytes = sampling.frames * sampling.size * sampling.size * 3          # (T, S, S, 3) uint8
    return int(min(256, max(4 * workers, 2 * batch_size, PREFETCH_BYTES // clip_bytes)))


def load_bundles_async(paths: Sequence[str | Path], *, device: str = "cpu") -> tuple[Sampling, Future]:
    """Check the bundles' config.json now (cheap, no torch) and load the models in a background thread.

    Returns their common sampling and a Future of the loaded bundles, for `classify_paths_multi`."""
    from videoseq.models.bundle import load_bundle, read_bundle_meta

    samplings = {Sampling(int(m["sampling"]["frames"]), int(m["sampling"]["size"]), str(m["sampling"]["short"]))
                 for m in (read_bundle_meta(p) for p in paths)}
    if len(samplings) != 1:
        raise VideoseqError("the models sample frames differently (frames/size/short); "
                            "classify with one --head at a time")
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-model")
    future = loader.submit(lambda: [load_bundle(p, device=device) for p in paths])
    loader.shutdown(wait=False)
    return samplings.pop(), future


def inference_threads(workers: int) -> int:
    """torch threads of each of the `workers` inference workers: each worker shares its pipeline's
    cores (the machine's, split `workers` ways) with one decode worker; at least 1.

    It depends on the machine and `workers` only, never on how many files are given: the thread count
    can change a result's last bits, and a video must give the same result alone or among others."""
    workers = max(1, workers)
    return max(1, len(os.sched_getaffinity(0)) // workers - 1)


def predict_clips(bundle: "Bundle", clips: Sequence["Clip"], *, batch_size: int | None = None):
    """Run `bundle.model` on clips: (probs (N, C), steps (N, T, C)) as float64 numpy arrays.

    Clips are run `batch_size` at a time (default: all), each forward padded to exactly that many."""
    import torch

    from videoseq.models.transforms import frames_to_tensor

    size = batch_size or len(clips)
    model = bundle.model
    probs_out, steps_out = [], []
    for start in range(0, len(clips), size):
        chunk = clips[start:start + size]
        frames = np.stack([c.frames for c in chunk])                 # (n, T, S, S, 3) uint8
        mask = np.stack([c.mask for c in chunk]).astype(bool)        # (n, T)
        if len(chunk) < size:  # pad to a fixed shape: results never depend on the neighbours
            pad = size - len(chunk)
            frames = np.concatenate([frames, np.zeros((pad, *frames.shape[1:]), np.uint8)])
            mask = np.concatenate([mask, np.ones((pad, mask.shape[1]), bool)])
        x = frames_to_tensor(torch.from_numpy(frames), size=bundle.input_size, mean=bundle.mean,
                             std=bundle.std).to(bundle.device)       # (B, T, 3, S', S')
        m = torch.from_numpy(mask).to(bundle.device)                 # (B, T)
        with torch.inference_mode():
            feats = model.clip_features(x, len(chunk))                 # (B, T, D + M)
            logits, steps = model.head.forward_and_steps(feats, m)     # (B, C), (B, T, C) log-probs
            probs = torch.softmax(logits.double(), dim=1)
        probs_out.append(probs[:len(chunk)].cpu().numpy())
        steps_out.append(steps[:len(chunk)].double().exp().cpu().numpy())
    return np.concatenate(probs_out), np.concatenate(steps_out)


# --- internals -----------------------------------------------------------------------------------

def _sampling_of(bundle: "Bundle") -> Sampling:
    return Sampling(bundle.frames, bundle.size, bundle.short)


def _check_same_sampling(bundles: list["Bundle"]) -> list["Bundle"]:
    if not bundles:
        raise ValueError("classify_paths_multi needs at least one bundle")
    if len({_sampling_of(b) for b in bundles}) != 1:
        raise VideoseqError("the models sample frames differently (frames/size/short); "
                            "classify with one --head at a time")
    return bundles


def _take(item: "Future | list[list[Result]]") -> list[list[Result]]:
    return item.result() if isinstance(item, Future) else item


def _predict_batch(batch: list[tuple[str, "Clip", float]], pending: list[tuple[int, str, str]],
                   bundles: Sequence["Bundle"], batch_size: int, thumbnails: bool,
                   threads: tuple[int, int]) -> list[list[Result]]:
    """Predict one batch with every bundle (in an inference worker thread), then its results and the
    failures among them, in input order. `threads`: (torch threads for this batch, the caller's)."""
    import torch

    clips = [clip for _, clip, _ in batch]
    per_bundle = []
    torch.set_num_threads(threads[0])  # this thread's OpenMP team for the batch
    try:
        for bundle in bundles:
            started = time.perf_counter()
            probs, steps = predict_clips(bundle, clips, batch_size=batch_size)
            per_bundle.append((probs, steps, (time.perf_counter() - started) / len(clips)))
    finally:
        torch.set_num_threads(threads[1])  # torch's count for threads started later: the caller's again
    failures = {i: [] for i in range(len(batch) + 1)}
    for position, path, reason in pending:
        failures[position].append((path, reason))
    results: list[list[Result]] = []
    for i, (path, clip, decode_s) in enumerate(batch):
        results += [[FailedInput(failed_path, reason)] * len(bundles) for failed_path, reason in failures[i]]
        thumbs = thumbnails_of(clip.frames) if thumbnails else None
        results.append([prediction_of(path, bundle.classes, bundle.head, probs[i], steps[i], clip,
                                      decode_s + infer_s, thumbs)
                        for bundle, (probs, steps, infer_s) in zip(bundles, per_bundle)])
    results += [[FailedInput(failed_path, reason)] * len(bundles) for failed_path, reason in failures[len(batch)]]
    return results


def prediction_of(path: str, classes: list[str], head: str, probs: np.ndarray, steps: np.ndarray,
                  clip: "Clip", seconds: float, thumbs: np.ndarray | None) -> Prediction:
    """The `Prediction` of one clip from a model's probabilities (C,) and per-step beliefs (T, C); every
    runtime (PyTorch files or frames, ONNX Runtime) builds its results here."""
    best = int(np.argmax(probs))
    return Prediction(path=path, label=classes[best], score=float(probs[best]),
                      probs={c: float(p) for c, p in zip(classes, probs)}, head=head,
                      frames=int(np.asarray(clip.mask).sum()), seconds=float(seconds), steps=steps,
                      indices=np.asarray(clip.indices), thumbnails=thumbs)


def thumbnails_of(frames: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) -> (T, THUMB, THUMB, 3) uint8: the frames a timeline draws."""
    import cv2

    return np.stack([cv2.resize(f, (THUMB, THUMB), interpolation=cv2.INTER_AREA) for f in frames])
