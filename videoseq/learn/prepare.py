"""What every head of a run trains and tests on: the scanned index, the extracted frames, and (frozen
mode) the cached features; the batch iterators over them; fresh trainable models.

    data = prepare_data("data/composite", config, device=torch.device("cpu"), progress=False)
    train_b, val_b, test_b = make_batches(data, config, seed=0)
    model = build_trainable(data, config, "lstm", seed=0)

Everything here is identical for every head and seed of a comparison: same frames, same split, same
features.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from videoseq.config import Config
from videoseq.data.plan import ExtractionPlan, extraction_plan
from videoseq.data.splits import SPLITS
from videoseq.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

EventHook = Callable[[str, float], None]    # (stage, fraction done): "scan", "extract", "features", ...


class Data(NamedTuple):
    """Everything the heads train and test on; identical for every head and seed of a run."""
    index: object                # DatasetIndex, failed videos marked
    classes: list[str]
    encoder: torch.nn.Module     # frozen mode: the one encoder; finetune: a template for input size/norm
    plan: ExtractionPlan         # frame size, views, cache folders
    train: object                # frozen: SplitFeatures; finetune: (paths, labels)
    val: object
    test: object

    @property
    def size(self) -> int:
        """Side of the cached frames."""
        return self.plan.size


def load_index(root_or_index, config: Config, *, progress: bool):
    """A DatasetIndex as given, or scanned from a dataset root."""
    from videoseq.data.dataset import DatasetIndex, scan_dataset

    if isinstance(root_or_index, DatasetIndex):
        return root_or_index
    return scan_dataset(root_or_index, config.data, workers=config.runtime.workers, progress=progress,
                        timeout=config.runtime.timeout)


def check_mode(config: Config) -> None:
    """ConfigError unless `train.mode` is one of finetune, frozen."""
    if config.train.mode not in ("finetune", "frozen"):
        raise ConfigError(f"train.mode: unknown mode {config.train.mode!r}; choose from finetune, frozen")


def prepare_data(root_or_index, config: Config, *, device: torch.device, progress: bool,
                 emit: EventHook | None = None, spill: Path | None = None) -> Data:
    """Scan (if needed), extract frames (cached), and in frozen mode compute features (cached).
    With `spill` (a folder) each split's stacked features are written there as `<split>.npy` and read
    a batch at a time (`FeatureStore.load_split`): memory does not grow with the number of videos."""
    from videoseq.data.cache import FrameCache, extract_dataset
    from videoseq.models.encoders import build_encoder

    emit = emit or (lambda stage, fraction: None)
    check_mode(config)
    plan = extraction_plan(config)
    index = load_index(root_or_index, config, progress=progress)
    emit("scan", 1.0)
    torch.manual_seed(config.train.seed)          # random-init encoders are reproducible
    encoder = build_encoder(config.model.encoder, weights=config.model.weights, pooling=config.model.pooling,
                            input_size=config.model.input_size)
    if config.train.mode == "frozen":
        encoder.freeze()
    frame_cache = FrameCache(plan.frames_dir)
    # marks every video that fails to decode (or falls below min_frames) as skipped, with its reason
    extract_dataset(index, frame_cache, plan.sampling, size=plan.size, views=plan.train_views,
                    workers=config.runtime.workers, progress=progress,
                    timeout=config.runtime.timeout)
    emit("extract", 1.0)
    classes = list(index.classes)
    splits = {s: index.ok(s) for s in SPLITS}
    for name, entries in splits.items():
        if not entries:
            raise DatasetError(f"{index.root}: no usable videos in the {name} split")
    if config.train.mode == "frozen":
        from videoseq.data.features import FeatureStore
        from videoseq.models.streams import build_motion

        store = FeatureStore(plan.features_dir, encoder, device=device, motion=build_motion(config.model.motion),
                             engine=config.runtime.engine)
        feats = {s: store.load_split(e, frame_cache, plan.sampling, size=plan.size, views=plan.views(s),
                                     classes=classes, progress=progress,
                                     spill=None if spill is None else Path(spill) / f"{s}.npy")
                 for s, e in splits.items()}
        log.info("features: %d frames encoded, the rest from the cache", store.encoded_frames)
        emit("features", 1.0)
        return Data(index, classes, encoder, plan, feats["train"], feats["val"], feats["test"])
    clips = {s: ([e.path for e in entries], [classes.index(e.label) for e in entries])
             for s, entries in splits.items()}
    return Data(index, classes, encoder, plan, clips["train"], clips["val"], clips["test"])


def make_batches(data: Data, config: Config, *, seed: int) -> tuple:
    """(train, val, test) batch iterators, seeded; a random view per video per epoch in training."""
    from videoseq.data.batches import ClipBatches, FeatureBatches
    from videoseq.data.features import feature_stats

    bs = config.train.batch_size
    if config.train.mode == "frozen":
        norm = feature_stats(data.train)       # heads train on standardised features (folded in later)
        norm = keep_image_stream_raw(norm, config)
        return (FeatureBatches(data.train, batch_size=bs, shuffle=True, random_view=True, seed=seed,
                               normalize=norm),
                FeatureBatches(data.val, batch_size=bs, normalize=norm),
                FeatureBatches(data.test, batch_size=bs))
    from videoseq.data.cache import FrameCache

    plan, enc = data.plan, data.encoder
    cache = FrameCache(plan.frames_dir)
    common = dict(size=plan.size, input_size=enc.input_size, mean=enc.mean, std=enc.std,
                  batch_size=bs, workers=config.runtime.workers)
    return (ClipBatches(*data.train, cache, plan.sampling, views=plan.views("train"), shuffle=True,
                        random_view=True, seed=seed, **common),
            ClipBatches(*data.val, cache, plan.sampling, **common),
            ClipBatches(*data.test, cache, plan.sampling, **common))


def keep_image_stream_raw(norm: tuple[torch.Tensor, torch.Tensor], config: Config
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the features with the image stream's dimensions (the last ones, `rgbdiff`) set to
    0 and 1: a CNN reads them (heads.DiffCNN), so no Linear can fold their standardisation away."""
    from videoseq.models.streams import build_motion

    motion = build_motion(config.model.motion)
    if motion is None or motion.image_shape is None:
        return norm
    mean, std = norm[0].clone(), norm[1].clone()
    n = motion.out_dim - motion.vector_dim
    mean[-n:], std[-n:] = 0.0, 1.0
    return mean, std


def build_trainable(data: Data, config: Config, head: str, *, seed: int) -> torch.nn.Module:
    """A fresh head (frozen mode) or encoder + head (finetune), initialised from `seed`."""
    from videoseq.models.classifier import build_model, feature_dims, head_options
    from videoseq.models.heads import build_head
    from videoseq.models.streams import build_motion

    torch.manual_seed(seed)
    m = config.model
    if config.train.mode == "frozen":
        motion = build_motion(m.motion)
        in_dim, _ = feature_dims(data.encoder, motion)
        return build_head(head, in_dim, len(data.classes), **head_options(m, motion))
    return build_model(m, head, len(data.classes))


def whole_model(data: Data, config: Config, trained: torch.nn.Module) -> torch.nn.Module:
    """The trained model as a VideoClassifier (frames in): a frozen-mode head gets its encoder and
    motion stream back."""
    from videoseq.models.classifier import VideoClassifier
    from videoseq.models.streams import build_motion

    if config.train.mode == "finetune":
        return trained
    return VideoClassifier(data.encoder, trained, motion=build_motion(config.model.motion))
