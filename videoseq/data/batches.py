"""Seeded mini-batch iterators over cached features (frozen mode) or cached frames (finetune mode).

Both yield `(x, mask, y)` and own a `torch.Generator` (its state goes into training checkpoints, so a
resumed run draws the same batches and views as an uninterrupted one). On training splits a random
view per video per epoch serves as augmentation (`sampling.train_views`); evaluation uses view 0,
the segment centres.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
import torch

from videoseq.config import SamplingConfig
from videoseq.data.features import SplitFeatures

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _epoch_plan(n: int, views: int, *, batch_size: int, shuffle: bool, random_view: bool,
                generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    view = (torch.randint(0, views, (n,), generator=generator) if random_view and views > 1
            else torch.zeros(n, dtype=torch.int64))
    return [(order[i:i + batch_size], view[order[i:i + batch_size]]) for i in range(0, n, batch_size)]


class FeatureBatches:
    """Batches of `(feats (B, T, D) float32, mask (B, T) bool, y (B,))` from a `SplitFeatures`."""

    def __init__(self, split: SplitFeatures, *, batch_size: int, shuffle: bool = False,
                 random_view: bool = False, seed: int = 0,
                 normalize: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.split = split
        self.normalize = normalize      # (mean (D,), std (D,)): yields (x - mean) / std
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.random_view = random_view
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.split.labels) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        feats, mask, labels = self.split.feats, self.split.mask, self.split.labels   # (N, V, T, D) ...
        plan = _epoch_plan(len(labels), feats.shape[1], batch_size=self.batch_size, shuffle=self.shuffle,
                           random_view=self.random_view, generator=self.generator)
        for idx, view in plan:
            x = feats[idx, view].float()                                   # (B, T, D)
            if self.normalize is not None:
                x = (x - self.normalize[0]) / self.normalize[1]
            yield x, mask[idx, view], labels[idx]                          # (B, T, D), (B, T), (B,)


class ClipBatches:
    """Batches of `(frames (B, T, 3, S, S) float32, mask (B, T), y (B,))` read from the frame cache.

    The next batches are read from the cache and normalised in `workers` threads while the model
    trains on the current one (npz reads and resizing release the GIL). Clips read once stay in
    memory as uint8 up to `memory_mb`, so later epochs skip the disk and the npz parsing.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], frame_cache, sampling: SamplingConfig, *,
                 size: int, input_size: int, mean: Sequence[float], std: Sequence[float], views: int = 1,
                 batch_size: int, shuffle: bool = False, random_view: bool = False, seed: int = 0,
                 workers: int = 2, prefetch: int = 2, memory_mb: int = 1024):
        self.paths = list(paths)
        self.labels = torch.as_tensor(list(labels), dtype=torch.int64)
        self.frame_cache, self.sampling, self.size = frame_cache, sampling, size
        self.input_size, self.mean, self.std = input_size, tuple(mean), tuple(std)
        self.views, self.batch_size, self.shuffle, self.random_view = views, batch_size, shuffle, random_view
        self.workers, self.prefetch = max(1, workers), max(1, prefetch)
        self.generator = torch.Generator().manual_seed(seed)
        self._memo: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._memo_budget = memory_mb * 2 ** 20

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def clip(self, i: int, view: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames (T, S, S, 3) uint8, mask (T,) bool) of video i, view `view`."""
        key = (i, view)
        if key in self._memo:
            return self._memo[key]
        c = self.frame_cache.load_or_extract(self.paths[i], self.sampling, size=self.size, view=view)
        item = (c.frames, np.asarray(c.mask, dtype=bool))
        if self._memo_budget >= c.frames.nbytes:
            self._memo_budget -= c.frames.nbytes
            self._memo[key] = item
        return item

    def load(self, idx: torch.Tensor, view: torch.Tensor) -> Batch:
        """The batch of videos `idx` at views `view`: frames resized to `input_size` and normalised,
        with their masks and labels."""
        from videoseq.models.transforms import frames_to_tensor

        clips = [self.clip(i, v) for i, v in zip(idx.tolist(), view.tolist())]
        frames = np.stack([f for f, _ in clips])                           # (B, T, S, S, 3) uint8
        x = frames_to_tensor(frames, size=self.input_size, mean=self.mean, std=self.std)  # (B, T, 3, S', S')
        mask = torch.from_numpy(np.stack([m for _, m in clips]))
        return x, mask, self.labels[idx]

    def __iter__(self) -> Iterator[Batch]:
        plan = _epoch_plan(len(self.paths), self.views, batch_size=self.batch_size, shuffle=self.shuffle,
                           random_view=self.random_view, generator=self.generator)
        with ThreadPoolExecutor(self.workers) as pool:
            pending = [pool.submit(self.load, *p) for p in plan[:self.prefetch]]
            for k in range(len(plan)):
                batch = pending.pop(0).result()
                if k + self.prefetch < len(plan):
                    pending.append(pool.submit(self.load, *plan[k + self.prefetch]))
                yield batch
