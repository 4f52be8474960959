"""Persistent file fingerprints: a digest hashed once is found by later processes without reading the
file; any change to the file's stat key rehashes; a damaged entry is a miss; a store that cannot be
written costs only the hashing; processes filling one store at once leave only valid entries."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from videoseq.config import RuntimeConfig, SamplingConfig
from videoseq.data.fingerprints import (ENV_VAR, FingerprintStore, bytes_hashed, default_root, fingerprint,
                                        stat_key)
from videoseq.errors import VideoReadError

REPO = Path(__file__).resolve().parents[1]


def blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def make_file(path: Path, size: int = 50_000, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes((seed * 31 + i * 7) % 251 for i in range(size)))
    return path


def hashed_by(store: FingerprintStore, path: Path) -> tuple[str, int]:
    """(digest, bytes read to get it) in this process."""
    before = bytes_hashed()
    digest = store.digest(path)
    return digest, bytes_hashed() - before


def in_subprocess(code: str, env: dict[str, str] | None = None) -> list:
    """Run `code` in a fresh python; it prints one JSON value, returned here."""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


SUBPROCESS_DIGESTS = """
import json, sys
from videoseq.data.fingerprints import fingerprint, bytes_hashed
digests = [fingerprint(p) for p in sys.argv[1:]]
print(json.dumps([digests, bytes_hashed()]))
"""


def test_a_second_process_gets_the_digest_without_reading_the_file(tmp_path):
    store_dir = tmp_path / "fp"
    files = [make_file(tmp_path / f"v{i}.mp4", seed=i) for i in range(3)]
    store = FingerprintStore(store_dir)
    first = [hashed_by(store, p) for p in files]
    assert [d for d, _ in first] == [blake(p.read_bytes()) for p in files]
    assert [n for _, n in first] == [p.stat().st_size for p in files]
    assert hashed_by(store, files[0])[1] == 0                              # memory
    assert hashed_by(FingerprintStore(store_dir), files[0])[1] == 0        # the store, in this process

    code = f"import sys; sys.argv[1:] = {[str(p) for p in files]!r}\n" + SUBPROCESS_DIGESTS
    digests, read = in_subprocess(code, {ENV_VAR: str(store_dir)})
    assert digests == [d for d, _ in first] and read == 0


def test_file_digest_remembers_under_the_cache_root(tmp_path):
    """`data.cache.file_digest` uses the default store, `<VIDEOSEQ_CACHE>/fingerprints`."""
    from videoseq.data.cache import file_digest

    path = make_file(tmp_path / "a.avi")
    digest = file_digest(path)
    cache = Path(os.environ["VIDEOSEQ_CACHE"])
    assert len(list((cache / "fingerprints").rglob("*.json"))) == 1
    code = ("from videoseq.data.cache import file_digest; from videoseq.data.fingerprints import bytes_hashed;"
            f"import json; print(json.dumps([file_digest({str(path)!r}), bytes_hashed()]))")
    assert in_subprocess(code, {"VIDEOSEQ_CACHE": str(cache)}) == [digest, 0]
    assert in_subprocess(code, {"VIDEOSEQ_CACHE": str(tmp_path / "other")})[1] == path.stat().st_size


def test_default_root(monkeypatch, tmp_path):
    from videoseq.data.plan import default_cache_dir

    assert default_root() == default_cache_dir(RuntimeConfig()) / "fingerprints"
    monkeypatch.delenv("VIDEOSEQ_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == default_cache_dir(RuntimeConfig()) / "fingerprints"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"


def _rewrite_same_size_same_mtime(path: Path) -> None:
    """New bytes of the same length with the old mtime put back: only ctime tells (it cannot be set)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    deadline = time.monotonic() + 5
    while True:
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        if path.stat().st_ctime_ns != st.st_ctime_ns or time.monotonic() > deadline:
            break
        time.sleep(0.02)                                   # the same clock tick: write again
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


def _replace_with_a_copy(path: Path) -> None:
    """The same bytes in a new file renamed over the old one: a new inode."""
    copy = path.with_name("copy.tmp")
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)


CHANGES = {
    "touched": lambda p: os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns - 10**9)),
    "appended": lambda p: p.open("ab").write(b"\0"),
    "same size and mtime, new bytes": _rewrite_same_size_same_mtime,
    "replaced by a copy (new inode)": _replace_with_a_copy,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_to_the_file_rehashes(tmp_path, change):
    path = make_file(tmp_path / "v.mp4")
    store_dir = tmp_path / "fp"
    hashed_by(FingerprintStore(store_dir), path)
    before = stat_key(path)
    CHANGES[change](path)
    assert stat_key(path) != before
    assert hashed_by(FingerprintStore(store_dir), path) == (blake(path.read_bytes()), path.stat().st_size)
    assert hashed_by(FingerprintStore(store_dir), path)[1] == 0             # and remembered again


def test_the_same_store_object_notices_a_change(tmp_path):
    """The in-memory memo is keyed by the whole stat key too."""
    path = make_file(tmp_path / "v.mp4")
    store = FingerprintStore(tmp_path / "fp")
    old = store.digest(path)
    path.open("ab").write(b"more")
    assert store.digest(path) == blake(path.read_bytes()) != old


@pytest.mark.parametrize("damage", ["garbage", "half", "empty", "not a digest", "another file's key",
                                    "too large"])
def test_a_damaged_entry_is_a_miss_and_is_rewritten(tmp_path, damage):
    path = make_file(tmp_path / "v.mp4")
    store = FingerprintStore(tmp_path / "fp")
    digest = store.digest(path)
    entry = store.entry_path(stat_key(path))
    good = entry.read_bytes()
    record = json.loads(good)
    entry.write_bytes({
        "garbage": b"\xff\x00 not json",
        "half": good[: len(good) // 2],
        "empty": b"",
        "not a digest": json.dumps({**record, "digest": "x" * 32}).encode(),
        "another file's key": json.dumps({**record, "size": record["size"] + 1, "digest": "0" * 32}).encode(),
        "too large": good[:-2] + b" " * (1 << 17) + b"}\n",
    }[damage])
    fresh = FingerprintStore(tmp_path / "fp")
    assert fresh.lookup(stat_key(path)) is None
    assert hashed_by(fresh, path) == (digest, path.stat().st_size)
    assert entry.read_bytes() == good


def test_a_store_that_cannot_be_written_still_hashes_and_warns_once(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder would be")
    store = FingerprintStore(blocker / "fp")
    files = [make_file(tmp_path / f"v{i}.mp4", seed=i) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="videoseq.data.fingerprints"):
        assert [store.digest(p) for p in files] == [blake(p.read_bytes()) for p in files]
        assert [FingerprintStore(blocker / "fp").digest(p) for p in files] == [blake(p.read_bytes()) for p in files]
    warnings = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1                            # once per folder, not once per file
    assert blocker.read_text().startswith("a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_store_is_read_but_not_written(tmp_path, caplog):
    store_dir = tmp_path / "fp"
    old, new = make_file(tmp_path / "old.mp4"), make_file(tmp_path / "new.mp4", seed=1)
    FingerprintStore(store_dir).digest(old)
    folders = [store_dir, *[p for p in store_dir.rglob("*") if p.is_dir()]]
    for d in folders:
        d.chmod(0o555)
    try:
        store = FingerprintStore(store_dir)
        assert hashed_by(store, old)[1] == 0
        with caplog.at_level(logging.WARNING, logger="videoseq.data.fingerprints"):
            assert hashed_by(store, new) == (blake(new.read_bytes()), new.stat().st_size)
        assert any("cannot be written" in r.getMessage() for r in caplog.records)
    finally:
        for d in folders:
            d.chmod(0o755)


def test_a_name_that_is_not_utf8_round_trips(tmp_path):
    path = make_file(tmp_path / os.fsdecode(b"caf\xe9 \xff.mp4"))
    digest = FingerprintStore(tmp_path / "fp").digest(path)
    assert hashed_by(FingerprintStore(tmp_path / "fp"), path) == (digest, 0)


def test_not_a_file_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(VideoReadError, match="not a file"):
        fingerprint(fifo, store=FingerprintStore(tmp_path / "fp"))
    with pytest.raises(VideoReadError, match="not a file"):
        fingerprint(tmp_path, store=FingerprintStore(tmp_path / "fp"))
    with pytest.raises(FileNotFoundError):
        fingerprint(tmp_path / "absent.mp4", store=FingerprintStore(tmp_path / "fp"))


def test_concurrent_processes_fill_one_store_with_valid_entries(tmp_path):
    files = [make_file(tmp_path / "data" / f"v{i:02d}.mp4", size=20_000 + i, seed=i) for i in range(24)]
    truth = {str(p): blake(p.read_bytes()) for p in files}
    store_dir = tmp_path / "fp"
    env = {**os.environ, ENV_VAR: str(store_dir)}
    procs = []
    for k in range(4):                                   # each in its own order, all at once
        order = [str(p) for p in (files[k:] + files[:k])[:: 1 if k % 2 else -1]]
        procs.append((order, subprocess.Popen([sys.executable, "-c", SUBPROCESS_DIGESTS, *order], cwd=REPO,
                                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True)))
    for order, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        digests, _ = json.loads(out.strip().splitlines()[-1])
        assert digests == [truth[p] for p in order]
    entries = sorted(store_dir.rglob("*.json"))
    assert len(entries) == len(files)
    assert not [p for p in store_dir.rglob("*") if p.is_file() and p.suffix != ".json"]   # no temp files
    store = FingerprintStore(store_dir)
    assert {p: store.lookup(stat_key(p)) for p in truth} == truth
    code = f"import sys; sys.argv[1:] = {list(truth)!r}\n" + SUBPROCESS_DIGESTS
    assert in_subprocess(code, {ENV_VAR: str(store_dir)}) == [list(truth.values()), 0]


def test_an_extracted_video_is_never_read_again_by_a_later_process(tmp_path):
    """The frame cache's second run over an unchanged video hashes nothing: a hit from digest to clip."""
    from media import write_opencv
    from videoseq.data.cache import FrameCache

    video = write_opencv(tmp_path / "clip.avi", count=12)
    assert FrameCache(tmp_path / "frames").ensure(video, SamplingConfig(frames=4), size=16) is False
    code = ("import json; from videoseq.config import SamplingConfig; from videoseq.data.cache import FrameCache;"
            "from videoseq.data.fingerprints import bytes_hashed;"
            f"hit = FrameCache({str(tmp_path / 'frames')!r}).ensure({str(video)!r}, SamplingConfig(frames=4), size=16);"
            "print(json.dumps([hit, bytes_hashed()]))")
    assert in_subprocess(code) == [True, 0]


def test_a_scan_remembers_each_probe_until_the_file_changes(tmp_path, monkeypatch):
    """A rescan of unchanged files opens none of them; an edited file is probed again."""
    import videoseq.io.video as video
    from media import write_opencv
    from videoseq.data.dataset import probe_status

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "fp"))
    clip = write_opencv(tmp_path / "a.avi", count=12, fourcc="MJPG")
    short = write_opencv(tmp_path / "b.avi", count=3, fourcc="MJPG")
    broken = make_file(tmp_path / "c.avi", size=3000)
    opened: list[str] = []
    real = video.probe

    def counted(path, **kw):
        opened.append(str(path))
        return real(path, **kw)

    monkeypatch.setattr(video, "probe", counted)
    first = [probe_status(str(p), 8) for p in (clip, short, broken)]
    assert first[0] == ("ok", 12, first[0][2]) and first[1][0].startswith("too short (3 < 8)")
    assert first[2][0] and first[2][1] is None
    assert len(opened) >= 3
    opened.clear()
    assert [probe_status(str(p), 8) for p in (clip, short, broken)] == first
    assert opened == []                                        # every answer from the probe store
    assert probe_status(str(clip), 20)[0] == "too short (12 < 20)" and opened   # another min_frames
    opened.clear()
    write_opencv(clip, count=9, fourcc="MJPG")                 # edited in place: a new stat key
    assert probe_status(str(clip), 8)[:2] == ("ok", 9) and opened == [str(clip)]
    assert sorted(p.name for p in (tmp_path / "fp").iterdir()) == ["probes"]
