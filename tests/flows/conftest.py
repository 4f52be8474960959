"""Fixtures for the flow tests: one Prefect test harness per session, a tiny real dataset, a fast config.

The harness (a temporary SQLite database behind a local API server) starts only for tests that ask
for `prefect_harness`, once per session, so the rest of the suite never pays for it.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

CLASSES = {"dark": 40, "bright": 200}   # appearance only: learnable in a couple of epochs
SPLITS = {"train": 4, "val": 2, "test": 2}


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def write_clip(path: Path, *, level: int, frames: int = 10, size: int = 32, seed: int = 0) -> Path:
    """A real MJPG .avi: `frames` noisy grey frames around `level`, with a moving bar."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (size, size))
    assert writer.isOpened(), path
    try:
        for t in range(frames):
            frame = np.clip(rng.normal(level, 12, (size, size, 3)), 0, 255).astype(np.uint8)
            frame[:, (3 * t) % size: (3 * t) % size + 3] = 255 - level
            writer.write(frame)
    finally:
        writer.release()
    return path


def make_dataset(root: Path, *, broken: bool = False) -> Path:
    """root/{train,val,test}/{dark,bright}/*.avi (16 videos); `broken`: plus a text file posing as a video."""
    seed = 0
    for split, n in SPLITS.items():
        for label, level in CLASSES.items():
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                write_clip(folder / f"{label}_{i}.avi", level=level, seed=seed)
    if broken:
        (root / "train" / "dark" / "broken.avi").write_text("not a video\n")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_dataset_with_broken(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny-broken"), broken=True)


TINY_CONFIG = """\
sampling: {frames: 6, size: 32}
model: {encoder: small_cnn, weights: null, pooling: avg, hidden: 16, dropout: 0.0}
train: {epochs: 3, batch_size: 8, patience: 3, lr: 0.003}
compare: {heads: [per_frame, lstm], bootstrap: 50}
runtime: {workers: 0, max_workers: 2, device: cpu, progress: false}
"""


@pytest.fixture
def tiny_config(tmp_path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return str(path)


@pytest.fixture
def make_clip():
    """`make_clip(path, level=..., frames=..., seed=...)` writes a real tiny .avi (see write_clip)."""
    return write_clip


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real (untrained) small_cnn + lstm bundle for the tiny clips: 2 classes, 4 frames of 32x32."""
    import torch

    from videoseq.models.bundle import save_bundle
    from videoseq.config import config_from_dict
    from videoseq.models.classifier import build_model

    config = config_from_dict({"sampling": {"frames": 4, "size": 32},
                               "model": {"encoder": "small_cnn", "weights": None, "pooling": "avg", "hidden": 8}})
    torch.manual_seed(0)
    model = build_model(config.model, "lstm", len(CLASSES))
    return save_bundle(tmp_path_factory.mktemp("bundle") / "lstm", model=model, head="lstm", config=config,
                       classes=list(CLASSES), metrics={"val_accuracy": 0.5})
