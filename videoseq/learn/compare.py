"""`compare_heads`: train every head on the same frames/features, split, seeds, epochs and optimiser,
evaluate on the test split, and write the run directory (metrics.json, report.md, plots/, models/).

    metrics = compare_heads("data/composite", "runs/composite", load_config("configs/synthetic.yaml"))

Resumable: each (head, seed) trains with a per-epoch checkpoint under `RUN_DIR/runs/<head>/seed<k>/`,
features and frames come from the on-disk caches, so a killed compare rerun continues where it
stopped and ends with the same numbers.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import torch

from videoseq.config import Config, config_digest
from videoseq.errors import DatasetError
from videoseq.data.features import feature_stats, fold_input_normalization
from videoseq.learn.train import EvalResult, FitResult, evaluate, fit

log = logging.getLogger(__name__)

EventHook = Callable[[str, float], None]


class HeadRun(NamedTuple):
    head: str
    seed: int
    fit: FitResult
    test: EvalResult            # with per-step log-probs
    model: torch.nn.Module      # best weights loaded; a VideoClassifier in finetune mode, else the head


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_index(root_or_index, config: Config, *, progress: bool):
    """A DatasetIndex as given, or scanned from a dataset root."""
    from videoseq.data.dataset import DatasetIndex, scan_dataset

    if isinstance(root_or_index, DatasetIndex):
        return root_or_index
    return scan_dataset(root_or_index, config.data, workers=config.runtime.workers, progress=progress)


class Data(NamedTuple):
    """Everything the heads train and test on; identical for every head and seed of a run."""
    index: object
    classes: list[str]
    encoder: torch.nn.Module     # frozen mode: the one encoder; finetune: a template for input size/norm
    size: int                    # side of the cached frames
    train: object                # frozen: SplitFeatures; finetune: (paths, labels)
    val: object
    test: object


def prepare_data(root_or_index, config: Config, *, device: torch.device, progress: bool,
                 emit: EventHook) -> Data:
    """Scan (if needed), extract frames (cached), and in frozen mode compute features (cached)."""
    from videoseq.data.cache import FrameCache, default_cache_dir, extract_dataset
    from videoseq.models.encoders import build_encoder
    from videoseq.data.features import FeatureStore

    index = load_index(root_or_index, config, progress=progress)
    emit("scan", 1.0)
    torch.manual_seed(config.train.seed)          # random-init encoders are reproducible
    encoder = build_encoder(config.model.encoder, weights=config.model.weights, pooling=config.model.pooling,
                            input_size=config.model.input_size)
    if config.train.mode == "frozen":
        encoder.freeze()
    size = config.sampling.size or encoder.input_size
    views = max(1, config.sampling.train_views)
    cache_dir = Path(default_cache_dir(config.runtime))
    frame_cache = FrameCache(cache_dir / "frames")
    # marks every video that fails to decode (or falls below min_frames) as skipped, with its reason
    extract_dataset(index, frame_cache, config.sampling, size=size, views=views,
                    workers=config.runtime.workers, progress=progress)
    emit("extract", 1.0)
    classes = list(index.classes)
    splits = {s: index.ok(s) for s in ("train", "val", "test")}
    for name, entries in splits.items():
        if not entries:
            raise DatasetError(f"{index.root}: no usable videos in the {name} split")
    if config.train.mode == "frozen":
        from videoseq.models.motion import build_motion
        store = FeatureStore(cache_dir / "features", encoder, device=device,
                             motion=build_motion(config.model.motion))
        feats = {s: store.load_split(e, frame_cache, config.sampling, size=size,
                                     views=views if s == "train" else 1, classes=classes, progress=progress)
                 for s, e in splits.items()}
        log.info("features: %d frames encoded, the rest from the cache", store.encoded_frames)
        emit("features", 1.0)
        return Data(index, classes, encoder, size, feats["train"], feats["val"], feats["test"])
    if config.train.mode != "finetune":
        from videoseq.errors import ConfigError
        raise ConfigError(f"train.mode: unknown mode {config.train.mode!r}; choose from finetune, frozen")
    clips = {s: ([e.path for e in entries], [classes.index(e.label) for e in entries])
             for s, entries in splits.items()}
    return Data(index, classes, encoder, size, clips["train"], clips["val"], clips["test"])


def _batches(data: Data, config: Config, *, seed: int):
    """(train, val, test) batch iterators, seeded; a random view per video per epoch in training."""
    from videoseq.data.batches import ClipBatches, FeatureBatches

    bs = config.train.batch_size
    if config.train.mode == "frozen":
        norm = feature_stats(data.train)       # heads train on standardised features (folded in later)
        return (FeatureBatches(data.train, batch_size=bs, shuffle=True, random_view=True, seed=seed,
                               normalize=norm),
                FeatureBatches(data.val, batch_size=bs, normalize=norm),
                FeatureBatches(data.test, batch_size=bs))
    from videoseq.data.cache import FrameCache, default_cache_dir

    cache = FrameCache(Path(default_cache_dir(config.runtime)) / "frames")
    enc = data.encoder
    common = dict(size=data.size, input_size=enc.input_size, mean=enc.mean, std=enc.std,
                  batch_size=bs, workers=config.runtime.workers)
    views = max(1, config.sampling.train_views)
    return (ClipBatches(*data.train, cache, config.sampling, views=views, shuffle=True, random_view=True,
                        seed=seed, **common),
            ClipBatches(*data.val, cache, config.sampling, **common),
            ClipBatches(*data.test, cache, config.sampling, **common))


def build_trainable(data: Data, config: Config, head: str, *, seed: int) -> torch.nn.Module:
    """A fresh head (frozen mode) or encoder + head (finetune), initialised from `seed`."""
    from videoseq.models.heads import build_head
    from videoseq.models.classifier import build_model, feature_dims
    from videoseq.models.motion import build_motion

    torch.manual_seed(seed)
    m = config.model
    if config.train.mode == "frozen":
        in_dim, motion_dim = feature_dims(data.encoder, build_motion(m.motion))
        return build_head(head, in_dim, len(data.classes), hidden=m.hidden, layers=m.layers,
                          dropout=m.dropout, bidirectional=m.bidirectional, motion_dim=motion_dim,
                          stream_dropout=m.stream_dropout)
    return build_model(m, head, len(data.classes))


def whole_model(data: Data, config: Config, trained: torch.nn.Module) -> torch.nn.Module:
    """The trained model as a VideoClassifier (frames in): a frozen-mode head gets its encoder and
    motion stream back."""
    from videoseq.models.classifier import VideoClassifier
    from videoseq.models.motion import build_motion

    if config.train.mode == "finetune":
        return trained
    return VideoClassifier(data.encoder, trained, motion=build_motion(config.model.motion))


def run_fingerprint(data: Data, config: Config, head: str, seed: int) -> str:
    """Names one training run: what it learns from and how. Resume only from the same fingerprint."""
    cfg = config.to_dict()
    cfg.pop("runtime")
    cfg.pop("compare")
    entries = sorted((e.path, e.label, e.split) for e in data.index.ok())
    return config_digest({"config": cfg, "head": head, "seed": seed, "classes": data.classes, "data": entries})


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with `n` intra-op threads (None: leave as is)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_head(data: Data, config: Config, head: str, seed: int, run_dir: Path, *, device: torch.device,
               progress: bool, on_epoch: Callable[[dict], None] | None = None) -> HeadRun:
    """Train one head with one seed (resuming from its checkpoint), then test its best weights.

    Heads on cached features are tiny: one CPU thread is faster than several (measured 0.13 s vs
    1.8 s per LSTM step on a busy 2-core machine), so frozen mode trains single-threaded on CPU.
    """
    single = config.train.mode == "frozen" and device.type == "cpu"
    with torch_threads(1 if single else None):
        return _train_head(data, config, head, seed, run_dir, device=device, progress=progress,
                           on_epoch=on_epoch)


def _train_head(data: Data, config: Config, head: str, seed: int, run_dir: Path, *, device: torch.device,
                progress: bool, on_epoch: Callable[[dict], None] | None) -> HeadRun:
    train_b, val_b, test_b = _batches(data, config, seed=seed)
    model = build_trainable(data, config, head, seed=seed)
    result = fit(model, train_b, val_b, config.train, device=device, progress=progress, on_epoch=on_epoch,
                 checkpoint=run_dir / "runs" / head / f"seed{seed}" / "checkpoint.pt",
                 fingerprint=run_fingerprint(data, config, head, seed))
    model.load_state_dict(result.best_state)
    if config.train.mode == "frozen":
        fold_input_normalization(model, *train_b.normalize)   # the head now takes raw features
    test = evaluate(model, test_b, device=device, steps=True)
    log.info("%s seed %d: val %.3f (epoch %d), test %.3f", head, seed, result.best_val_accuracy,
             result.best_epoch, test.accuracy)
    return HeadRun(head, seed, result, test, model)


def compare_heads(root_or_index, out_dir: str | Path, config: Config, *, progress: bool = True,
                  on_event: EventHook | None = None) -> dict:
    """Train and test `config.compare.heads` x `config.train.seeds`; write RUN_DIR; return metrics.json."""
    from videoseq.learn.report import write_run

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    emit: EventHook = on_event or (lambda stage, fraction: None)
    heads = list(dict.fromkeys(config.compare.heads))
    if not heads:
        from videoseq.errors import ConfigError
        raise ConfigError("compare.heads: name at least one head, e.g. per_frame,lstm")
    device = resolve_device(config.runtime.device)
    data = prepare_data(root_or_index, config, device=device, progress=progress, emit=emit)
    data.index.to_json(out / "index.json")
    seeds = [config.train.seed + k for k in range(max(1, config.train.seeds))]
    runs: dict[str, list[HeadRun]] = {h: [] for h in heads}
    total, done = len(heads) * len(seeds), 0
    for seed in seeds:
        for head in heads:
            def on_epoch(row: dict, _done: int = done) -> None:
                emit("train", min(1.0, (_done + row["epoch"] / config.train.epochs) / total))
            runs[head].append(train_head(data, config, head, seed, out, device=device, progress=progress,
                                         on_epoch=on_epoch))
            done += 1
            emit("train", done / total)
    metrics = write_run(out, data=data, runs=runs, config=config, seconds=time.perf_counter() - t0)
    emit("report", 1.0)
    return metrics


def train_bundle(root_or_index, dest: str | Path, config: Config, *, head: str, progress: bool = True,
                 on_event: EventHook | None = None) -> dict:
    """`videoseq train`: one head, the first seed, saved as a bundle at `dest`; returns its metrics."""
    import shutil

    from videoseq.learn import metrics as M
    from videoseq.models.bundle import save_bundle

    emit: EventHook = on_event or (lambda stage, fraction: None)
    dest = Path(dest)
    device = resolve_device(config.runtime.device)
    data = prepare_data(root_or_index, config, device=device, progress=progress, emit=emit)
    work = dest.parent / f".{dest.name}.work"       # checkpoints: a killed train resumes from here
    run = train_head(data, config, head, config.train.seed, work, device=device, progress=progress,
                     on_epoch=lambda row: emit("train", row["epoch"] / config.train.epochs))
    y, pred = run.test.labels, run.test.logits.argmax(1)
    acc = M.accuracy(y, pred)
    result = {"head": head, "seed": run.seed, "val_accuracy": run.fit.best_val_accuracy,
              "test_accuracy": acc, "accuracy_ci95": list(M.wilson_interval(int((y == pred).sum()), len(y))),
              "mean_class_accuracy": M.mean_class_accuracy(y, pred, len(data.classes)),
              "best_epoch": run.fit.best_epoch, "epochs": len(run.fit.history),
              "train_seconds": run.fit.seconds, "classes": data.classes}
    save_bundle(dest, model=whole_model(data, config, run.model).cpu().eval(), head=head, config=config,
                classes=data.classes, metrics=result)
    shutil.rmtree(work, ignore_errors=True)
    emit("report", 1.0)
    return result
