"""Split features on disk (data/split_file.py, FeatureStore.load_split(spill=...)): the same numbers
as in memory, read a batch at a time."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from videoseq.data.batches import FeatureBatches
from videoseq.data.features import SplitFeatures, feature_stats
from videoseq.data.split_file import DiskFeatures, SplitWriter


def _array(n: int = 10, v: int = 2, t: int = 5, d: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, v, t, d)).astype(np.float32)


def _on_disk(tmp_path, a: np.ndarray, block: int = 4) -> DiskFeatures:
    with SplitWriter(tmp_path / "train.npy", n=len(a), views=a.shape[1], steps=a.shape[2], dim=a.shape[3]) as w:
        for start in range(0, len(a), block):
            w.write(start, a[start:start + block])
    return DiskFeatures(tmp_path / "train.npy")


def test_rows_read_back_exactly_and_the_file_is_a_npy(tmp_path):
    a = _array()
    feats = _on_disk(tmp_path, a)
    assert feats.shape == a.shape and len(feats) == 10
    np.testing.assert_array_equal(np.load(tmp_path / "train.npy"), a)
    idx, view = torch.tensor([7, 0, 3]), torch.tensor([1, 0, 1])
    assert torch.equal(feats[idx, view], torch.from_numpy(a)[idx, view])
    assert torch.equal(feats[torch.tensor([2, 9]), 0], torch.from_numpy(a[[2, 9], 0]))
    assert torch.equal(feats[3:8], torch.from_numpy(a[3:8]))
    with pytest.raises(IndexError):
        feats[torch.tensor([10]), 0]
    with pytest.raises(ValueError):
        SplitWriter(tmp_path / "x.npy", n=2, views=1, steps=1, dim=1).write(1, np.zeros((2, 1, 1, 1)))


def test_batches_and_statistics_equal_the_in_memory_split(tmp_path):
    a = _array(n=23)
    mask = torch.ones(23, 2, 5, dtype=torch.bool)
    mask[4, :, 3:] = False                                       # a short video
    labels = torch.arange(23) % 3
    memory = SplitFeatures(torch.from_numpy(a), mask, labels, [f"v{i}" for i in range(23)])
    disk = memory._replace(feats=_on_disk(tmp_path, a))
    for m, d in zip(feature_stats(memory, block=5), feature_stats(disk, block=256)):
        torch.testing.assert_close(m, d)
    valid = torch.from_numpy(a)[mask].double()
    torch.testing.assert_close(feature_stats(memory)[0], valid.mean(0).float())
    norm = feature_stats(memory)
    one = FeatureBatches(memory, batch_size=4, shuffle=True, random_view=True, seed=3, normalize=norm)
    two = FeatureBatches(disk, batch_size=4, shuffle=True, random_view=True, seed=3, normalize=norm)
    for (x1, m1, y1), (x2, m2, y2) in zip(one, two):
        assert torch.equal(x1, x2) and torch.equal(m1, m2) and torch.equal(y1, y2)
