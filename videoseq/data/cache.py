"""The frame cache: sampled clips stored per video, keyed by file content and sampling parameters.

    cache = FrameCache(extraction_plan(cfg).frames_dir)
    clip = cache.load_or_extract("a/clip.mp4", cfg.sampling, size=112)         # view 0: segment centres
    report = extract_dataset(index, cache, cfg.sampling, size=112, views=cfg.sampling.train_views)

An entry is `<root>/<digest[:2]>/<digest>_t<T>_s<S>_<short>_v<view>.npz` with the arrays `frames`
(T, S, S, 3) uint8, `indices` (T,) int64, `mask` (T,) bool and `info` (the VideoInfo as JSON). The
digest is blake2b of the file's bytes, so a renamed or copied video hits and an edited one misses.
Entries are written atomically (temp file, fsync, rename); an entry that does not load is a miss and is
rewritten. A full disk (or another reason an entry cannot be written) is an `OutputError` that stops
extraction: it says nothing about the video, which is not marked failed, and a rerun once there is space
extracts what is missing. A video still being extracted after the timeout (`runtime.job_timeout`) is
stopped with its worker and reported as failed, "unreadable: timed out after N s". View 0 samples segment centres; view k > 0 samples a random position per segment with an rng
seeded by (digest, k), so every view is reproducible.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from videoseq.io.atomic import atomic_save_npz
from videoseq.config import JOB_TIMEOUT, SamplingConfig
from videoseq.data.dataset import length_status
from videoseq.data.fingerprints import fingerprint
from videoseq.errors import OutputError, VideoReadError
from videoseq.io.pool import JobCrash, JobTimeout, run_jobs

log = logging.getLogger(__name__)

CACHE_FORMAT = 1                              # bump when the entry layout changes: old entries become misses


def file_digest(path: str | Path) -> str:
    """blake2b (128 bit, hex) of the file's bytes, hashed once and remembered across processes in the
    fingerprint store (`data.fingerprints`), keyed by (path, size, mtime_ns, inode, ctime_ns). A path
    that is not a regular file (a FIFO, a device, a folder) is a `VideoReadError` "not a file", never
    opened (opening a FIFO would wait for a writer)."""
    return fingerprint(path)


class FrameCache:
    """Clips on disk under `root` (e.g. `<cache_dir>/frames`); safe to share between processes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FrameCache({str(self.root)!r})"

    def entry_path(self, path: str | Path, sampling: SamplingConfig, *, size: int, view: int = 0) -> Path:
        """Where the clip of `path` for these sampling parameters and view is (or would be) stored."""
        digest = file_digest(path)
        return self._entry(digest, sampling, size, view)

    def load_or_extract(self, path: str | Path, sampling: SamplingConfig, *, size: int, view: int = 0):
        """The clip of `path` for (sampling.frames, size, sampling.short, view): from the cache, or decoded
        and stored. Raises `VideoReadError` when the video cannot be decoded. Returns a `video.Clip`."""
        clip, _ = self._fetch(path, sampling, size=size, view=view)
        return clip

    def ensure(self, path: str | Path, sampling: SamplingConfig, *, size: int, view: int = 0,
               min_frames: int = 1) -> bool:
        """Make sure the entry exists; True when it was already cached, False when it was extracted now.
        Raises `VideoReadError` "too short (n < min_frames)" when the decoded count is below `min_frames`
        (the entry stays cached: it is keyed by content, not by this rule)."""
        clip, hit = self._fetch(path, sampling, size=size, view=view)
        require_length(path, clip.info.num_frames, min_frames)
        return hit

    def remove_stale_temp(self, *, older_than_s: float = 3600.0) -> int:
        """Delete temp files (`.<entry>.<random>.tmp`) that writers killed mid-write left behind, if older
        than `older_than_s` (younger ones may belong to a live writer). Returns how many were removed."""
        removed = 0
        cutoff = time.time() - older_than_s
        for tmp in self.root.glob("*/.*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass                                             # its writer finished or another sweep won
        return removed

    def _fetch(self, path: str | Path, sampling: SamplingConfig, *, size: int, view: int):
        if view < 0:
            raise ValueError(f"view must be >= 0, got {view}")
        try:
            digest = file_digest(path)
        except OSError as e:
            raise VideoReadError(path, f"cannot open ({e.strerror or e})") from None
        entry = self._entry(digest, sampling, size, view)
        clip = self._load(entry, path, sampling.frames, size) if entry.exists() else None
        if clip is not None:
            return clip, True
        clip = self._extract(path, digest, sampling, size, view)
        atomic_save_npz(entry, frames=clip.frames, indices=clip.indices, mask=clip.mask,
                        info=np.array(json.dumps(clip.info._asdict())), format=np.array(CACHE_FORMAT))
        return clip, False

    def _entry(self, digest: str, sampling: SamplingConfig, size: int, view: int) -> Path:
        name = f"{digest}_t{sampling.frames}_s{size}_{sampling.short}_v{view}.npz"
        return self.root / digest[:2] / name

    @staticmethod
    def _extract(path: str | Path, digest: str, sampling: SamplingConfig, size: int, view: int):
        from videoseq.io.video import read_frames

        if view == 0:
            return read_frames(path, count=sampling.frames, size=size, mode="uniform", short=sampling.short)
        rng = np.random.default_rng([int(digest[:16], 16), view])
        return read_frames(path, count=sampling.frames, size=size, mode="random", rng=rng, short=sampling.short)

    @staticmethod
    def _load(entry: Path, path: str | Path, count: int, size: int):
        """The stored clip, or None (a miss) when the entry is corrupt, partial or from another format."""
        from videoseq.io.video import Clip, VideoInfo

        try:
            with np.load(entry) as z:
                if int(z["format"]) != CACHE_FORMAT:
                    return None
                frames, indices, mask = z["frames"], z["indices"], z["mask"]
                info = json.loads(str(z["info"]))
            if (frames.shape != (count, size, size, 3) or frames.dtype != np.uint8
                    or indices.shape != (count,) or mask.shape != (count,) or mask.dtype != np.bool_):
                raise ValueError(f"arrays of the wrong shape {frames.shape} {indices.shape} {mask.shape}")
            info = VideoInfo(**{**info, "path": str(path)})   # the same content may live under a new name
        except Exception as e:  # zip/npz/JSON/field errors all mean the same thing: not a usable entry
            log.warning("cache entry %s is unusable (%s: %s); extracting again", entry, type(e).__name__, e)
            return None
        return Clip(frames=frames, indices=indices.astype(np.int64), mask=mask, info=info)


def require_length(path: str | Path, num_frames: int, min_frames: int) -> None:
    """Raise `VideoReadError` with the scan's reason ("too short (n < m)") for a decoded count below
    `min_frames`: scan judged the file by its packet count, extraction judges it by the frames."""
    status = length_status(num_frames, min_frames)
    if status != "ok":
        raise VideoReadError(path, status)


class ExtractReport(NamedTuple):
    """What `extract_dataset` did: clips decoded now, clips found cached, videos that failed."""
    extracted: int                      # clips decoded and stored by this call
    cached: int                         # clips that were already in the cache
    failed: list[tuple[str, str]]       # (path, reason) of videos that could not be decoded


def extract_dataset(index, cache: FrameCache, sampling: SamplingConfig, *, size: int, views: int = 1,
                    workers: int = 2, progress: bool = True,
                    timeout: float | None = JOB_TIMEOUT) -> ExtractReport:
    """Extract every usable entry of a `DatasetIndex` into `cache`: views 0..views-1 for train videos,
    view 0 for val/test, in up to `workers` processes (0 = in-process). A video that fails to decode,
    decodes to fewer than `index.min_frames` frames (scan saw only its packet count: a truncated file),
    or is still being extracted after `timeout` seconds (None or 0: no limit; not enforced with
    workers=0) is reported in `failed` and marked in the index (`index.mark_failed`); the others go on.
    The decoded frame count of every other video is recorded in the index (`index.confirm_frames`).
    An entry that cannot be written (a full disk) raises `OutputError` naming it; the index is left
    as it was, and the entries already written stay valid."""
    if cache.root.is_dir() and (stale := cache.remove_stale_temp()):
        log.info("removed %d temp files left by killed writers in %s", stale, cache.root)
    jobs = []
    for e in index.ok():
        for view in range(max(1, views) if e.split == "train" else 1):
            jobs.append((str(cache.root), e.path, sampling, size, view, index.min_frames))
    results = run_jobs(_extract_job, jobs, workers=workers, progress=progress, desc="extract", unit="clip",
                       timeout=timeout)
    extracted = cached = 0
    failed: dict[str, str] = {}
    frames: dict[str, int] = {}
    for (_, path, *_), res in zip(jobs, results):
        if isinstance(res, JobTimeout):
            res = (None, f"unreadable: {res.reason}", None)
        elif isinstance(res, JobCrash):
            res = (None, "unreadable: decoder crashed", None)
        hit, reason, num_frames = res
        if num_frames is not None:
            frames[path] = num_frames
        if reason is not None:
            failed.setdefault(path, reason)
        elif hit:
            cached += 1
        else:
            extracted += 1
    index.confirm_frames(frames)
    for path, reason in failed.items():
        index.mark_failed(path, reason)
        log.warning("%s: %s; left out", path, reason)
    log.info("extract: %d extracted, %d cached, %d failed", extracted, cached, len(failed))
    return ExtractReport(extracted=extracted, cached=cached, failed=sorted(failed.items()))


def _extract_job(root: str, path: str, sampling: SamplingConfig, size: int, view: int,
                 min_frames: int) -> tuple[bool | None, str | None, int | None]:
    """(was cached, None, decoded frames), (None, "too short ...", decoded frames) or (None, reason,
    None). Runs in a pool worker; never raises for a bad video, raises `OutputError` for a cache that
    cannot be written (a full disk: no fault of the video)."""
    try:
        clip, hit = FrameCache(root)._fetch(path, sampling, size=size, view=view)
    except OutputError:
        raise
    except VideoReadError as e:
        return None, e.reason, None
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        return None, f"unreadable: {type(e).__name__}: {first}".rstrip(": "), None
    num_frames = int(clip.info.num_frames)
    status = length_status(num_frames, min_frames)
    return (hit, None, num_frames) if status == "ok" else (None, status, num_frames)
