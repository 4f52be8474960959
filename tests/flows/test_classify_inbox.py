"""The inbox flow: classify what is new, record it by content hash, never do the same work twice."""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from flows.inbox import append_record, list_videos, read_ledger

KEYS = {"path", "label", "score", "probs", "head", "frames", "seconds", "digest", "time"}


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_reruns_classify_only_new_content_and_broken_files_are_not_retried(tmp_path, tiny_bundle, make_clip):
    from flows.classify_inbox import classify_inbox

    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    make_clip(inbox / "a.avi", level=40, seed=1)
    make_clip(inbox / "sub" / "b.avi", level=200, seed=2)
    (inbox / "broken.mp4").write_text("not a video\n")
    (inbox / "notes.txt").write_text("ignored: not a video suffix\n")
    ledger = inbox / ".videoseq" / "results.jsonl"

    first = classify_inbox(str(inbox), str(tiny_bundle), min_age=0)
    assert first == {"ledger": str(ledger), "classified": 2, "failed": 1}
    records = {os.path.basename(r["path"]): r for r in _lines(ledger)}
    assert set(records) == {"a.avi", "b.avi", "broken.mp4"}
    assert KEYS <= set(records["a.avi"]) and records["a.avi"]["label"] in ("dark", "bright")
    assert set(records["broken.mp4"]) == {"path", "error", "digest", "time"} and records["broken.mp4"]["error"]

    shutil.copy(inbox / "a.avi", inbox / "a-copy.avi")             # same content, new name: already done
    assert classify_inbox(str(inbox), str(tiny_bundle), min_age=0)["classified"] == 0
    assert len(_lines(ledger)) == 3                                 # nothing appended, broken not retried

    make_clip(inbox / "c.avi", level=200, seed=3)                   # new video
    make_clip(inbox / "broken.mp4", level=40, seed=4)               # the broken file, now complete
    third = classify_inbox(str(inbox), str(tiny_bundle), min_age=0)
    assert (third["classified"], third["failed"]) == (2, 0)
    assert sorted(os.path.basename(r["path"]) for r in _lines(ledger)[3:]) == ["broken.mp4", "c.avi"]


def test_ledger_survives_a_torn_last_line(tmp_path):
    ledger = tmp_path / "results.jsonl"
    append_record(ledger, {"path": "a.mp4", "label": "x", "digest": "d1"})
    with ledger.open("a") as f:
        f.write('{"path": "b.mp4", "lab')                          # a crash mid-write
    assert set(read_ledger(ledger)) == {"d1"}
    append_record(ledger, {"path": "c.mp4", "error": "cannot open", "digest": "d3"})
    assert set(read_ledger(ledger)) == {"d1", "d3"}
    assert ledger.read_text().endswith('"digest": "d3"}\n')


def test_files_still_being_written_wait_for_the_next_run(tmp_path, make_clip):
    make_clip(tmp_path / "old.avi", level=40)
    make_clip(tmp_path / "fresh.avi", level=40)
    (tmp_path / ".hidden").mkdir()
    make_clip(tmp_path / ".hidden" / "x.avi", level=40)
    past = time.time() - 60
    os.utime(tmp_path / "old.avi", (past, past))
    assert [p.name for p in list_videos(tmp_path, [".avi"], min_age=10)] == ["old.avi"]
    assert [p.name for p in list_videos(tmp_path, [".avi"])] == ["fresh.avi", "old.avi"]
