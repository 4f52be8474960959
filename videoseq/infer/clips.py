"""Decoding ahead of inference: the clips of many video files, in order, a bounded distance ahead.

    for path, clip, seconds in iter_clips(paths, Sampling(16, 112, "repeat"), workers=2, timeout=600):
        ...   # clip: a video.Clip, or the one-line reason the file cannot be used

Several files decode in `workers` worker processes (pool.ProcessStream, forked from the fork server):
a file that kills its decoder (a segfault, the OOM killer) is reported as one failure, and one still
decoding after `timeout` seconds (a stalled mount, a hung decoder) is stopped with its worker and
reported as "timed out after N s", while the others still run. A single file decodes in a thread (no
process start-up); a thread cannot be stopped, so past the timeout it is left behind (a daemon thread:
it never holds up the exit) and the file is reported the same way.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple

from videoseq.errors import OutputError, VideoseqError
from videoseq.io.pool import JobCrash, JobError, JobTimeout, ProcessStream

if TYPE_CHECKING:
    from videoseq.data.cache import FrameCache
    from videoseq.io.video import Clip

log = logging.getLogger(__name__)


class Sampling(NamedTuple):
    """How a bundle samples a video: T frames, side S, the short-video policy."""
    frames: int                    # T
    size: int                      # S
    short: str                     # "repeat" | "mask"


class DecodedClip(NamedTuple):
    """A clip decoded for inference, with how long it took and where (for the decode/infer overlap)."""
    clip: "Clip"
    seconds: float
    threads: int                   # FFmpeg threads of its capture
    pid: int                       # the process that decoded it


def iter_clips(paths: Iterable[str | Path], sampling: Sampling, *, workers: int = 2,
               cache: "FrameCache | None" = None, prefetch: int = 8, timeout: float | None = None
               ) -> Iterator[tuple[str, "Clip | str", float]]:
    """(path, clip or error reason, decode seconds) per path, in order, decoding ahead: in `workers`
    processes when there are several paths, else in a thread. At most `prefetch` clips in flight. A
    file still decoding after `timeout` seconds (None or 0: no limit) gives "timed out after N s". A
    frame cache that cannot be written (`OutputError`: a full disk) is raised, not blamed on a file."""
    inflight: deque[tuple[str, Future]] = deque()
    paths = iter(paths)
    first = list(itertools.islice(paths, 2))
    shared = len(first) > 1 and workers > 1      # captures decode side by side: split FFmpeg's threads
    pool: ProcessStream | _DaemonThread = ProcessStream(workers=workers, timeout=timeout) \
        if len(first) > 1 else _DaemonThread()
    wait_s = (timeout or None) if isinstance(pool, _DaemonThread) else None   # processes time themselves
    with pool:
        try:
            for path in itertools.chain(first, paths):
                path = str(path)
                inflight.append((path, pool.submit(_decode_job, path, sampling, cache,
                                                   workers if shared else 1)))
                if len(inflight) >= prefetch:
                    yield _result(*inflight.popleft(), wait_s)
            while inflight:
                yield _result(*inflight.popleft(), wait_s)
        finally:  # a consumer that stops early must not leave decodes queued
            for _, future in inflight:
                future.cancel()


class _DaemonThread:
    """`submit(fn, *args)` -> Future, run in a new daemon thread: a job that hangs can be given up on
    (the caller stops waiting) without holding up the interpreter's exit."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Start `fn(*args)` in its own daemon thread; its Future has the value or the exception."""
        future: Future = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001  handed to the waiting caller
                future.set_exception(e)

        threading.Thread(target=run, name="decode", daemon=True).start()
        return future

    def __enter__(self) -> "_DaemonThread":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _decode_job(path: str, sampling: Sampling, cache: "FrameCache | None",
                side_by_side: int) -> DecodedClip | str:
    """One clip, decoded in a worker (process or thread) while `side_by_side` - 1 others decode too;
    or the one-line reason it cannot be (a string survives pickling, an exception may not). An
    `OutputError` (the frame cache cannot be written) is raised: it is no fault of the file."""
    try:
        return _decode(path, sampling, cache, side_by_side)
    except OutputError:
        raise
    except VideoseqError as e:
        return _strip_path(getattr(e, "reason", None) or str(e), path)
    except Exception as e:  # noqa: BLE001  one odd file must not end a run over thousands
        log.debug("unexpected error decoding %s", path, exc_info=True)
        return f"cannot decode ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def _decode(path: str, sampling: Sampling, cache: "FrameCache | None", side_by_side: int) -> DecodedClip:
    from videoseq.io import decode

    started = time.perf_counter()
    threads = max(1, decode.DECODE_THREADS // side_by_side)
    decode.set_capture_threads(threads)
    if cache is not None:
        from videoseq.config import SamplingConfig
        config = SamplingConfig(frames=sampling.frames, size=sampling.size, short=sampling.short)
        clip = cache.load_or_extract(path, config, size=sampling.size)
    else:
        from videoseq.io.video import read_frames
        clip = read_frames(path, count=sampling.frames, size=sampling.size, mode="uniform",
                           short=sampling.short)
    return DecodedClip(clip, time.perf_counter() - started, threads, os.getpid())


def _result(path: str, future: Future, wait_s: float | None) -> tuple[str, "Clip | str", float]:
    try:
        done = future.result(timeout=wait_s)  # WorkersUnavailable (processes cannot start) propagates
    except FutureTimeout:
        future.cancel()
        log.warning("%s: still decoding after %g s; left behind", path, wait_s)
        return path, f"timed out after {wait_s:g} s", 0.0
    if isinstance(done, JobTimeout):
        return path, done.reason, 0.0
    if isinstance(done, JobCrash):
        return path, f"the decoder crashed ({done.reason})", 0.0
    if isinstance(done, JobError):
        if isinstance(done.error, OutputError):
            raise done.error
        return path, f"cannot decode ({done.reason})", 0.0
    if isinstance(done, str):
        return path, done, 0.0
    where = "this process" if done.pid == os.getpid() else f"worker process {done.pid}"
    log.debug("decoded %s in %s with %d FFmpeg thread(s)", path, where, done.threads)
    return path, done.clip, done.seconds


def _strip_path(reason: str, path: str) -> str:
    """VideoReadError renders as "path: reason"; the caller prints the path itself."""
    for prefix in (f"{path}: ", f"{Path(path)}: "):
        if reason.startswith(prefix):
            return reason[len(prefix):]
    return reason
