"""Frozen-encoder features: every sampled frame goes through the encoder once, then lives on disk.

    store = FeatureStore(cache_dir / "features", encoder)
    split = store.load_split(index.ok("train"), frame_cache, sampling, size=64, views=2, classes=classes)
    split.feats   # (N, V, T, D) float32: V sampled views per video (train views are augmentation)

An entry is keyed by (video content digest, sampling parameters, frame size, view) and by the
encoder's identity: `encoder.cache_id()` plus a digest of its weights, so two randomly initialised
encoders never share features. With a motion stream (motion.py) each entry holds the encoder's D
features followed by the motion stream's M per step, computed from the same frames in the same pass,
and the folder name says which stream it is. Entries are `.npz` files written atomically: a run
killed while computing features leaves only whole entries, and a rerun encodes only what is missing.
A full disk is an `OutputError` naming the entry (nothing partial is left), and an entry that does not
load as (T, D) features with a (T,) mask is a miss, computed again.
"""
from __future__ import annotations

import copy
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

    feats: torch.Tensor    # (N, V, T, D) float32
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


def feature_stats(split: SplitFeatures) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every valid frame of a split: (D,), (D,) float32.

    The std is floored at a tenth of the typical std, so dimensions that are (almost) constant in
    training cannot blow up an unseen value at test time.
    """
    valid = split.feats[split.mask].float()                        # (frames, D)
    mean = valid.mean(dim=0)
    var = valid.var(dim=0, unbiased=False)
    eps2 = 0.01 * var.mean().clamp_min(1e-12)
    return mean, (var + eps2).sqrt()


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
    """Per-clip `(T, D)` features of one encoder, stored under `root/<encoder identity>/`."""

    def __init__(self, root: str | Path, encoder: torch.nn.Module, *, device: str | torch.device = "cpu",
                 batch_frames: int | None = None, dtype: np.dtype = np.float32, motion: torch.nn.Module | None = None):
        self.encoder = encoder
        self.motion = motion
        self.device = torch.device(device)
        self.batch_frames = batch_frames or encoder.frames_per_call(self.device)   # frames per call
        self.dtype = np.dtype(dtype)
        stream = f"+{motion.cache_id()}" if motion is not None else ""
        self.dir = Path(root) / f"{encoder_identity(encoder)}{stream}"
        self.encoded_frames = 0     # frames this store has pushed through the encoder (for logs/tests)

    def entry_path(self, path: str, sampling: SamplingConfig, *, size: int, view: int) -> Path:
        """The `.npz` entry for the features of `path` (by content digest) at this sampling, size and view."""
        from videoseq.data.cache import file_digest

        params = config_digest({"frames": sampling.frames, "short": sampling.short, "size": size})
        return self.dir / f"{file_digest(path)}-{params}-v{view}.npz"

    def load_split(self, entries: Sequence, frame_cache, sampling: SamplingConfig, *, size: int,
                   views: int, classes: Sequence[str], progress: bool = False) -> SplitFeatures:
        """Features of `views` views of every entry (computing only missing ones), stacked per split."""
        refs = [ClipRef(e.path, v) for e in entries for v in range(views)]
        arrays = self.features(refs, frame_cache, sampling, size=size, progress=progress)
        n, t = len(entries), sampling.frames
        feats = np.stack([a[0] for a in arrays]) if arrays else np.zeros((0, t, 0), self.dtype)
        mask = np.stack([a[1] for a in arrays]) if arrays else np.zeros((0, t), bool)
        feats = feats.reshape(n, views, t, -1)                      # (N, V, T, D)
        mask = mask.reshape(n, views, t)                            # (N, V, T)
        labels = torch.tensor([list(classes).index(e.label) for e in entries], dtype=torch.int64)
        return SplitFeatures(torch.from_numpy(feats), torch.from_numpy(mask), labels,
                             [e.path for e in entries])

    def features(self, refs: Sequence[ClipRef], frame_cache, sampling: SamplingConfig, *, size: int,
                 progress: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(feats (T, D), mask (T,))] per ref, in order; misses are encoded in batches and stored."""
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(refs)
        missing: list[int] = []
        for i, ref in enumerate(refs):
            cached = self._read(self.entry_path(ref.path, sampling, size=size, view=ref.view), sampling.frames)
            if cached is None:
                missing.append(i)
            else:
                out[i] = cached
        if missing:
            log.info("encoding %d of %d clips with %s", len(missing), len(refs), self.dir.name)
            self._encode_missing(refs, missing, out, frame_cache, sampling, size=size, progress=progress)
        return out  # type: ignore[return-value]

    def _encode_missing(self, refs, missing, out, frame_cache, sampling, *, size, progress) -> None:
        from tqdm.auto import tqdm

        from videoseq.models.classifier import fold_batchnorm
        from videoseq.models.transforms import frames_to_tensor

        # a copy with BatchNorm folded into the convolutions (faster; the same features to ~1e-6, as a
        # bundle computes them); the store's identity is the encoder's own weights
        enc = copy.deepcopy(self.encoder).to(self.device).eval()
        fold_batchnorm(enc)
        pending: list[tuple[int, np.ndarray, np.ndarray]] = []   # (ref index, valid frames, mask)
        bar = tqdm(total=len(missing), desc="features", unit="clip", disable=not progress, leave=False)

        def flush() -> None:
            frames = np.concatenate([f for _, f, _ in pending])    # (sum valid, S, S, 3) uint8
            x = frames_to_tensor(frames, size=enc.input_size, mean=enc.mean, std=enc.std)
            chunks = []
            with torch.inference_mode():
                for start in range(0, len(x), self.batch_frames):
                    batch = x[start:start + self.batch_frames].to(self.device)   # (n, 3, S, S)
                    chunks.append(enc(batch).float().cpu())                      # (n, D)
            feats = torch.cat(chunks)                                            # (sum valid, D)
            self.encoded_frames += len(feats)
            offset = 0
            for i, valid, mask in pending:
                clip = feats[offset:offset + len(valid)]                         # (valid, D)
                if self.motion is not None:   # valid steps are a prefix: frames t-1, t are neighbours
                    with torch.inference_mode():
                        moved = self.motion(x[offset:offset + len(valid)][None].to(self.device))
                    clip = torch.cat([clip, moved[0].float().cpu()], dim=1)      # (valid, D + M)
                clip_feats = np.zeros((len(mask), clip.shape[1]), self.dtype)    # (T, D + M)
                clip_feats[mask] = clip.numpy()
                offset += len(valid)
                ref = refs[i]
                atomic_save_npz(self.entry_path(ref.path, sampling, size=size, view=ref.view),
                                feats=clip_feats, mask=mask)
                out[i] = (clip_feats, mask)
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
