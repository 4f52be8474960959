"""Dataset layouts, index, splits and `videoseq scan`, on tiny real videos written by OpenCV."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from media import (truncate, write_audio_only, write_empty, write_faststart_mp4, write_opencv,
                   write_text)
from videoseq.cli import main
from videoseq.config import DataConfig
from videoseq.io.decode import index_packets
from videoseq.data.dataset import DatasetIndex, scan_dataset
from videoseq.errors import DatasetError, OutputError
from videoseq.io.pool import JobCrash, JobTimeout, run_jobs
from videoseq.data.splits import SplitItem, make_splits
from videoseq.io.video import iter_frames

REPO = Path(__file__).resolve().parents[1]
FRACTIONS = {"val": 0.15, "test": 0.15}


def video(path: Path, frames: int = 5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_opencv(path, count=frames, width=32, height=24)


def class_folders(root: Path, per_class: dict[str, int], *, prefix: str = "") -> Path:
    for label, n in per_class.items():
        for i in range(n):
            video(root / prefix / label / f"{label}_{i:02d}.mp4")
    return root


@contextlib.contextmanager
def stalled_open(path: Path) -> Iterator[Path]:
    """Opening `path` (a regular file) blocks, as a read on a stalled network mount does, while this
    context lasts: the test holds a write lease on it (fcntl F_SETLEASE), and the kernel makes every
    other opener wait for /proc/sys/fs/lease-break-time (45 s by default). Skips where leases are off."""
    try:
        wait_s = int(Path("/proc/sys/fs/lease-break-time").read_text())
    except (OSError, ValueError):
        pytest.skip("no /proc/sys/fs/lease-break-time: cannot stall a file with a lease")
    if wait_s < 20:
        pytest.skip(f"leases are broken after {wait_s} s here: too soon to stand for a stalled mount")
    previous = signal.signal(signal.SIGIO, signal.SIG_IGN)    # the kernel's "lease broken" note to us
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        except OSError as e:
            pytest.skip(f"cannot take a lease on {path} ({e})")
        yield path
    finally:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        os.close(fd)
        signal.signal(signal.SIGIO, previous)


def splits_of(index: DatasetIndex) -> dict[str, str]:
    return {index.relpath(e): e.split for e in index.entries}


# ----------------------------------------------------------------------------- layouts

def test_class_folders_layout_makes_a_stratified_split(tmp_path):
    root = class_folders(tmp_path / "ds", {"walk": 10, "run": 10})
    video(root / "walk" / "sub" / "nested.mp4")
    video(root / "walk" / ".hidden.mp4")                   # hidden: not a video
    (root / "walk" / "notes.txt").write_text("not a video")
    (root / ".cache").mkdir()
    video(root / ".cache" / "x.mp4")
    video(root / "loose.mp4")                              # a video in no class folder
    index = scan_dataset(root, DataConfig(), workers=0)
    assert index.layout == "folders" and index.split_source == "videoseq"
    assert index.classes == ["run", "walk"]
    assert len(index.entries) == 22
    assert [(index.relpath(e), e.status) for e in index.skipped()] == [("loose.mp4", "not in a class folder")]
    assert all(e.num_frames == 5 and not e.frames_exact for e in index.ok())    # packet counts, not decoded
    assert index.counts() == {"train": {"run": 6, "walk": 7}, "val": {"run": 2, "walk": 2},
                              "test": {"run": 2, "walk": 2}}
    assert any(e.path.endswith("walk/sub/nested.mp4") and e.label == "walk" for e in index.ok())


def test_split_layout_carves_val_from_train(tmp_path):
    root = class_folders(tmp_path / "ds", {"a": 8, "b": 8}, prefix="train")
    class_folders(root, {"a": 2, "b": 3}, prefix="test")
    index = scan_dataset(root, DataConfig(val_fraction=0.25), workers=0)
    assert index.layout == "splits" and index.split_source == "layout+val"
    assert index.counts() == {"train": {"a": 6, "b": 6}, "val": {"a": 2, "b": 2}, "test": {"a": 2, "b": 3}}
    assert all(e.split == "test" for e in index.entries if "/test/" in e.path)


def test_split_layout_keeps_a_given_val(tmp_path):
    root = class_folders(tmp_path / "ds", {"a": 3, "b": 3}, prefix="train")
    class_folders(root, {"a": 1, "b": 1}, prefix="val")
    class_folders(root, {"a": 1, "b": 1}, prefix="test")
    index = scan_dataset(root, DataConfig(), workers=0)
    assert index.split_source == "layout"
    assert index.counts()["train"] == {"a": 3, "b": 3} and index.counts()["val"] == {"a": 1, "b": 1}


def test_split_layout_needs_train_and_test(tmp_path):
    class_folders(tmp_path / "ds", {"a": 3}, prefix="train")
    with pytest.raises(DatasetError, match=r"needs train/ and test/"):
        scan_dataset(tmp_path / "ds", DataConfig(), workers=0)


def test_manifest_with_splits_and_groups(tmp_path):
    root = tmp_path / "ds"
    rows = ["path,label,split,group"]
    for i in range(4):
        for label in ("x", "y"):
            video(root / "clips" / f"{label}{i}.mp4")
            rows.append(f"clips/{label}{i}.mp4,{label},{['train', 'train', 'val', 'test'][i]},p{i}")
    rows.append("clips/missing.mp4,x,train,p0")
    rows.append("clips/../clips/x0.txt,x,train,p0")
    (root / "clips" / "x0.txt").write_text("text")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    index = scan_dataset(root, DataConfig(), workers=0)
    assert index.layout == "manifest" and index.split_source == "layout"
    assert index.counts() == {"train": {"x": 2, "y": 2}, "val": {"x": 1, "y": 1}, "test": {"x": 1, "y": 1}}
    assert {index.relpath(e): e.status for e in index.skipped()} == {
        "clips/missing.mp4": "not found", "clips/x0.txt": "not a video extension (.txt)"}
    assert {e.group for e in index.ok("test")} == {"p3"}


def test_manifest_without_split_is_split_by_videoseq(tmp_path):
    root = tmp_path / "ds"
    rows = ["path,label"] + [f"v/{c}{i}.avi,{c}" for c in "ab" for i in range(5)]
    for c in "ab":
        for i in range(5):
            video(root / "v" / f"{c}{i}.avi")
    (root / "manifest.csv").write_text("\n".join(rows))
    index = scan_dataset(root, DataConfig(), workers=0)
    assert index.split_source == "videoseq"
    assert {s: sum(n.values()) for s, n in index.counts().items()} == {"train": 6, "val": 2, "test": 2}


@pytest.mark.parametrize("path, message", [
    ("../outside.mp4", "leaves the dataset root"),
    ("a/../../outside.mp4", "leaves the dataset root"),
    ("/etc/passwd", "is absolute"),
    ("link.mp4", "leaves the dataset root"),        # a symlink to a file outside the root
])
def test_manifest_path_that_leaves_the_root_is_an_error(tmp_path, path, message):
    root = tmp_path / "ds"
    video(tmp_path / "outside.mp4")
    root.mkdir()
    os.symlink(tmp_path / "outside.mp4", root / "link.mp4")
    (root / "manifest.csv").write_text(f"path,label\n{path},a\n")
    with pytest.raises(DatasetError, match=message) as err:
        scan_dataset(root, DataConfig(), workers=0)
    assert "manifest.csv:2" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("file,label\na.mp4,x\n", "header"),
    ("path,label,split\na.mp4,x,train\nb.mp4,x,\n", "no split"),
    ("path,label,split\na.mp4,x,holdout\n", "not one of"),
    ("path,label\na.mp4,x\n./a.mp4,x\n", "listed twice"),
])
def test_manifest_format_errors(tmp_path, text, message):
    (tmp_path / "manifest.csv").write_text(text)
    with pytest.raises(DatasetError, match=message):
        scan_dataset(tmp_path, DataConfig(), workers=0)


# ----------------------------------------------------------------------------- split rules

def _items(n_per_class: int, classes: str = "abc", groups: int | None = None) -> list[SplitItem]:
    return [SplitItem(f"{c}/v_{c}_g{i % groups if groups else i:02d}_c{i}.mp4", c,
                      f"{i % groups:02d}" if groups else None)
            for c in classes for i in range(n_per_class)]


def test_split_is_a_pure_function_of_paths_labels_and_seed():
    items = _items(20)
    first = make_splits(items, fractions=FRACTIONS, seed=3)
    random.Random(0).shuffle(items)
    assert make_splits(items, fractions=FRACTIONS, seed=3) == first
    assert make_splits(items, fractions=FRACTIONS, seed=4) != first
    per = Counter((k.split("/")[0], s) for k, s in first.items())
    assert all(per[(c, "test")] == 3 and per[(c, "val")] == 3 and per[(c, "train")] == 14 for c in "abc")


def test_reordering_files_on_disk_changes_nothing(tmp_path):
    names = [f"{c}/{c}_{i}.mp4" for c in "ab" for i in range(6)]
    for root, order in ((tmp_path / "one", names), (tmp_path / "two", names[::-1])):
        for name in order:
            video(root / name)
    one = scan_dataset(tmp_path / "one", DataConfig(split_seed=7), workers=0)
    two = scan_dataset(tmp_path / "two", DataConfig(split_seed=7), workers=0)
    assert splits_of(one) == splits_of(two)


def test_groups_stay_whole_and_every_split_has_every_class():
    items = _items(25, groups=8)                          # groups shared across classes, like UCF101
    assignment = make_splits(items, fractions=FRACTIONS, seed=0)
    split_of_group = {}
    for it in items:
        assert split_of_group.setdefault(it.group, assignment[it.key]) == assignment[it.key]
    assert {(it.label, assignment[it.key]) for it in items} == {(c, s) for c in "abc" for s in ("train", "val", "test")}


def test_group_regex_through_scan(tmp_path):
    root = tmp_path / "ds"
    for c in ("a", "b"):
        for g in range(1, 6):
            for k in range(2):
                video(root / c / f"v_{c}_g{g:02d}_c{k}.mp4")
    index = scan_dataset(root, DataConfig(group_regex=r"_g(\d+)_"), workers=0)
    assert {e.group for e in index.ok()} == {f"{g:02d}" for g in range(1, 6)}
    by_group = {}
    for e in index.ok():
        assert by_group.setdefault(e.group, e.split) == e.split


def test_too_few_videos_says_how_many_are_needed():
    with pytest.raises(DatasetError, match=r"class 'b' has 2 usable video\(s\); a train/val/test split needs at least 3"):
        make_splits(_items(5, "a") + _items(2, "b"), fractions=FRACTIONS, seed=0)
    with pytest.raises(DatasetError, match=r"class 'a' has 6 usable video\(s\) in 2 group\(s\).*at least 3 groups"):
        make_splits(_items(6, "a", groups=2), fractions=FRACTIONS, seed=0)
    assert set(make_splits(_items(3, "a"), fractions=FRACTIONS, seed=0).values()) == {"train", "val", "test"}


def test_explicit_split_missing_a_class_is_an_error(tmp_path):
    root = class_folders(tmp_path / "ds", {"a": 4, "b": 4}, prefix="train")
    class_folders(root, {"a": 2}, prefix="test")
    with pytest.raises(DatasetError, match=r"split 'test' has no usable video of class 'b'"):
        scan_dataset(root, DataConfig(), workers=0)


def test_explicit_group_in_two_splits_is_an_error(tmp_path):
    root = tmp_path / "ds"
    for split, g in (("train", 1), ("train", 2), ("train", 3), ("test", 3)):
        video(root / split / "a" / f"v_a_g{g:02d}_c0.mp4")
    with pytest.raises(DatasetError, match=r"group '03' appears in both test .* and train"):
        scan_dataset(root, DataConfig(group_regex=r"_g(\d+)_"), workers=0)


def test_class_whose_videos_are_all_broken_is_an_error(tmp_path):
    root = class_folders(tmp_path / "ds", {"a": 4})
    (root / "b").mkdir()
    write_text(root / "b" / "x.mp4")
    with pytest.raises(DatasetError, match=r"class 'b' has no usable video \(1 skipped, e.g. b/x.mp4: "):
        scan_dataset(root, DataConfig(), workers=0)


# ----------------------------------------------------------------------------- broken files, pool, scan

@pytest.fixture
def mixed(tmp_path) -> Path:
    """Two classes of good videos plus a zero-byte, a truncated, a text-as-.mp4 and a too-short file."""
    root = class_folders(tmp_path / "mixed", {"a": 4, "b": 4})
    good = write_opencv(tmp_path / "long.mp4", count=40, width=32, height=24)
    write_empty(root / "a" / "empty.mp4")
    truncate(good, root / "a" / "cut.mp4", fraction=0.3)
    write_text(root / "b" / "text.mp4")
    write_audio_only(root / "b" / "sound.mp4", seconds=0.2)
    video(root / "b" / "short.mp4", frames=2)
    return root


def test_broken_files_are_listed_with_reasons_not_raised(mixed):
    index = scan_dataset(mixed, DataConfig(min_frames=3), workers=2)
    reasons = {index.relpath(e): e.status for e in index.skipped()}
    assert set(reasons) == {"a/empty.mp4", "a/cut.mp4", "b/text.mp4", "b/sound.mp4", "b/short.mp4"}
    assert reasons["b/short.mp4"] == "too short (2 < 3)"
    short = next(e for e in index.skipped() if e.path.endswith("short.mp4"))
    assert short.num_frames == 2 and short.frames_exact          # below min_frames: counted before rejected
    assert all(r for r in reasons.values())
    assert len(index.ok()) == 8


def test_scan_decodes_only_the_first_frame(tmp_path):
    """A cut H.264 file has a packet or two more than it decodes to: scan reports the packet count (a
    full decode would give fewer) and leaves the exact count to extraction (tests/test_cache.py)."""
    root = class_folders(tmp_path / "ds", {"a": 3, "b": 3})
    whole = write_faststart_mp4(tmp_path / "whole.mp4", count=120, width=32, height=24)
    path = truncate(whole, root / "a" / "cut.mp4", fraction=0.5)
    packets, decoded = index_packets(path).count, len(list(iter_frames(path)))
    assert 0 < decoded < packets
    index = scan_dataset(root, DataConfig(min_frames=5), workers=0)
    cut = next(e for e in index.entries if e.path == str(path))
    assert (cut.status, cut.num_frames, cut.frames_exact) == ("ok", packets, False)
    assert index.min_frames == 5 and DatasetIndex.from_dict(index.to_dict()) == index


def _die_on_two(x: int) -> int:
    if x == 2:
        os._exit(11)                                       # a worker killed outright, like a decoder segfault
    return x * 10


def test_a_dying_worker_costs_only_its_own_job():
    results = run_jobs(_die_on_two, [(i,) for i in range(5)], workers=2)
    assert results[:2] + results[3:] == [0, 10, 30, 40]
    assert isinstance(results[2], JobCrash)


def _hang_on_two(x: int) -> int:
    if x == 2:
        time.sleep(600)                                    # a decoder that never returns
    return x * 10


def test_a_hung_job_times_out_and_its_worker_is_replaced():
    started = time.monotonic()
    results = run_jobs(_hang_on_two, [(i,) for i in range(6)], workers=2, timeout=1.5)
    assert time.monotonic() - started < 30
    assert results[:2] + results[3:] == [0, 10, 30, 40, 50]       # the others all ran
    assert isinstance(results[2], JobTimeout) and isinstance(results[2], JobCrash)   # a failed job
    assert results[2].reason == "timed out after 1.5 s"
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        run_jobs(_hang_on_two, [(1,)], workers=1, timeout=-1)


def _disk_full_on_two(x: int) -> int:
    if x == 2:
        raise OutputError(f"/cache/{x}.npz", "no space left on device")
    return x * 10


def test_an_output_error_in_a_worker_is_raised_as_itself():
    """A full disk is the run's problem, not the job's: the one-line OutputError comes back as it is."""
    with pytest.raises(OutputError, match=r"^/cache/2.npz: cannot write \(no space left on device\)$"):
        run_jobs(_disk_full_on_two, [(i,) for i in range(40)], workers=2)
    with pytest.raises(OutputError):
        run_jobs(_disk_full_on_two, [(i,) for i in range(4)], workers=0)


def test_scan_reports_a_fifo_and_a_stalled_file_and_indexes_the_rest(tmp_path, capsys):
    """A FIFO is no regular file (never opened); a file whose open hangs (a stalled mount) is given up
    on after the timeout, its worker replaced; the other videos are indexed either way."""
    root = class_folders(tmp_path / "ds", {"a": 4, "b": 4})
    os.mkfifo(root / "a" / "x.mp4")
    slow = video(root / "b" / "slow.mp4")
    with stalled_open(slow):
        started = time.monotonic()
        index = scan_dataset(root, DataConfig(), workers=2, timeout=3)
        took = time.monotonic() - started
        assert {index.relpath(e): e.status for e in index.skipped()} == {
            "a/x.mp4": "not a file", "b/slow.mp4": "unreadable: timed out after 3 s"}
        assert len(index.ok()) == 8 and 3 <= took < 40
        assert main(["scan", str(root), "--timeout", "2", "--set", "runtime.workers=2"]) == 0
        out = capsys.readouterr().out
        assert "b/slow.mp4: unreadable: timed out after 2 s" in out and "a/x.mp4: not a file" in out
    assert main(["scan", str(root), "--timeout", "-1"]) == 2
    assert "--timeout -1: expected seconds >= 0" in capsys.readouterr().err


def test_index_json_round_trip_and_mark_failed(mixed, tmp_path):
    index = scan_dataset(mixed, DataConfig(), workers=0)
    index.mark_failed(index.ok("train")[0].path, "unreadable: truncated after 2 frames")
    index.to_json(tmp_path / "index.json")
    raw = json.loads((tmp_path / "index.json").read_text())
    assert raw["root"] == str(mixed) and not any(os.path.isabs(e["path"]) for e in raw["entries"])
    assert DatasetIndex.from_json(tmp_path / "index.json") == index
    with pytest.raises(DatasetError, match="not a videoseq dataset index"):
        DatasetIndex.from_dict({"format": 1, "root": "/x"}, source="bad.json")


def test_scan_command_in_process(mixed, tmp_path, capsys):
    assert main(["scan", str(mixed), "--workers", "0", "--index-out", str(tmp_path / "i.json")]) == 0
    out = capsys.readouterr().out
    assert "layout: folders" in out and "a/empty.mp4: " in out and "b/text.mp4: " in out
    assert "fewer than 1 frame(s) (data.min_frames)" in out
    assert DatasetIndex.from_json(tmp_path / "i.json").layout == "folders"
    assert main(["scan", str(mixed), "--workers", "0", "--group-regex", "([ab])"]) == 2   # 1 group per class
    assert "class 'a' has 4 usable video(s) in 1 group(s)" in capsys.readouterr().err
    assert main(["scan", str(mixed), "--workers", "0", "--group-regex", "(unclosed"]) == 2
    assert "not a valid regular expression" in capsys.readouterr().err
    assert main(["scan", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_scan_subprocess_json_and_exit_codes(mixed, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "videoseq", "scan", *a], cwd=REPO,
                                    capture_output=True, text=True, timeout=120)
    proc = run(str(mixed), "--json", "--set", "runtime.workers=2")
    assert proc.returncode == 0, proc.stderr
    raw = json.loads(proc.stdout)
    assert {e["path"]: e["status"] != "ok" for e in raw["entries"]}["a/cut.mp4"]
    assert len([e for e in raw["entries"] if e["status"] != "ok"]) == 4
    only_broken = tmp_path / "broken"
    (only_broken / "a").mkdir(parents=True)
    write_text(only_broken / "a" / "x.mp4")
    proc = run(str(only_broken))
    assert proc.returncode == 2 and proc.stdout == ""
    # the error is one line (FFmpeg's own log lines may precede it: the decoder's, not ours)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("videoseq scan: error: ") and "a/x.mp4" in last and "Traceback" not in proc.stderr
