"""The `classify_inbox` flow: classify the videos in an inbox that have no result yet.

    find new videos (content hash not in the ledger) -> classify them with a bundle -> append results

Results go to `<inbox>/.videoseq/results.jsonl` (or `results=`), one `videoseq classify --json` record
per line plus its content digest; see flows/inbox.py for why a rerun does no work twice.
"""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.inbox import append_record, default_ledger, list_videos, read_ledger
from videoseq.config import INFERENCE_BATCH_SIZE, VIDEO_EXTENSIONS


@task(name="find-new-videos")
def find_new_videos(inbox: str, ledger: str, min_age: float) -> list[dict[str, str]]:
    """[{"path", "digest"}] for every video in `inbox` whose content is not in the ledger yet."""
    from videoseq.data.cache import file_digest

    logger = get_run_logger()
    if not Path(inbox).is_dir():
        raise NotADirectoryError(f"{inbox}: inbox folder not found")
    done = read_ledger(ledger)
    new, seen = [], set()
    for path in list_videos(inbox, VIDEO_EXTENSIONS, min_age=min_age):
        digest = file_digest(path)
        if digest in done or digest in seen:
            continue
        seen.add(digest)
        new.append({"path": str(path), "digest": digest})
    logger.info("%s: %d new video(s), %d already in the ledger", inbox, len(new), len(done))
    return new


@task(name="classify-videos")
def classify_videos(videos: list[dict[str, str]], bundle: str, ledger: str,
                    batch_size: int) -> list[dict[str, Any]]:
    """Classify `videos` with the bundle, appending each result to the ledger as soon as it exists."""
    from videoseq.models.bundle import load_bundle
    from videoseq.infer.predict import classify_paths, record_of

    logger = get_run_logger()
    model = load_bundle(bundle)
    digests = {v["path"]: v["digest"] for v in videos}
    records = []
    for item in classify_paths([v["path"] for v in videos], model, batch_size=batch_size):
        record = {**record_of(item), "digest": digests[str(item.path)],
                  "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        append_record(ledger, record)
        records.append(record)
        if "error" in record:
            logger.warning("%s: failed, recorded and not retried: %s", record["path"], record["error"])
        else:
            logger.info("%s: %s (%.2f)", record["path"], record["label"], record["score"])
    return records


@flow(name="classify_inbox")
def classify_inbox(inbox: str, bundle: str, results: str | None = None, min_age: float = 10.0,
                   batch_size: int = INFERENCE_BATCH_SIZE) -> dict[str, Any]:
    """Classify every video in `inbox` without a result yet; returns counts and the ledger path.

    `bundle` is a model bundle or a run directory; `min_age` (seconds) skips files still being written.
    """
    ledger = str(results or default_ledger(inbox))
    new = find_new_videos(inbox, ledger, min_age)
    records = classify_videos(new, bundle, ledger, batch_size) if new else []
    failed = [r for r in records if "error" in r]
    if records:
        create_table_artifact(
            key="inbox-results",
            table=[{"path": Path(r["path"]).name, "label": r.get("label", ""),
                    "score": round(r["score"], 3) if "score" in r else "", "error": r.get("error", "")}
                   for r in records],
            description=f"{len(records) - len(failed)} classified, {len(failed)} failed; ledger {ledger}")
    return {"ledger": ledger, "classified": len(records) - len(failed), "failed": len(failed)}
