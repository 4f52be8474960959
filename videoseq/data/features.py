"""Frozen-encoder features: every sampled frame goes through the encoder once, then lives on disk.

    store = FeatureStore(cache_dir / "features", encoder)
    split = store.load_split(index.ok("train"), frame_cache, sampling, size=64, views=2, classes=classes)
    split.feats   # (N, V, T, D) float32: V sampled views per video (train views are augmentation)
    split = store.load_split(..., spill=work / "train.npy")   # the same, on disk, read a batch at a time

An entry is keyed by (video content digest, sampling parameters, frame size, view) and by the
encoder's identity: `encoder.cache_id()` plus a digest of its weights, so two randomly initialised
encoders never share features. Each temporal stream (streams.py) has entries of its own, keyed the
same way and by the encoder's input size and normalisation (the frames it reads); a split's features
are the encoder's D followed by the streams' M per step. Entries are `.npz` files written atomically: a run
killed while computing features leaves only whole entries, and a rerun encodes only what is missing.
A full disk is an `OutputError` naming the entry (nothing partial is left), and an entry that does not
load as (T, D) features with a (T,) mask is a miss, computed again.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from videoseq.io.atomic import atomic_save_npz
from videoseq.config import SamplingConfig, config_digest

log = logging.getLogger(__name__)


class SplitFeatures(NamedTuple):
    """The cached features of one split: features and masks per video and view, labels, and the
    video files, all in the same row order."""

    feats: torch.Tensor    # (N, V, T, D) float32 (a torch tensor, or split_file.DiskFeatures on disk)
    mask: torch.Tensor     # (N, V, T) bool, False on padded steps
    labels: torch.Tensor   # (N,) int64 class indices
    paths: list[str]       # (N,) video files, in the order of the rows


class ClipRef(NamedTuple):
    """One clip to encode: a video file and which sampled view of it (0 = the segment centres)."""

    path: str
    view: int


def encoder_identity(encoder: torch.nn.Module) -> str:
    """A folder name for `encoder.cache_id()` (name + weights + pooling + a digest of the weights,
    so two randomly initialised encoders never share features)."""
    cid = encoder.cache_id()
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", cid)
    if readable == cid and len(cid) <= 100:
        return cid
    return f"{readable[:60]}-{hashlib.blake2b(cid.encode(), digest_size=6).hexdigest()}"


def feature_stats(split: SplitFeatures, *, block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every valid frame of a split: (D,), (D,) float32, accumulated
    in float64 over blocks of `block` videos (a split on disk is never read whole).

    The std is floored at a tenth of the typical std, so dimensions that are (almost) constant in
    training cannot blow up an unseen value at test time.
    """
    n, dim = len(split.labels), split.feats.shape[-1]
    total, squares, count = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64), 0
    for start in range(0, n, block):
        valid = split.feats[start:start + block][split.mask[start:start + block]].double()   # (frames, D)
        total += valid.sum(dim=0)
        squares += (valid * valid).sum(dim=0)
        count += len(valid)
    mean = total / max(1, count)
    var = (squares / max(1, count) - mean * mean).clamp_min(0)
    eps2 = 0.01 * var.mean().clamp_min(1e-12)
    return mean.float(), (var + eps2).sqrt().float()


def fold_input_normalization(head: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make a head trained on (x - mean) / std take raw features x, exactly (in eval mode).

    A head's `embed` (heads.FrameEmbed) starts each input stream with a Linear: W z + b with
    z = (x - mean) / std equals (W / std) x + (b - (W / std) mean), folded over the dimensions that
    Linear reads (`per_frame` reads only the appearance part).
    """
    embed = getattr(head, "embed", None)
    if embed is None or not hasattr(embed, "input_linears"):
        raise TypeError(f"{type(head).__name__}: no FrameEmbed to fold the input normalisation into")
    with torch.no_grad():
        for linear, dims in embed.input_linears():
            m, s = mean[dims], std[dims]
            if linear.in_features != m.numel():
                raise TypeError(f"{type(head).__name__}: Linear({linear.in_features}, ...) does not read "
                                f"dimensions {dims.start}..{dims.stop} of {mean.numel()}-d features")
            w = linear.weight / s.to(linear.weight)[None, :]                # (hidden, dims)
            linear.bias -= w @ m.to(w)
            linear.weight.copy_(w)


class FeatureStore:
    """Per-clip `(T, D + M)` features: the encoder's D under `root/<encoder identity>/`, each temporal
    stream's share of M under `root/<stream>-<input size>-<normalisation>/`, read back side by side.

    Streams are cached apart from the encoder, so trying another set of streams (`model.motion`)
    computes only the streams, never the encoder again."""

    def __init__(self, root: str | Path, encoder: torch.nn.Module, *, device: str | torch.device = "cpu",
                 batch_frames: int | None = None, dtype: np.dtype = np.float32, motion: torch.nn.Module | None = None,
                 engine: str = "torch"):
        from videoseq.models.engines import build_engine

        self.encoder = encoder
        self.motion = motion
        self.device = torch.device(device)
        self.batch_frames = batch_frames or encoder.frames_per_call(self.device)   # frames per call
        self.dtype = np.dtype(dtype)
        self.root = Path(root)
        # the engine runs the encoder (models/engines.py); features of another engine ("ort") live apart
        self.engine = build_engine(encoder, engine=engine, device=self.device)
        tag = f"+{self.engine.cache_tag}" if self.engine.cache_tag else ""
        self.dir = self.root / f"{encoder_identity(encoder)}{tag}"
        # streams read the frames as the encoder gets them: its input size and normalisation
        norm = config_digest({"size": encoder.input_size, "mean": list(map(float, encoder.mean)),
                              "std": list(map(float, encoder.std))})
        parts = motion.parts() if motion is not None else []
        self.streams = [(stream, self.root / f"{stream.cache_id()}-{encoder.input_size}-{norm}")
                        for _, stream, _ in parts]
        self.encoded_frames = 0     # frames this store has pushed through the encoder (for logs/tests)
        self.streamed_clips = 0     # clips whose temporal streams this store has computed

    def entry_path(self, path: str, sampling: SamplingConfig, *, size: int, view: int,
                   folder: Path | None = None) -> Path:
        """The `.npz` entry for the features of `path` (by content digest) at this sampling, size and
        view: the encoder's, or those of the stream cached in `folder`."""
        from videoseq.data.cache import file_digest

        params = config_digest({"frames": sampling.frames, "short": sampling.short, "size": size})
        return (folder or self.dir) / f"{file_digest(path)}-{params}-v{view}.npz"

    def load_split(self, entries: Sequence, frame_cache, sampling: SamplingConfig, *, size: int,
                   views: int, classes: Sequence[str], progress: bool = False,
                   spill: str | Path | None = None, block: int = 256) -> SplitFeatures:
        """Features of `views` views of every entry (computing only missing ones), stacked per split.

        With `spill` (a file path) the stacked (N, V, T, D) array is written there `block` videos at a
        time and read back a batch at a time (`split_file.DiskFeatures`): memory stays that of a block
        however many videos the split has. Without it the array is held in memory (a torch tensor)."""
        n, t = len(entries), sampling.frames
        labels = torch.tensor([list(classes).index(e.label) for e in entries], dtype=torch.int64)
        paths = [e.path for e in entries]
        if spill is None:
            refs = [ClipRef(e.path, v) for e in entries for v in range(views)]
            feats, mask = self._stacked(refs, frame_cache, sampling, size=size, progress=progress)
            return SplitFeatures(torch.from_numpy(feats.reshape(n, views, t, -1)),      # (N, V, T, D)
                                 torch.from_numpy(mask.reshape(n, views, t)), labels, paths)
        from tqdm.auto import tqdm

        from videoseq.data.split_file import DiskFeatures, SplitWriter

        masks, writer = np.zeros((n, views, t), bool), None
        bar = tqdm(total=n, desc="features", unit="video", disable=not progress or n <= block, leave=False)
        try:
            for start in range(0, n, block):
                part = entries[start:start + block]
                refs = [ClipRef(e.path, v) for e in part for v in range(views)]
                feats, mask = self._stacked(refs, frame_cache, sampling, size=size, progress=False)
                if writer is None:
                    writer = SplitWriter(spill, n=n, views=views, steps=t, dim=feats.shape[-1])
                writer.write(start, feats.reshape(len(part), views, t, -1))
                masks[start:start + len(part)] = mask.reshape(len(part), views, t)
                bar.update(len(part))
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if writer is None:                                   # no entries: an empty in-memory split
            return SplitFeatures(torch.zeros(0, views, t, 0), torch.from_numpy(masks), labels, paths)
        return SplitFeatures(DiskFeatures(spill), torch.from_numpy(masks), labels, paths)

    def _stacked(self, refs: Sequence[ClipRef], frame_cache, sampling: SamplingConfig, *, size: int,
                 progress: bool) -> tuple[np.ndarray, np.ndarray]:
        """(feats (R, T, D), mask (R, T)) of `refs`, stacked in order."""
        arrays = self.features(refs, frame_cache, sampling, size=size, progress=progress)
        if not arrays:
            return np.zeros((0, sampling.frames, 0), self.dtype), np.zeros((0, sampling.frames), bool)
        return np.stack([a[0] for a in arrays]), np.stack([a[1] for a in arrays])

    def features(self, refs: Sequence[ClipRef], frame_cache, sampling: SamplingConfig, *, size: int,
                 progress: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(feats (T, D + M), mask (T,))] per ref, in order; missing parts are computed and stored."""
        folders = [self.dir] + [folder for _, folder in self.streams]
        parts: list[list[np.ndarray | None]] = []
        masks: list[np.ndarray | None] = []
        missing: list[int] = []
        for i, ref in enumerate(refs):
            got = [self._read(self.entry_path(ref.path, sampling, size=size, view=ref.view, folder=f),
                              sampling.frames) for f in folders]
            parts.append([g[0] if g is not None else None for g in got])
            masks.append(next((g[1] for g in got if g is not None), None))
            if any(g is None for g in got):
                missing.append(i)
        if missing:
            log.info("computing %d of %d clips' features in %s", len(missing), len(refs),
                     ", ".join(f.name for f in folders))
            self._compute_missing(refs, missing, parts, masks, frame_cache, sampling, size=size,
                                  progress=progress)
        return [(np.concatenate(p, axis=1) if len(p) > 1 else p[0], m)   # type: ignore[arg-type]
                for p, m in zip(parts, masks)]

    def _compute_missing(self, refs, missing, parts, masks, frame_cache, sampling, *, size, progress) -> None:
        from tqdm.auto import tqdm

        from videoseq.models.transforms import frames_to_tensor

        enc = self.encoder      # its input size and normalisation; self.engine runs it (BatchNorm folded)
        pending: list[tuple[int, np.ndarray, np.ndarray]] = []   # (ref index, valid frames, mask)
        bar = tqdm(total=len(missing), desc="features", unit="clip", disable=not progress, leave=False)

        def store(i: int, k: int, values: np.ndarray, mask: np.ndarray) -> None:
            """Part k (0: the encoder, 1..: the streams) of ref i: (valid, d) values on the valid steps."""
            full = np.zeros((len(mask), values.shape[1]), self.dtype)             # (T, d)
            full[mask] = values
            folder = self.dir if k == 0 else self.streams[k - 1][1]
            ref = refs[i]
            atomic_save_npz(self.entry_path(ref.path, sampling, size=size, view=ref.view, folder=folder),
                            feats=full, mask=mask)
            parts[i][k] = full
            masks[i] = mask

        def flush() -> None:
            frames = np.concatenate([f for _, f, _ in pending])    # (sum valid, S, S, 3) uint8
            x = frames_to_tensor(frames, size=enc.input_size, mean=enc.mean, std=enc.std)
            offsets = np.cumsum([0] + [len(f) for _, f, _ in pending])
            encode = [j for j, (i, _, _) in enumerate(pending) if parts[i][0] is None]
            if encode:   # the encoder over the frames of the clips that miss its part, in batches
                rows = torch.cat([x[offsets[j]:offsets[j + 1]] for j in encode])    # (n, 3, S, S)
                feats = torch.cat([self.engine(rows[a:a + self.batch_frames])
                                   for a in range(0, len(rows), self.batch_frames)])       # (n, D) float32
                self.encoded_frames += len(feats)
                at = 0
                for j in encode:
                    i, valid, mask = pending[j]
                    store(i, 0, feats[at:at + len(valid)].numpy(), mask)
                    at += len(valid)
            for j, (i, valid, mask) in enumerate(pending):
                todo = [k for k in range(1, len(parts[i])) if parts[i][k] is None]
                if todo:   # valid steps are a prefix: frames t-1, t are neighbours
                    clip = x[offsets[j]:offsets[j + 1]][None].to(self.device)       # (1, valid, 3, S, S)
                    with torch.inference_mode():
                        for k in todo:
                            store(i, k, self.streams[k - 1][0](clip)[0].float().cpu().numpy(), mask)
                    self.streamed_clips += 1
            bar.update(len(pending))
            pending.clear()

        try:
            queued = 0
            for i in missing:
                clip = frame_cache.load_or_extract(refs[i].path, sampling, size=size, view=refs[i].view)
                mask = np.asarray(clip.mask, dtype=bool)
                pending.append((i, clip.frames[mask], mask))
                queued += int(mask.sum())
                if queued >= self.batch_frames:
                    flush()
                    queued = 0
            if pending:
                flush()
        finally:
            bar.close()

    @staticmethod
    def _read(path: Path, frames: int) -> tuple[np.ndarray, np.ndarray] | None:
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                feats, mask = z["feats"], z["mask"].astype(bool)
            if feats.ndim != 2 or feats.shape[0] != frames or mask.shape != (frames,):
                raise ValueError(f"arrays of the wrong shape {feats.shape} {mask.shape}")
            return feats, mask
        except Exception as e:  # a stray or corrupt file is a miss, rewritten below
            log.warning("%s: unreadable feature entry (%s); recomputing", path, e)
            return None
