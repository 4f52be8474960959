"""Frame cache: keying, hits and misses, corrupt entries, views, extract_dataset, and a SIGKILL mid-extraction."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from typing import Iterator

import numpy as np
import pytest

from media import frame_number, truncate, write_faststart_mp4, write_opencv, write_text
from test_dataset import stalled_open
from videoseq.data.cache import FrameCache, extract_dataset, file_digest
from videoseq.data.plan import default_cache_dir
from videoseq.config import DataConfig, RuntimeConfig, SamplingConfig
from videoseq.data.dataset import DatasetIndex, scan_dataset
from videoseq.io.decode import index_packets
from videoseq.errors import OutputError, VideoReadError
from videoseq.io.video import iter_frames, sample_indices

REPO = Path(__file__).resolve().parents[1]
T4 = SamplingConfig(frames=4)


def numbers(clip) -> list[int]:
    return [frame_number(f) for f in clip.frames]


def entry_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def assert_entries_load(root: Path) -> int:
    """Every finished entry loads with all its arrays; only temp files (`.name.xxx.tmp`) may be partial."""
    entries = [p for p in entry_files(root) if not p.name.endswith(".tmp")]
    for p in entries:
        assert p.suffix == ".npz", p
        with np.load(p) as z:
            assert z["frames"].ndim == 4 and z["indices"].shape == z["mask"].shape and str(z["info"])
    return len(entries)


@pytest.fixture
def clip_file(tmp_path) -> Path:
    return write_opencv(tmp_path / "v.mp4", count=24)


def test_hit_miss_and_what_the_key_holds(tmp_path, clip_file):
    cache = FrameCache(tmp_path / "frames")
    assert cache.ensure(clip_file, T4, size=32) is False
    assert cache.ensure(clip_file, T4, size=32) is True
    clip = cache.load_or_extract(clip_file, T4, size=32)
    assert clip.frames.shape == (4, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.indices.tolist() == sample_indices(24, count=4).tolist() == numbers(clip)
    assert clip.info.num_frames == 24 and clip.mask.all()
    # each sampling parameter is part of the key: a change is a miss, then a hit
    for sampling, size, view in [(SamplingConfig(frames=5), 32, 0), (T4, 24, 0),
                                 (SamplingConfig(frames=4, short="mask"), 32, 0), (T4, 32, 1)]:
        assert cache.ensure(clip_file, sampling, size=size, view=view) is False
        assert cache.ensure(clip_file, sampling, size=size, view=view) is True
    assert len(entry_files(cache.root)) == 5


def test_renamed_file_hits_and_changed_content_misses(tmp_path, clip_file):
    cache = FrameCache(tmp_path / "frames")
    cache.ensure(clip_file, T4, size=32)
    moved = clip_file.rename(tmp_path / "renamed.avi")
    assert cache.ensure(moved, T4, size=32) is True
    assert cache.load_or_extract(moved, T4, size=32).info.path == str(moved)   # the current name, not the old
    write_opencv(moved, count=40)                             # same name, new content
    assert cache.ensure(moved, T4, size=32) is False
    assert cache.load_or_extract(moved, T4, size=32).indices.tolist() == sample_indices(40, count=4).tolist()


def test_file_digest_follows_content_not_name(tmp_path, clip_file):
    copy = shutil.copy(clip_file, tmp_path / "copy.mp4")
    assert file_digest(clip_file) == file_digest(copy)
    with open(copy, "ab") as f:
        f.write(b"\0")
    assert file_digest(copy) != file_digest(clip_file)


@pytest.mark.parametrize("damage", ["garbage", "half", "wrong-shape"])
def test_corrupt_entry_is_a_miss_and_is_rewritten(tmp_path, clip_file, damage):
    cache = FrameCache(tmp_path / "frames")
    good = cache.load_or_extract(clip_file, T4, size=32)
    entry = cache.entry_path(clip_file, T4, size=32)
    data = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"not an npz at all")
    elif damage == "half":
        entry.write_bytes(data[: len(data) // 2])
    else:
        np.savez(entry.with_suffix(""), frames=np.zeros((2, 8, 8, 3), np.uint8), indices=np.zeros(2),
                 mask=np.ones(2, bool), info=np.array("{}"), format=np.array(1))
    assert cache.ensure(clip_file, T4, size=32) is False       # detected, extracted again
    assert entry.read_bytes() == data
    assert np.array_equal(cache.load_or_extract(clip_file, T4, size=32).frames, good.frames)


def test_random_views_are_reproducible_and_distinct(tmp_path):
    path = write_opencv(tmp_path / "long.mp4", count=60)
    one = FrameCache(tmp_path / "one").load_or_extract(path, T4, size=32, view=1)
    two = FrameCache(tmp_path / "two").load_or_extract(path, T4, size=32, view=1)
    other = FrameCache(tmp_path / "two").load_or_extract(path, T4, size=32, view=2)
    assert one.indices.tolist() == two.indices.tolist() == numbers(one)
    assert one.indices.tolist() != other.indices.tolist()
    segments = [int(k) * 4 // 60 for k in one.indices]        # one random frame in each of 4 segments
    assert segments == [0, 1, 2, 3]


def test_default_cache_dir(monkeypatch, tmp_path):
    assert default_cache_dir(RuntimeConfig(cache_dir=str(tmp_path / "x"))) == tmp_path / "x"
    monkeypatch.setenv("VIDEOSEQ_CACHE", str(tmp_path / "env"))
    assert default_cache_dir(RuntimeConfig()) == tmp_path / "env"
    monkeypatch.delenv("VIDEOSEQ_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir(RuntimeConfig()) == tmp_path / "home" / ".cache" / "videoseq"


def _dataset(root: Path, per_class: int, *, count: int = 12, width: int = 48, height: int = 32) -> Path:
    """Two classes of `per_class` videos; frame counts differ so that no two files have the same content."""
    for c, label in enumerate(("a", "b")):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            write_opencv(root / label / f"{label}{i:02d}.mp4", count=count + c * per_class + i,
                         width=width, height=height)
    return root


def test_extract_dataset_views_rerun_and_a_video_that_breaks(tmp_path):
    index = scan_dataset(_dataset(tmp_path / "ds", 4), DataConfig(), workers=0)
    cache = FrameCache(tmp_path / "frames")
    n_train = len(index.ok("train"))
    n = 2 * n_train + len(index.ok()) - n_train                 # two views per train video, one otherwise
    first = extract_dataset(index, cache, T4, size=16, views=2, workers=2, progress=False)
    assert first == (n, 0, [])
    assert extract_dataset(index, cache, T4, size=16, views=2, workers=0, progress=False) == (0, n, [])
    # a file that was fine at scan time breaks before extraction: reported, marked, the rest goes on
    victim = index.ok("test")[0].path
    write_text(victim)
    report = extract_dataset(index, cache, T4, size=16, views=2, workers=0, progress=False)
    assert report.extracted == 0 and report.cached == n - 1
    assert [p for p, _ in report.failed] == [victim] and report.failed[0][1]
    assert victim in [e.path for e in index.skipped()]
    assert extract_dataset(index, cache, T4, size=16, views=2, workers=0, progress=False) == (0, n - 1, [])


def test_extraction_confirms_counts_and_enforces_min_frames(tmp_path):
    """Scan judged lengths by packet counts; extraction decodes, records the exact count, and skips
    (reported, marked, the rest going on) a cut file with fewer decodable frames than min_frames."""
    root = _dataset(tmp_path / "ds", 3, count=40, width=32, height=24)
    whole = write_faststart_mp4(tmp_path / "whole.mp4", count=120, width=32, height=24)
    cut = truncate(whole, root / "a" / "cut.mp4", fraction=0.5)
    packets, decoded = index_packets(cut).count, len(list(iter_frames(cut)))
    assert 0 < decoded < packets <= 40
    index = scan_dataset(root, DataConfig(min_frames=packets), workers=0)
    assert len(index.ok()) == 7 and not any(e.frames_exact for e in index.ok())
    cache = FrameCache(tmp_path / "frames")
    report = extract_dataset(index, cache, T4, size=16, workers=2, progress=False)
    reason = f"too short ({decoded} < {packets})"
    assert report == (6, 0, [(str(cut), reason)])
    entries = {Path(e.path).name: e for e in index.entries}
    assert (entries["cut.mp4"].status, entries["cut.mp4"].num_frames, entries["cut.mp4"].frames_exact) == (
        reason, decoded, True)
    assert all(e.frames_exact and e.num_frames == 40 + 3 * (e.label == "b") + int(e.path[-6:-4])
               for e in index.ok())
    assert DatasetIndex.from_dict(index.to_dict()) == index
    # the clip stays cached (keyed by content, not by the rule); ensure applies the rule too (the flow's path)
    with pytest.raises(VideoReadError, match=rf"cut.mp4: too short \({decoded} < {packets}\)"):
        cache.ensure(cut, T4, size=16, min_frames=packets)
    assert cache.ensure(cut, T4, size=16) is True


_KILLED_RUN = """
import sys
from videoseq.data.cache import FrameCache, extract_dataset
from videoseq.config import SamplingConfig
from videoseq.data.dataset import DatasetIndex
index = DatasetIndex.from_json(sys.argv[1])
extract_dataset(index, FrameCache(sys.argv[2]), SamplingConfig(frames=8), size=48, workers=2, progress=False)
"""


def test_sigkill_during_extraction_leaves_no_partial_entry(tmp_path):
    index = scan_dataset(_dataset(tmp_path / "ds", 20, count=30, width=96, height=64), DataConfig(), workers=0)
    index.to_json(tmp_path / "index.json")
    frames = tmp_path / "frames"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(tmp_path / "index.json"), str(frames)],
                            cwd=REPO, start_new_session=True)          # its own group: the pool dies with it
    try:
        deadline = time.monotonic() + 60
        while not (frames.exists() and len(list(frames.rglob("*.npz"))) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "extraction ended before the kill"
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = assert_entries_load(frames)
    assert 2 <= done < 40, done
    report = extract_dataset(index, FrameCache(frames), SamplingConfig(frames=8), size=48, workers=0,
                             progress=False)
    assert report.failed == [] and report.cached == done and report.extracted == 40 - done
    assert assert_entries_load(frames) == 40


def test_stale_temp_files_of_killed_writers_are_removed(tmp_path, clip_file):
    cache = FrameCache(tmp_path / "frames")
    entry = cache.entry_path(clip_file, T4, size=32)
    entry.parent.mkdir(parents=True)
    stale, fresh = entry.parent / f".{entry.name}.abc.tmp", entry.parent / f".{entry.name}.def.tmp"
    stale.write_bytes(b"PK\x03\x04 half of an entry")
    fresh.write_bytes(b"another process is writing this one")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert cache.remove_stale_temp(older_than_s=3600) == 1
    assert not stale.exists() and fresh.exists()


# ----------------------------------------------------------------------------- hung files, full disks

def test_extraction_reports_a_fifo_and_a_stalled_file_and_extracts_the_rest(tmp_path):
    """Files that change after the scan: one becomes a FIFO (never opened: it would block), one hangs
    on open (a stalled mount) and is given up on after the timeout; the others are extracted."""
    index = scan_dataset(_dataset(tmp_path / "ds", 3), DataConfig(), workers=0)
    fifo, slow = index.ok()[0].path, index.ok()[1].path
    os.unlink(fifo)
    os.mkfifo(fifo)
    with pytest.raises(VideoReadError, match="not a file"):
        file_digest(fifo)
    with stalled_open(Path(slow)):
        started = time.monotonic()
        report = extract_dataset(index, FrameCache(tmp_path / "frames"), T4, size=16, workers=2,
                                 progress=False, timeout=3)
        assert 3 <= time.monotonic() - started < 40
    assert report.extracted == 4 and report.cached == 0
    assert sorted(report.failed) == sorted([(fifo, "not a file"), (slow, "unreadable: timed out after 3 s")])
    assert {e.path: e.status for e in index.skipped()} == dict(report.failed)
    assert assert_entries_load(tmp_path / "frames") == 4


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 512 KiB file system of its own (a tmpfs, mounted as root); skips where mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path, *, leave: int) -> Path:
    """A file that takes all of `disk`'s free space but `leave` bytes."""
    filler = disk / "filler"
    filler.write_bytes(bytes(max(0, shutil.disk_usage(disk).free - leave)))
    return filler


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_full_disk_stops_extraction_with_one_line_and_a_rerun_resumes(tmp_path, small_disk):
    index = scan_dataset(_dataset(tmp_path / "ds", 4), DataConfig(), workers=0)
    before = index.to_dict()
    frames = small_disk / "frames"
    filler = fill(small_disk, leave=24 << 10)                     # room for two or three entries
    for workers in (2, 0):
        with pytest.raises(OutputError) as err:
            extract_dataset(index, FrameCache(frames), T4, size=16, workers=workers, progress=False)
        message = str(err.value)
        assert message.startswith(str(frames)) and message.endswith(": cannot write (no space left on device)")
        assert "\n" not in message and err.value.path.endswith(".npz")
        assert index.to_dict() == before                         # no video marked failed, no count changed
        assert no_temp_files(frames)
        done = assert_entries_load(frames)                        # every entry there is whole
        assert 0 < done < 8
    filler.unlink()                                               # space freed: the rerun resumes
    report = extract_dataset(index, FrameCache(frames), T4, size=16, workers=2, progress=False)
    assert report == (8 - done, done, []) and assert_entries_load(frames) == 8
    assert all(e.frames_exact for e in index.ok()) and not index.skipped()


def test_full_disk_stops_feature_caching_with_one_line_and_a_rerun_resumes(tmp_path, small_disk):
    import torch

    from videoseq.data.features import FeatureStore
    from videoseq.models.encoders import build_encoder

    torch.manual_seed(0)
    encoder = build_encoder("small_cnn").freeze()
    index = scan_dataset(_dataset(tmp_path / "ds", 4), DataConfig(), workers=0)
    entries, frame_cache = index.ok(), FrameCache(tmp_path / "frames")
    load = lambda store: store.load_split(entries, frame_cache, T4, size=16, views=1, classes=index.classes)
    filler = fill(small_disk, leave=24 << 10)
    store = FeatureStore(small_disk / "features", encoder)
    with pytest.raises(OutputError) as err:
        load(store)
    message = str(err.value)
    assert message.startswith(str(store.dir)) and message.endswith(": cannot write (no space left on device)")
    assert no_temp_files(small_disk)
    written = sorted(store.dir.glob("*.npz"))
    assert 0 < len(written) < len(entries)
    for path in written:                                          # what is there is whole
        with np.load(path) as z:
            assert z["feats"].shape == (4, encoder.out_dim) and z["mask"].shape == (4,)
    filler.unlink()
    again = FeatureStore(small_disk / "features", encoder)
    split = load(again)
    assert again.encoded_frames == 4 * (len(entries) - len(written))   # only the missing ones encoded
    assert split.feats.shape == (len(entries), 1, 4, encoder.out_dim)
    assert torch.equal(load(FeatureStore(small_disk / "features", encoder)).feats, split.feats)


def test_a_split_spilled_to_disk_equals_the_one_in_memory(tmp_path):
    import torch

    from videoseq.data.features import FeatureStore
    from videoseq.data.split_file import DiskFeatures
    from videoseq.models.encoders import build_encoder

    torch.manual_seed(0)
    encoder = build_encoder("small_cnn").freeze()
    index = scan_dataset(_dataset(tmp_path / "ds", 5), DataConfig(), workers=0)
    entries, frame_cache = index.ok(), FrameCache(tmp_path / "frames")
    store = FeatureStore(tmp_path / "features", encoder)
    memory = store.load_split(entries, frame_cache, T4, size=16, views=2, classes=index.classes)
    disk = store.load_split(entries, frame_cache, T4, size=16, views=2, classes=index.classes,
                            spill=tmp_path / "work" / "train.npy", block=2)      # blocks of 2 videos
    assert isinstance(disk.feats, DiskFeatures) and disk.feats.shape == tuple(memory.feats.shape)
    assert torch.equal(disk.feats[0:len(entries)], memory.feats)
    assert torch.equal(disk.mask, memory.mask) and torch.equal(disk.labels, memory.labels)
    assert disk.paths == memory.paths
