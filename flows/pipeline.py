"""The `pipeline` flow: scan -> prepare chunks of videos (frames + frozen features) -> compare heads ->
publish the report.

    from flows.pipeline import pipeline
    summary = pipeline(root="data/demo", run_dir="runs/demo", config="configs/demo.yaml", chunk_size=32)

Each step wraps a library function; the flow adds what orchestration is for:
- the heavy stage fans out one `prepare-chunk` task per `chunk_size` usable videos on the configured
  task runner (flows/runners.py: threads on one machine, Dask across machines): frame extraction and,
  in frozen mode, the frozen features (encoder + temporal streams) of its videos
  (`videoseq.learn.chunks.prepare_chunk`); a chunk whose record is in the caches (same file
  contents, views, sampling, encoder, streams, cache folder: `prepared_record`) is not sent to a
  worker at all, so a rerun with no new videos prepares nothing; transient errors (OSError,
  crashes) are retried, a broken video is reported by its chunk, marked failed in the index, and the
  flow goes on without it; compare-heads then finds every frame and feature cached and only trains
  and reports;
- a progress artifact during preparation and during training, then the markdown report and a table of
  the heads' metrics as artifacts; logs through `get_run_logger`;
- with `progress=True` (`videoseq run` and `videoseq demo` in a terminal), stage lines and progress
  bars on stderr as well: scan, chunks, feature loading, training per head.
Parameters and task inputs/outputs are JSON values and paths, never arrays.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.futures import as_completed
from tqdm import tqdm

from flows.runners import build_task_runner
from videoseq.commands.common import check_config
from videoseq.config import Config, config_from_dict, load_config
from videoseq.errors import ConfigError, VideoseqError
from videoseq.io.atomic import work_dir

RETRIES = 2                      # transient failures only (I/O hiccups, a crashed worker)
RETRY_DELAY_SECONDS = 2
# Videos per prepare-chunk task. 32 videos of 16 frames fill the encoder's batches on a GPU
# (FeatureStore batches frames across a chunk's clips) and amortise a task's fixed costs (state
# updates on the Prefect API, Dask scheduling, the encoder built once per worker), while 10,000 videos
# still give ~300 tasks to balance across workers and a failed chunk costs little to redo.
CHUNK_SIZE = 32


def _is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry unless the failure is bad input (a `VideoseqError`: a broken video stays broken)."""
    try:
        state.result()
    except VideoseqError:
        return False
    except Exception:
        return True
    return False


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
    get `sampling.train_views`, others 1), written as JSON `[[path, views], ...]` to `videos.json`
    beside the index (a dataset's list of files is a file, not a flow parameter: Prefect stores
    parameters with every run); returns that file's path, the video count, the frame size, the frame
    cache folder, and the index's min_frames (scan judged lengths by packet counts; extraction checks
    the decoded counts)."""
    from videoseq.data.dataset import DatasetIndex
    from videoseq.data.plan import extraction_plan
    from videoseq.io.atomic import atomic_write_json

    plan = extraction_plan(config_from_dict(config))
    index = DatasetIndex.from_json(index_path)
    entries = index.ok()
    videos = Path(index_path).with_name("videos.json")
    atomic_write_json(videos, [[e.path, plan.views(e.split)] for e in entries], indent=None)
    return {"videos_file": str(videos), "videos": len(entries), "size": plan.size,
            "cache_root": str(plan.frames_dir), "min_frames": index.min_frames}


def _chunk_run_name() -> str:
    from prefect.runtime import task_run

    videos = task_run.parameters["videos"]
    return f"chunk-{Path(videos[0][0]).name}+{len(videos) - 1}" if videos else "chunk-empty"


@task(name="prepare-chunk", task_run_name=_chunk_run_name, retries=RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS, retry_condition_fn=_is_transient)
def prepare_chunk_task(videos: list[list], config: dict[str, Any], min_frames: int = 1) -> dict[str, Any]:
    """Frames and (frozen mode) frozen features of a chunk of [path, views] pairs, on whichever worker
    runs it (`learn.chunks.prepare_chunk`); returns its JSON record (videos, frames encoded, clips
    streamed, failed [[path, reason]], pid, host, seconds). A broken video is a line in `failed`."""
    from videoseq.learn.chunks import prepare_chunk

    record = prepare_chunk([(str(p), int(v)) for p, v in videos], config_from_dict(config),
                           min_frames=min_frames).to_json()
    for path, reason in record["failed"]:
        get_run_logger().warning("%s: left out of the run: %s", path, reason)
    return record


@flow(name="prepare-videos")
def prepare_videos(videos_file: str, config: dict[str, Any], min_frames: int = 1,
                   chunk_size: int = CHUNK_SIZE, progress: bool = False) -> dict[str, Any]:
    """Fan out one `prepare-chunk` task per `chunk_size` videos of `videos_file` (JSON `[[path,
    views], ...]`, as `plan_extraction` writes it) on the flow's task runner. Returns
    {"chunks": [record], "extracted": n, "cached": n, "failed": [[path, reason]], "failed_chunks":
    [[first path, reason]]}: "cached" counts the videos of chunks that were Prefect cache hits or
    decoded nothing; the videos of a chunk whose task failed are left to compare-heads, which
    extracts and encodes whatever is missing."""
    from videoseq.learn.chunks import prepared_record

    logger = get_run_logger()
    cfg = config_from_dict(config)
    videos = [[str(p), int(v)] for p, v in json.loads(Path(videos_file).read_text())]
    paths = [p for p, _ in videos]
    chunks = [videos[i:i + chunk_size] for i in range(0, len(videos), max(1, chunk_size))]
    artifact = create_progress_artifact(0.0, key="extraction-progress",
                                        description=f"frames and features of {len(paths)} videos "
                                                    f"in {len(chunks)} chunks")
    outcome: dict[str, Any] = {"chunks": [], "extracted": 0, "cached": 0, "failed": [], "failed_chunks": []}
    todo = []
    for chunk in chunks:                # chunks already prepared are not sent to a worker at all
        record = prepared_record([(p, int(v)) for p, v in chunk], cfg, min_frames)
        if record is None:
            todo.append(chunk)
        else:
            outcome["chunks"].append(dict(record, cached_run=True))
            outcome["cached"] += record["videos"]
    if len(todo) < len(chunks):
        logger.info("%d of %d chunks already prepared (records in the cache)", len(chunks) - len(todo), len(chunks))
    futures = [prepare_chunk_task.submit(chunk, config, min_frames) for chunk in todo]
    chunk_of = {future.task_run_id: chunk for future, chunk in zip(futures, todo)}
    _stage(progress, f"extract and encode {len(paths)} videos in {len(chunks)} chunks"
                     + (f" ({len(chunks) - len(todo)} already prepared)" if len(todo) < len(chunks) else ""))
    bar = tqdm(total=len(paths), initial=len(paths) - sum(map(len, todo)), desc="prepare", unit="video",
               disable=not progress, leave=False)
    for done, future in enumerate(as_completed(futures), len(chunks) - len(todo) + 1):
        future.wait()
        state, chunk = future.state, chunk_of[future.task_run_id]
        bar.update(len(chunk))
        if state.is_completed():
            record = dict(future.result(), cached_run=False)
            outcome["chunks"].append(record)
            outcome["failed"].extend(record["failed"])
            fresh = 0 if record["cached_run"] else record["extracted"]
            outcome["extracted"] += fresh
            outcome["cached"] += record["videos"] - len(record["failed"]) - fresh
        else:
            error = state.result(raise_on_failure=False)
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            logger.warning("chunk of %d videos from %s failed (%s); compare-heads prepares them",
                           len(chunk), chunk[0][0], reason)
            outcome["failed_chunks"].append([chunk[0][0], reason])
        update_progress_artifact(artifact, 100.0 * done / max(1, len(chunks)))
    bar.close()
    if not todo:
        update_progress_artifact(artifact, 100.0)
    workers = sorted({(r["host"], r["pid"]) for r in outcome["chunks"] if not r["cached_run"]})
    logger.info("chunks: %d videos extracted, %d from the caches, %d failed; %d frames encoded by %d "
                "workers", outcome["extracted"], outcome["cached"], len(outcome["failed"]),
                sum(r["frames_encoded"] for r in outcome["chunks"] if not r["cached_run"]), len(workers))
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
def compare(index_path: str, run_dir: str, config: dict[str, Any], progress: bool = False,
            force: bool = False) -> dict[str, Any]:
    """Train and test every head on the prepared frames and features (RUN_DIR built from the same inputs
    is kept as it is, finished runs are reused, unless `force`: learn/reuse.py); returns {"metrics": path of
    RUN_DIR/metrics.json, "bytes_hashed": bytes of video files this step read to hash them (0 when the
    fingerprint store is shared with the chunks' workers)}."""
    from videoseq.data.dataset import DatasetIndex
    from videoseq.data.fingerprints import bytes_hashed
    from videoseq.learn.compare import compare_heads

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
    hashed = bytes_hashed()
    compare_heads(DatasetIndex.from_json(index_path), run_dir, cfg, progress=progress, on_event=on_event,
                  force=force)
    hashed = bytes_hashed() - hashed
    if hashed:
        logger.warning("compare: read %d bytes of videos to hash them: is the fingerprint store "
                       "(VIDEOSEQ_CACHE/fingerprints) shared with the workers?", hashed)
    return {"metrics": str(Path(run_dir) / "metrics.json"), "bytes_hashed": hashed}


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
def pipeline(root: str, run_dir: str, config: str | None = None, overrides: list[str] | None = None,
             progress: bool = False, chunk_size: int = CHUNK_SIZE, force: bool = False) -> dict[str, Any]:
    """Scan ROOT, prepare the videos in chunks of `chunk_size` on the task runner (frames and frozen
    features, cached), compare the heads, publish the report in RUN_DIR. `progress`: stage lines and
    progress bars on stderr too (for a terminal). A RUN_DIR already built from the same config and
    videos is kept and only published again; `force` trains every head again. The whole config is checked first (`ConfigError`
    naming the key, the value and the choices), before any task. The summary lists every chunk's
    record (`chunks`: videos, frames encoded, clips streamed, failed, pid, host, seconds)."""
    cfg: Config = load_config(config, overrides=list(overrides or []))
    check_config(cfg)                            # every value, before any task runs
    if chunk_size < 1:
        raise ConfigError(f"chunk_size: expected at least 1, got {chunk_size}")
    runner = build_task_runner(cfg.runtime)      # runtime.task_runner: a name of flows.runners.TASK_RUNNERS
    logger = get_run_logger()
    raw = cfg.to_dict()
    out = Path(run_dir).resolve()
    # the scan's index lives in the run's work folder: RUN_DIR itself is only ever replaced whole, by compare
    index_path = scan(str(Path(root).resolve()), raw, str(work_dir(out)), progress)
    plan = plan_extraction(index_path, raw)
    prepared = prepare_videos.with_options(task_runner=runner)(
        plan["videos_file"], raw, plan["min_frames"], chunk_size, progress)
    index_path = record_failures(index_path, prepared["failed"])
    compared = compare(index_path, str(out), raw, progress, force)
    metrics = publish(str(out), compared["metrics"])
    best = max(metrics["models"], key=lambda h: metrics["models"][h]["accuracy"])
    logger.info("run %s: best head %s (test accuracy %.3f)", out, best, metrics["models"][best]["accuracy"])
    return {"run_dir": str(out), "report": str(out / "report.md"), "metrics": str(out / "metrics.json"),
            "extracted": prepared["extracted"], "cached": prepared["cached"], "failed": prepared["failed"],
            "chunks": prepared["chunks"], "failed_chunks": prepared["failed_chunks"],
            "compare_bytes_hashed": compared["bytes_hashed"],
            "accuracy": {h: m["accuracy"] for h, m in metrics["models"].items()}}
