"""`compare_heads`: train every head on the same frames/features, split, seeds, epochs and optimiser,
evaluate on the test split, and write the run directory (metrics.json, report.md, plots/, models/);
`train_bundle`: one head, one seed, saved as a bundle.

    metrics = compare_heads("data/composite", "runs/composite", load_config("configs/synthetic.yaml"))

Kill-safe and resumable: everything is built in the work folder `.RUN_DIR.work` beside RUN_DIR
(`io.atomic.work_dir`): index.json, a per-epoch checkpoint per (head, seed) under
`runs/<head>/seed<k>/`, then the finished run directory in `run.XXXX.tmp/`, which `replace_dir` swaps
into RUN_DIR in one step; the work folder is removed after that. RUN_DIR is thus at every instant absent,
the previous complete run or the new one. Features and frames come from the on-disk caches, so a
killed compare rerun continues from the work folder where it stopped and ends with the same numbers.

Nothing done is done again (`learn.reuse`): a compare whose inputs (config, heads, seeds, videos and
their content) are those of the complete run already in RUN_DIR returns its metrics and changes
nothing; otherwise the finished (head, seed) runs kept in RUN_DIR/runs/ whose fingerprint still holds
are reused without training, and only the others are trained. `force=True` trains everything again.
`train_bundle` follows the same protocol with `.BUNDLE.work` and the bundle.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from videoseq.config import Config
from videoseq.errors import ConfigError, OutputError
from videoseq.io.atomic import check_replaceable, output_errors, recover_dir, replace_dir, work_dir
from videoseq.learn import metrics as M
from videoseq.learn.prepare import EventHook, load_index, prepare_data, whole_model
from videoseq.learn.report import write_run
from videoseq.learn.reuse import inputs_key, keep_runs, seed_work, up_to_date
from videoseq.learn.runs import HeadRun, train_head
from videoseq.models.bundle import FILES as BUNDLE_FILES, save_bundle
from videoseq.runtime import resolve_device

log = logging.getLogger(__name__)

# What a run directory holds (and `videoseq demo`'s timelines/): a folder with other names is never
# replaced, so nothing else is ever deleted.
RUN_ENTRIES = ("metrics.json", "report.md", "plots", "models", "index.json", "runs", "timelines")


def prepare_work(dest: Path, allowed: tuple[str, ...], *, what: str) -> Path:
    """Check that `dest` may be replaced, finish a swap killed halfway, and create its work folder."""
    recover_dir(dest)
    check_replaceable(dest, allowed, what=what)
    work = work_dir(dest)
    with _named_after(dest, work), output_errors(work):
        work.mkdir(parents=True, exist_ok=True)
    return work


def compare_heads(root_or_index, out_dir: str | Path, config: Config, *, progress: bool = True,
                  on_event: EventHook | None = None, force: bool = False) -> dict:
    """Train and test `config.compare.heads` x `config.train.seeds`; write RUN_DIR; return metrics.json.
    RUN_DIR already built from the same inputs is returned as it is unless `force`."""
    t0 = time.perf_counter()
    out = Path(os.path.abspath(out_dir))
    heads = list(dict.fromkeys(config.compare.heads))
    if not heads:
        raise ConfigError("compare.heads: name at least one head, e.g. per_frame,lstm")
    emit: EventHook = on_event or (lambda stage, fraction: None)
    device = resolve_device(config.runtime.device)
    seeds = [config.train.seed + k for k in range(max(1, config.train.seeds))]
    recover_dir(out)
    check_replaceable(out, RUN_ENTRIES, what="run directory")      # before any work
    index = load_index(root_or_index, config, progress=progress)
    key = inputs_key(index, config, heads, seeds, device=device.type)
    done = None if force else up_to_date(out, key, heads)
    if done is not None:
        log.info("%s is up to date (same config, heads, seeds and videos): nothing to do", out)
        shutil.rmtree(work_dir(out), ignore_errors=True)     # a killed attempt's leftovers, if any
        emit("report", 1.0)
        return done
    work = prepare_work(out, RUN_ENTRIES, what="run directory")
    with _named_after(out, work):
        if not force:
            with output_errors(work):
                seed_work(out, work)
        metrics = _build_run(index, out, work, config, heads, seeds, key=key, device=device,
                             progress=progress, emit=emit, t0=t0)
    shutil.rmtree(work, ignore_errors=True)
    emit("report", 1.0)
    return metrics


def _build_run(index, out: Path, work: Path, config: Config, heads: list[str], seeds: list[int], *,
               key: str, device, progress: bool, emit: EventHook, t0: float) -> dict:
    """Train every (head, seed) with checkpoints in `work`, assemble the run directory in a fresh folder
    inside `work` and swap it into `out`; return the metrics."""
    data = prepare_data(index, config, device=device, progress=progress, emit=emit, spill=work / "features")
    data.index.to_json(work / "index.json")
    runs: dict[str, list[HeadRun]] = {h: [] for h in heads}
    total, done = len(heads) * len(seeds), 0
    for seed in seeds:
        for head in heads:
            def on_epoch(row: dict, _done: int = done) -> None:
                emit("train", min(1.0, (_done + row["epoch"] / config.train.epochs) / total))
            runs[head].append(train_head(data, config, head, seed, work, device=device, progress=progress,
                                         on_epoch=on_epoch))
            done += 1
            emit("train", done / total)
    with output_errors(work):               # the new run directory, assembled whole before the swap
        staged = Path(tempfile.mkdtemp(dir=work, prefix="run.", suffix=".tmp"))
    data.index.to_json(staged / "index.json")
    metrics = write_run(staged, data=data, runs=runs, config=config, seconds=time.perf_counter() - t0,
                        extra={"inputs_key": key})
    with output_errors(work):
        keep_runs(work, staged, [(h, s) for h in heads for s in seeds])
    replace_dir(staged, out)
    return metrics


@contextmanager
def _named_after(dest: Path, work: Path) -> Iterator[None]:
    """An OutputError about a file inside `work` names `dest`, the folder the user asked for."""
    try:
        yield
    except OutputError as e:
        if Path(e.path) == work or Path(e.path).is_relative_to(work):
            raise OutputError(dest, e.reason) from None
        raise


def train_bundle(root_or_index, dest: str | Path, config: Config, *, head: str, progress: bool = True,
                 on_event: EventHook | None = None) -> dict:
    """`videoseq train`: one head, the first seed, saved as a bundle at `dest`; returns its metrics."""
    emit: EventHook = on_event or (lambda stage, fraction: None)
    dest = Path(os.path.abspath(dest))
    work = prepare_work(dest, BUNDLE_FILES, what="model bundle")   # checkpoints: a killed train resumes
    device = resolve_device(config.runtime.device)
    data = prepare_data(root_or_index, config, device=device, progress=progress, emit=emit,
                        spill=work / "features")
    with _named_after(dest, work):
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
