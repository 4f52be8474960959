"""`compare_heads`: train every head on the same frames/features, split, seeds, epochs and optimiser,
evaluate on the test split, and write the run directory (metrics.json, report.md, plots/, models/);
`train_bundle`: one head, one seed, saved as a bundle.

    metrics = compare_heads("data/composite", "runs/composite", load_config("configs/synthetic.yaml"))

Resumable: each (head, seed) trains with a per-epoch checkpoint under `RUN_DIR/runs/<head>/seed<k>/`,
features and frames come from the on-disk caches, so a killed compare rerun continues where it
stopped and ends with the same numbers.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from videoseq.config import Config
from videoseq.errors import ConfigError
from videoseq.learn import metrics as M
from videoseq.learn.prepare import EventHook, prepare_data, whole_model
from videoseq.learn.report import write_run
from videoseq.learn.runs import HeadRun, train_head
from videoseq.models.bundle import save_bundle
from videoseq.runtime import resolve_device

log = logging.getLogger(__name__)


def compare_heads(root_or_index, out_dir: str | Path, config: Config, *, progress: bool = True,
                  on_event: EventHook | None = None) -> dict:
    """Train and test `config.compare.heads` x `config.train.seeds`; write RUN_DIR; return metrics.json."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    heads = list(dict.fromkeys(config.compare.heads))
    if not heads:
        raise ConfigError("compare.heads: name at least one head, e.g. per_frame,lstm")
    out.mkdir(parents=True, exist_ok=True)
    emit: EventHook = on_event or (lambda stage, fraction: None)
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
