"""The inbox ledger: one JSONL file of results, keyed by file content, that makes reruns idempotent.

Every video classified from an inbox adds one line to `results.jsonl`: the `videoseq classify --json`
record plus `digest` (content hash) and `time`. A broken video adds `{"path", "error", "digest"}`.
The ledger is the state: a video whose digest is already in it is never classified again (a broken
one is not retried until its content changes, e.g. a copy that was still being written completes).
Each line is written with a single `write` on an O_APPEND descriptor and fsynced, so concurrent or
killed runs leave whole lines; a torn last line from a crash is skipped when read.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable

logger = logging.getLogger(__name__)

LEDGER_DIR = ".videoseq"          # inside the inbox; hidden folders are never scanned for videos
LEDGER_NAME = "results.jsonl"
MAX_LINE_BYTES = 1 << 20          # one record; a longer line is skipped without being held in memory


def default_ledger(inbox: str | Path) -> Path:
    """Where the ledger of `inbox` lives: `<inbox>/.videoseq/results.jsonl` (hidden: never scanned)."""
    return Path(inbox) / LEDGER_DIR / LEDGER_NAME


def read_ledger(path: str | Path) -> dict[str, dict[str, Any]]:
    """digest -> the latest record for it. Missing file: empty. Unparseable lines (a torn last line,
    bytes that are not UTF-8, a line over MAX_LINE_BYTES) are skipped with a warning."""
    done: dict[str, dict[str, Any]] = {}
    p = Path(path)
    if not p.is_file():
        return done
    with p.open("rb") as f:
        for number, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(raw) > MAX_LINE_BYTES:
                while raw and not raw.endswith(b"\n"):      # the rest of the over-long line
                    raw = f.readline(MAX_LINE_BYTES + 1)
                logger.warning("%s:%d: skipping a line over %d bytes", p, number, MAX_LINE_BYTES)
                continue
            line = raw.strip()
            if not line:
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                logger.warning("%s:%d: skipping a torn line", p, number)
                continue
            if isinstance(record, dict) and isinstance(record.get("digest"), str):
                done[record["digest"]] = record
    return done


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line atomically with respect to other appenders, then fsync. A full disk (or
    another reason the ledger cannot be written) is a one-line OutputError naming the ledger; a
    partial line it may leave is skipped by `read_ledger`, and the next append starts a fresh line."""
    from videoseq.io.atomic import output_errors

    p = Path(path)
    data = (json.dumps(record, sort_keys=False) + "\n").encode("utf-8")
    with output_errors(p):
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and _last_byte(p) != b"\n":
                data = b"\n" + data        # a crash tore the previous line: start a fresh one
            written = os.write(fd, data)
            if written != len(data):    # the file system took part of it: it is full
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)", str(p))
            os.fsync(fd)
        finally:
            os.close(fd)


def _last_byte(p: Path) -> bytes:
    with p.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def list_videos(inbox: str | Path, extensions: Iterable[str], *, min_age: float = 0.0,
                now: float | None = None) -> list[Path]:
    """Video files under `inbox` (recursively, hidden folders skipped), sorted; files modified less
    than `min_age` seconds ago are left for the next run (they may still be being copied in)."""
    from videoseq.io.files import walk_videos

    now = time.time() if now is None else now
    found = []
    for path in walk_videos(inbox, extensions):
        age = now - path.stat().st_mtime
        if min_age > 0 and age < min_age:
            logger.info("%s: modified %.0f s ago, left for the next run", path, age)
            continue
        found.append(path)
    return found
