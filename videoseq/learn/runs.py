"""One training run: one head, one seed, resumable from its per-epoch checkpoint, then tested.

    run = train_head(data, config, "lstm", seed=0, run_dir=Path("runs/.x.work"), device=device, progress=False)
    run.test.accuracy, run.fit.best_epoch

A run's checkpoint lives at `<run_dir>/runs/<head>/seed<k>/checkpoint.pt`, `run_dir` being the work
folder of the run directory or bundle being built (`io.atomic.work_dir`), and is only resumed by a run
with the same fingerprint (same config, head, seed, classes and videos).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from videoseq.config import Config, config_digest
from videoseq.data.features import fold_input_normalization
from videoseq.learn.prepare import Data, build_trainable, make_batches
from videoseq.learn.reuse import results_config
from videoseq.learn.train import EvalResult, FitResult, evaluate, fit
from videoseq.runtime import torch_threads

log = logging.getLogger(__name__)


class HeadRun(NamedTuple):
    """One trained and tested (head, seed)."""
    head: str
    seed: int
    fit: FitResult
    test: EvalResult            # with per-step log-probs
    model: torch.nn.Module      # best weights loaded; a VideoClassifier in finetune mode, else the head


def run_fingerprint(data: Data, config: Config, head: str, seed: int, *, device: str,
                    model: torch.nn.Module | None = None) -> str:
    """Names one training run: what it learns from and how (the config as it bears on the numbers,
    head, seed, classes, and each usable video's path, label, split and content digest) and, given the
    model, the name and shape of every tensor of its state (a checkpoint written by a version of the
    code whose model the same config builds differently is then not resumed: it would not load).
    Resume or reuse only from the same fingerprint."""
    from videoseq.data.cache import file_digest

    cfg = results_config(config, device)
    cfg.pop("compare")
    entries = sorted((e.path, e.label, e.split, file_digest(e.path)) for e in data.index.ok())
    named = {"config": cfg, "head": head, "seed": seed, "classes": data.classes, "data": entries}
    if model is not None:
        named["state"] = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    return config_digest(named)


def train_head(data: Data, config: Config, head: str, seed: int, run_dir: Path, *, device: torch.device,
               progress: bool, on_epoch: Callable[[dict], None] | None = None) -> HeadRun:
    """Train one head with one seed (resuming from its checkpoint under `run_dir`), then test its best
    weights.

    Heads on cached features are tiny, and one CPU thread runs them faster than several
    (docs/benchmarks/train.md), so frozen mode trains single-threaded on a CPU.
    """
    single = config.train.mode == "frozen" and device.type == "cpu"
    with torch_threads(1 if single else None):
        train_b, val_b, test_b = make_batches(data, config, seed=seed)
        model = build_trainable(data, config, head, seed=seed)
        result = fit(model, train_b, val_b, config.train, device=device, progress=progress, on_epoch=on_epoch,
                     checkpoint=run_dir / "runs" / head / f"seed{seed}" / "checkpoint.pt",
                     fingerprint=run_fingerprint(data, config, head, seed, device=device.type, model=model))
        model.load_state_dict(result.best_state)
        if config.train.mode == "frozen":
            fold_input_normalization(model, *train_b.normalize)   # the head now takes raw features
        test = evaluate(model, test_b, device=device, steps=True)
    log.info("%s seed %d: val %.3f (epoch %d), test %.3f", head, seed, result.best_val_accuracy,
             result.best_epoch, test.accuracy)
    return HeadRun(head, seed, result, test, model)
