"""The heavy part of a run for a chunk of videos: frames into the frame cache and, in frozen mode, the
frozen features (encoder + temporal streams) into the feature store, so `prepare_data` later finds
everything cached.

    videos = [(entry.path, plan.views(entry.split)) for entry in index.ok()[:32]]
    result = prepare_chunk(videos, config)          # in any process that sees the caches
    result.frames_encoded, result.failed            # [(path, one-line reason)]

Chunks are independent: any number of processes (threads, Dask workers on other machines) may run
chunks of one dataset at once, since every cache entry is keyed by content and written atomically.
The encoder is built once per process and config (`encoder_for`), exactly as `prepare_data` builds
it (seeded by `train.seed`, frozen), so the features land under the encoder identity compare reads.
A video that cannot be decoded, is shorter than `min_frames`, or whose features cannot be computed
is reported in `failed` and the chunk goes on; only an `OutputError` (a cache that cannot be
written, e.g. a full disk) stops the chunk.

A chunk that prepared all its videos leaves its record in the caches, `<cache>/chunks/<key>.json`,
keyed by `chunk_key` (its files' content digests and views, the sampling, the encoder and streams,
the engine, `min_frames`): `prepared_record` finds it without touching a frame, so an orchestrator
skips chunks already done without sending them to a worker. A chunk with a failed video leaves no
record (the failure may be fixed without changing the file: it is tried again next time). The
records live beside the entries they describe: clearing the cache folder clears them too.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import torch

from videoseq.config import Config, config_digest
from videoseq.data.plan import extraction_plan
from videoseq.errors import OutputError, VideoReadError, VideoseqError
from videoseq.io.atomic import atomic_write_text

_encoders: dict[str, tuple[torch.nn.Module, torch.nn.Module | None]] = {}
_encoders_lock = threading.Lock()     # builds are seeded from torch's global RNG: one at a time


class ChunkResult(NamedTuple):
    """What `prepare_chunk` did for its videos; `to_json()` is the record a flow task returns."""
    videos: int                       # videos in the chunk
    extracted: int                    # videos with at least one clip decoded by this call
    clips_extracted: int              # clips decoded and stored by this call
    clips_cached: int                 # clips found in the frame cache
    frames_encoded: int               # frames pushed through the encoder by this call
    clips_streamed: int               # clips whose temporal streams this call computed
    failed: list[tuple[str, str]]     # (path, one-line reason), in chunk order
    pid: int                          # the process that ran the chunk
    host: str                         # and its machine
    seconds: float

    def to_json(self) -> dict:
        """The result as JSON values (lists for the (path, reason) pairs)."""
        record = self._asdict()
        record["failed"] = [list(pair) for pair in self.failed]
        return record


def encoder_key(config: Config) -> str:
    """What decides the frozen encoder and streams of `config`: the model section and `train.seed`
    (random-init weights come from it) and `train.mode`."""
    return config_digest({"model": config.to_dict()["model"], "seed": config.train.seed,
                          "mode": config.train.mode})


def chunk_key(videos: Sequence[tuple[str, int]], config: Config, min_frames: int | None = None) -> str | None:
    """What decides a chunk's cache entries and record: its files by content digest, their views, the
    sampling section, the encoder and streams (`encoder_key`), the engine, the cache folder and
    `min_frames` (None: `data.min_frames`). None when a file cannot be read (no record for it)."""
    from videoseq.data.cache import file_digest

    try:
        digests = [[file_digest(path), int(views)] for path, views in videos]
    except (OSError, VideoseqError):
        return None
    plan = extraction_plan(config)
    return config_digest({
        "videos": digests, "sampling": config.to_dict()["sampling"], "encoder": encoder_key(config),
        "engine": config.runtime.engine, "cache": str(plan.cache_dir.resolve()),
        "min_frames": config.data.min_frames if min_frames is None else min_frames})


def record_path(config: Config, key: str) -> Path:
    """Where the record of the chunk with `key` is kept: `<cache>/chunks/<key[:2]>/<key>.json`."""
    return extraction_plan(config).cache_dir / "chunks" / key[:2] / f"{key}.json"


def prepared_record(videos: Sequence[tuple[str, int]], config: Config,
                    min_frames: int | None = None) -> dict | None:
    """The record of an earlier `prepare_chunk` of exactly these videos (by content) and config that
    prepared them all, or None. Reads each file's fingerprint (`data.fingerprints`), never a video."""
    key = chunk_key(videos, config, min_frames)
    if key is None:
        return None
    try:
        record = json.loads(record_path(config, key).read_text())
    except (OSError, ValueError):
        return None
    fields = set(ChunkResult._fields)
    if not isinstance(record, dict) or set(record) != fields or record["failed"] or record["videos"] != len(videos):
        return None
    return record


def encoder_for(config: Config) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(encoder, motion streams or None) for `config`, built once per process and `encoder_key`:
    seeded with `train.seed` and frozen in frozen mode, as `learn.prepare.prepare_data` builds it."""
    from videoseq.models.encoders import build_encoder
    from videoseq.models.streams import build_motion

    key = encoder_key(config)
    with _encoders_lock:
        if key not in _encoders:
            m = config.model
            torch.manual_seed(config.train.seed)
            encoder = build_encoder(m.encoder, weights=m.weights, pooling=m.pooling, input_size=m.input_size)
            if config.train.mode == "frozen":
                encoder.freeze()
            _encoders[key] = (encoder, build_motion(m.motion))
        return _encoders[key]


def _reason(error: Exception) -> str:
    """One line saying why a video failed."""
    if isinstance(error, VideoReadError):
        return error.reason
    first = (str(error).strip().splitlines() or [""])[0]
    return f"unreadable: {type(error).__name__}: {first}".rstrip(": ")


def prepare_chunk(videos: Sequence[tuple[str, int]], config: Config, *,
                  device: str | torch.device | None = None, min_frames: int | None = None) -> ChunkResult:
    """Extract views 0..n-1 of every (path, n) in `videos` into the frame cache of
    `extraction_plan(config)` and, when `train.mode` is frozen, compute their missing FeatureStore
    entries (encoder on `device` through `runtime.engine`, every stream of `model.motion`).
    `device`: None = `runtime.device`; `min_frames`: None = `data.min_frames` (a decoded count below
    it fails the video "too short (n < m)"). Never raises for a bad video; `OutputError` for a cache
    that cannot be written."""
    from videoseq.data.cache import FrameCache
    from videoseq.runtime import resolve_device

    t0 = time.perf_counter()
    plan = extraction_plan(config)
    cache = FrameCache(plan.frames_dir)
    least = config.data.min_frames if min_frames is None else min_frames
    failed: dict[str, str] = {}
    ok: list[tuple[str, int]] = []
    extracted = clips_extracted = clips_cached = 0
    for path, views in videos:
        try:
            hits = [cache.ensure(path, plan.sampling, size=plan.size, view=v, min_frames=least)
                    for v in range(max(1, views))]
        except OutputError:
            raise
        except Exception as e:        # a broken video fails alone
            failed[path] = _reason(e)
            continue
        ok.append((path, max(1, views)))
        clips_cached += sum(hits)
        clips_extracted += len(hits) - sum(hits)
        extracted += not all(hits)
    encoded = streamed = 0
    if config.train.mode == "frozen" and ok:
        encoded, streamed = _encode(ok, config, cache, resolve_device(device or config.runtime.device), failed)
    result = ChunkResult(videos=len(videos), extracted=extracted, clips_extracted=clips_extracted,
                         clips_cached=clips_cached, frames_encoded=encoded, clips_streamed=streamed,
                         failed=[(p, failed[p]) for p, _ in videos if p in failed], pid=os.getpid(),
                         host=socket.gethostname(), seconds=time.perf_counter() - t0)
    if not failed:
        key = chunk_key(videos, config, least)
        if key is not None:
            atomic_write_text(record_path(config, key), json.dumps(result.to_json()) + "\n")
    return result


def _encode(videos: list[tuple[str, int]], config: Config, cache, device: torch.device,
            failed: dict[str, str]) -> tuple[int, int]:
    """Missing features of every view of `videos`, all clips in one pass (full encoder batches); when
    that pass fails, video by video, so only the culprit is reported in `failed`. Returns (frames
    encoded, clips streamed)."""
    from videoseq.data.features import ClipRef, FeatureStore

    plan = extraction_plan(config)
    encoder, motion = encoder_for(config)
    store = FeatureStore(plan.features_dir, encoder, device=device, motion=motion, engine=config.runtime.engine)

    def features(chunk: list[tuple[str, int]]) -> None:
        refs = [ClipRef(path, v) for path, views in chunk for v in range(views)]
        store.features(refs, cache, plan.sampling, size=plan.size)

    try:
        features(videos)
    except OutputError:
        raise
    except Exception:
        for video in videos:      # entries written before the failure are hits now
            try:
                features([video])
            except OutputError:
                raise
            except Exception as e:
                failed[video[0]] = _reason(e)
    return store.encoded_frames, store.streamed_clips
