"""The `pipeline` flow: scan -> extract (one cached task per video) -> compare heads -> publish the report.

    from flows.pipeline import pipeline
    summary = pipeline(root="data/demo", run_dir="runs/demo", config="configs/demo.yaml")

Each step wraps a library function; the flow adds what orchestration is for:
- extraction fans out one task per usable video on the configured task runner (flows/runners.py),
  cached by (file content, sampling parameters, frame size, views, cache folder): a rerun with no new
  videos extracts nothing; transient errors (OSError, crashes) are retried, a broken video fails its
  own task only, is marked failed in the index, and the flow goes on without it;
- a progress artifact during extraction and during training, then the markdown report and a table of
  the heads' metrics as artifacts; logs through `get_run_logger`;
- with `progress=True` (`videoseq run` and `videoseq demo` in a terminal), stage lines and progress
  bars on stderr as well: scan, extraction, feature encoding, training per head.
Parameters and task inputs/outputs are JSON values and paths, never arrays.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.futures import as_completed
from tqdm import tqdm

from flows.runners import build_task_runner
from videoseq.commands.common import check_config
from videoseq.config import Config, SamplingConfig, config_digest, config_from_dict, load_config
from videoseq.errors import VideoseqError
from videoseq.io.atomic import work_dir

RETRIES = 2                      # transient failures only (I/O hiccups, a crashed worker)
RETRY_DELAY_SECONDS = 2


def _is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry unless the failure is bad input (a `VideoseqError`: a broken video stays broken)."""
    try:
        state.result()
    except VideoseqError:
        return False
    except Exception:
        return True
    return False


def _extract_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Same file content + sampling + size + views + frame cache folder = same clips: reuse the result."""
    from videoseq.data.cache import file_digest

    try:
        digest = file_digest(parameters["path"])
    except OSError:
        return None          # unreadable: no caching; the task itself reports the error
    return "videoseq-frames-" + config_digest({
        "file": digest, "sampling": parameters["sampling"],
        "size": parameters["size"], "views": parameters["views"], "cache": parameters["cache_root"],
        "min_frames": parameters.get("min_frames", 1)})


def _extract_run_name() -> str:
    from prefect.runtime import task_run

    return f"extract-{Path(task_run.parameters['path']).name}"


def _stage(progress: bool, text: str) -> None:
    """A stage line on stderr for a person watching the terminal (the run logs get their own)."""
    if progress:
        from tqdm import tqdm

        tqdm.write(f"videoseq: {text}", file=sys.stderr)


@task(name="scan-dataset")
def scan(root: str, config: dict[str, Any], work: str, progress: bool = False) -> str:
    """Index and validate the dataset; returns the path of WORK/index.json (the run's work folder)."""
    from videoseq.data.dataset import scan_dataset

    cfg = config_from_dict(config)
    _stage(progress, f"scan {root}")
    index = scan_dataset(root, cfg.data, workers=cfg.runtime.workers, progress=progress,
                         timeout=cfg.runtime.timeout)
    _stage(progress, f"scan: {len(index.ok())} usable videos in {len(index.classes)} classes, "
                     f"{len(index.skipped())} skipped")
    logger = get_run_logger()
    logger.info("%s: %d usable videos in %d classes, %d skipped", root, len(index.ok()),
                len(index.classes), len(index.skipped()))
    for entry in index.skipped():
        logger.warning("skipped %s: %s", entry.path, entry.status)
    return str(index.to_json(Path(work) / "index.json"))


@task(name="plan-extraction")
def plan_extraction(index_path: str, config: dict[str, Any]) -> dict[str, Any]:
    """What to extract, exactly as compare will read it: usable videos with their views (train videos
    get `sampling.train_views`, others 1), the frame size, the frame cache folder, and the index's
    min_frames (scan judged lengths by packet counts; extraction checks the decoded counts)."""
    from videoseq.data.dataset import DatasetIndex
    from videoseq.data.plan import extraction_plan

    plan = extraction_plan(config_from_dict(config))
    index = DatasetIndex.from_json(index_path)
    entries = index.ok()
    return {"paths": [e.path for e in entries], "views": [plan.views(e.split) for e in entries],
            "size": plan.size, "cache_root": str(plan.frames_dir),
            "min_frames": index.min_frames}


@task(name="extract-frames", task_run_name=_extract_run_name, cache_key_fn=_extract_cache_key,
      retries=RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS, retry_condition_fn=_is_transient)
def extract_video(path: str, views: int, sampling: dict[str, Any], size: int, cache_root: str,
                  min_frames: int = 1) -> int:
    """Decode and cache the sampled frames of one video, views 0..views-1; returns how many clips were
    decoded now (0: all were in the frame cache already). Fails (VideoReadError, not retried) when the
    video decodes to fewer than `min_frames` frames."""
    from videoseq.data.cache import FrameCache

    cache, params = FrameCache(cache_root), SamplingConfig(**sampling)
    return sum(not cache.ensure(path, params, size=size, view=v, min_frames=min_frames)
               for v in range(views))  # clips stay on disk


@flow(name="extract-videos")
def extract_videos(paths: list[str], views: list[int], sampling: dict[str, Any], size: int,
                   cache_root: str, min_frames: int = 1, progress: bool = False) -> dict[str, list]:
    """Fan out one `extract_video` per path. Returns {"extracted": [path], "cached": [path],
    "failed": [[path, reason]]}; "cached" = the task itself was a Prefect cache hit or found every clip
    in the frame cache."""
    logger = get_run_logger()
    artifact = create_progress_artifact(0.0, key="extraction-progress",
                                        description=f"frames of {len(paths)} videos")
    futures = extract_video.map(paths, views, unmapped(sampling), unmapped(size), unmapped(cache_root),
                                unmapped(min_frames))
    path_of = {future.task_run_id: path for future, path in zip(futures, paths)}
    outcome: dict[str, list] = {"extracted": [], "cached": [], "failed": []}
    _stage(progress, f"extract frames of {len(paths)} videos")
    bar = tqdm(total=len(paths), desc="extract", unit="video", disable=not progress, leave=False)
    for done, future in enumerate(as_completed(futures), 1):
        bar.update()
        future.wait()
        state, path = future.state, path_of[future.task_run_id]
        if state.is_completed():
            fresh = state.name != "Cached" and future.result() > 0
            outcome["extracted" if fresh else "cached"].append(path)
        else:
            error = state.result(raise_on_failure=False)
            reason = getattr(error, "reason", None) or str(error).splitlines()[0]
            logger.warning("%s: extraction failed, left out of the run: %s", path, reason)
            outcome["failed"].append([path, reason])
        update_progress_artifact(artifact, 100.0 * done / max(1, len(paths)))
    bar.close()
    if not paths:
        update_progress_artifact(artifact, 100.0)
    logger.info("frames: %d videos extracted, %d from the cache, %d failed", len(outcome["extracted"]),
                len(outcome["cached"]), len(outcome["failed"]))
    return outcome


@task(name="record-failures")
def record_failures(index_path: str, failed: list[list[str]]) -> str:
    """Mark videos whose extraction failed in the index, so compare leaves them out and reports them."""
    from videoseq.data.dataset import DatasetIndex

    if failed:
        index = DatasetIndex.from_json(index_path)
        for path, reason in failed:
            index.mark_failed(path, reason)
        index.to_json(index_path)
    return index_path


@task(name="compare-heads")
def compare(index_path: str, run_dir: str, config: dict[str, Any], progress: bool = False) -> str:
    """Train and test every head on the extracted frames; returns the path of RUN_DIR/metrics.json."""
    from videoseq.learn.compare import compare_heads
    from videoseq.data.dataset import DatasetIndex

    logger = get_run_logger()
    cfg = config_from_dict(config)
    artifact = create_progress_artifact(0.0, key="training-progress",
                                        description=f"heads {', '.join(cfg.compare.heads)}")
    last = [0.0]

    def on_event(stage: str, fraction: float) -> None:
        if stage == "train" and fraction - last[0] >= 0.02 or stage == "report":
            last[0] = fraction if stage == "train" else 1.0
            update_progress_artifact(artifact, 100.0 * last[0])
        if stage != "train":
            logger.info("compare: %s done", stage)
            _stage(progress, f"compare: {stage} done")

    _stage(progress, f"compare heads {', '.join(cfg.compare.heads)} ({cfg.train.mode} encoder, "
                     f"{max(1, cfg.train.seeds)} seed(s))")
    compare_heads(DatasetIndex.from_json(index_path), run_dir, cfg, progress=progress, on_event=on_event)
    return str(Path(run_dir) / "metrics.json")


@task(name="publish-report")
def publish(run_dir: str, metrics_path: str) -> dict[str, Any]:
    """The report and the metrics table as Prefect artifacts; returns metrics.json's content."""
    from videoseq.models.bundle import read_run_metrics

    metrics = read_run_metrics(Path(metrics_path).parent)
    report = Path(run_dir) / "report.md"
    create_markdown_artifact(key="videoseq-report", description=f"{report}",
                             markdown=report.read_text() if report.is_file() else f"(no report at {report})")
    rows = [{"head": head, "accuracy": round(m["accuracy"], 4),
             "ci95": "[{:.3f}, {:.3f}]".format(*m["accuracy_ci95"]),
             "mean_class_accuracy": round(m["mean_class_accuracy"], 4),
             "frame_accuracy": None if m.get("frame_accuracy") is None else round(m["frame_accuracy"], 4),
             "train_seconds": round(m["train_seconds"], 1)}
            for head, m in metrics["models"].items()]
    create_table_artifact(key="videoseq-metrics", table=rows, description=f"test split of {run_dir}")
    skipped = metrics.get("dataset", {}).get("skipped", [])
    if skipped:
        create_table_artifact(key="videoseq-skipped", table=skipped,
                              description="videos left out of the run, with the reason")
    return metrics


@flow(name="pipeline")
def pipeline(root: str, run_dir: str, config: str | None = None,
             overrides: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Scan ROOT, extract frames (cached per video), compare the heads, publish the report in RUN_DIR.
    `progress`: stage lines and progress bars on stderr too (for a terminal). The whole config is
    checked first (`ConfigError` naming the key, the value and the choices), before any task."""
    cfg: Config = load_config(config, overrides=list(overrides or []))
    check_config(cfg)                            # every value, before any task runs
    runner = build_task_runner(cfg.runtime)      # runtime.task_runner: a name of flows.runners.TASK_RUNNERS
    logger = get_run_logger()
    raw = cfg.to_dict()
    out = Path(run_dir).resolve()
    # the scan's index lives in the run's work folder: RUN_DIR itself is only ever replaced whole, by compare
    index_path = scan(str(Path(root).resolve()), raw, str(work_dir(out)), progress)
    plan = plan_extraction(index_path, raw)
    frames = extract_videos.with_options(task_runner=runner)(
        plan["paths"], plan["views"], raw["sampling"], plan["size"], plan["cache_root"], plan["min_frames"],
        progress)
    index_path = record_failures(index_path, frames["failed"])
    metrics = publish(str(out), compare(index_path, str(out), raw, progress))
    best = max(metrics["models"], key=lambda h: metrics["models"][h]["accuracy"])
    logger.info("run %s: best head %s (test accuracy %.3f)", out, best, metrics["models"][best]["accuracy"])
    return {"run_dir": str(out), "report": str(out / "report.md"), "metrics": str(out / "metrics.json"),
            "extracted": len(frames["extracted"]), "cached": len(frames["cached"]),
            "failed": frames["failed"], "accuracy": {h: m["accuracy"] for h, m in metrics["models"].items()}}
