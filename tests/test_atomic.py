"""io/atomic.py and the ledger on a real full file system (a small tmpfs): a full disk is one-line
OutputError naming the path, nothing partial is left that a later run would trust, and a retry with
space succeeds; folder swaps keep the old folder or the new one, even when killed between renames."""
from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from videoseq.errors import OutputError
from videoseq.io import atomic
from videoseq.io.atomic import atomic_write_bytes, check_replaceable, recover_dir, replace_dir, work_dir


@pytest.fixture
def small_fs(tmp_path):
    """`small_fs(size_kb)` mounts a fresh tmpfs of that size and returns its path; every mount is
    unmounted after the test. Skips when this process may not mount (not root, or mount refused)."""
    mounted: list[Path] = []

    def mount(size_kb: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (os.geteuid() != 0)")
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", str(where)], check=False)


def resize_fs(where: Path, size_kb: int) -> None:
    """Grow (or shrink) a tmpfs that `small_fs` mounted: "space was freed"."""
    subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(where)], check=True)


def fill(where: Path) -> Path:
    """Write zeros into `where/filler` until the file system is full; return the filler's path."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return filler


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text, text
    return text


# --- files ---------------------------------------------------------------------------------------

def test_atomic_write_on_a_full_disk_names_the_path_and_leaves_the_old_file(small_fs):
    fs = small_fs(256)
    target = fs / "out" / "data.bin"
    atomic_write_bytes(target, b"old")
    fill(fs)
    with pytest.raises(OutputError) as err:
        atomic_write_bytes(target, b"x" * 200_000)
    assert _one_line(err.value) == f"{target}: cannot write (no space left on device)"
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.bin"]      # no temp file left


def test_output_error_is_only_for_output_errnos(tmp_path):
    with pytest.raises(OutputError, match=r"x: cannot write \(read-only file system\)"):
        with atomic.output_errors(tmp_path / "x"):
            raise OSError(errno.EROFS, "Read-only file system")
    with pytest.raises(FileNotFoundError):
        with atomic.output_errors(tmp_path / "x"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")


# --- folders -------------------------------------------------------------------------------------

def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "file.txt").write_text(text)
    return path


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "rename-protocol"])
def test_replace_dir_swaps_in_the_new_folder(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "exchange_paths", lambda a, b: False)
    dest = _folder(tmp_path / "dest", "old")
    replace_dir(_folder(tmp_path / ".dest.new", "new"), dest)
    assert (dest / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    replace_dir(_folder(tmp_path / "fresh", "first"), tmp_path / "absent")
    assert (tmp_path / "absent" / "file.txt").read_text() == "first"


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no except clause for Exception catches it."""


def test_rename_protocol_killed_between_renames_is_recovered(tmp_path, monkeypatch):
    dest = _folder(tmp_path / "dest", "old")
    real = os.replace

    def killed_after_first_rename(src, dst):
        if Path(dst) == dest:
            raise Killed()
        return real(src, dst)

    monkeypatch.setattr(atomic, "exchange_paths", lambda a, b: False)
    monkeypatch.setattr(atomic.os, "replace", killed_after_first_rename)
    with pytest.raises(Killed):
        replace_dir(_folder(tmp_path / "new", "new"), dest)
    monkeypatch.undo()
    assert not dest.exists() and (tmp_path / ".dest.old" / "file.txt").read_text() == "old"
    recover_dir(dest)
    assert (dest / "file.txt").read_text() == "old" and not (tmp_path / ".dest.old").exists()


def test_rename_protocol_that_fails_puts_the_old_folder_back(tmp_path, monkeypatch):
    """Not killed but refused (e.g. ENOSPC on the second rename): the old folder is back at once."""
    dest = _folder(tmp_path / "dest", "old")
    real = os.replace

    def no_space(src, dst):
        if Path(dst) == dest and Path(src).name == "new":
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(atomic, "exchange_paths", lambda a, b: False)
    monkeypatch.setattr(atomic.os, "replace", no_space)
    with pytest.raises(OutputError, match="no space left on device"):
        replace_dir(_folder(tmp_path / "new", "new"), dest)
    assert (dest / "file.txt").read_text() == "old"


def test_a_folder_with_other_files_is_never_replaced(tmp_path):
    mine = _folder(tmp_path / "mine", "notes")
    with pytest.raises(OutputError, match=r"mine: cannot write \(holds 'file.txt', which is not part of a "
                                          r"run directory; choose a new or empty folder\)"):
        check_replaceable(mine, ["metrics.json", "models"], what="run directory")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_replaceable(tmp_path / "afile", [], what="model bundle")
    check_replaceable(tmp_path / "absent", [], what="model bundle")
    assert work_dir(tmp_path / "run") == tmp_path / ".run.work"


# --- bundles on a full disk ----------------------------------------------------------------------

def test_save_bundle_on_a_full_disk_keeps_the_old_bundle_then_succeeds_with_space(small_fs):
    from test_bundle import make_bundle
    from videoseq.models.bundle import load_bundle

    fs = small_fs(2048)
    dest = make_bundle(fs / "bundle", head="lstm")                  # about 1.6 MB: a second does not fit
    with pytest.raises(OutputError) as err:
        make_bundle(dest, head="gru", seed=1)
    assert _one_line(err.value) == f"{dest}: cannot write (no space left on device)"
    assert load_bundle(dest).head == "lstm"
    assert sorted(p.name for p in fs.iterdir()) == ["bundle"]       # no .tmp folder left
    resize_fs(fs, 8192)
    make_bundle(dest, head="gru", seed=1)
    assert load_bundle(dest).head == "gru"
    assert sorted(p.name for p in fs.iterdir()) == ["bundle"]


# --- the inbox ledger ----------------------------------------------------------------------------

def test_ledger_append_on_a_full_disk_is_one_line_and_the_torn_line_is_skipped(small_fs):
    from flows.inbox import append_record, read_ledger

    fs = small_fs(64)
    ledger = fs / ".videoseq" / "results.jsonl"
    append_record(ledger, {"path": "a.mp4", "label": "x", "digest": "d1"})
    filler = fill(fs)
    big = {"path": "b.mp4", "label": "y" * 20_000, "digest": "d2"}    # more than the page left
    with pytest.raises(OutputError) as err:
        append_record(ledger, big)
    assert _one_line(err.value) == f"{ledger}: cannot write (no space left on device)"
    assert set(read_ledger(ledger)) == {"d1"}                         # a partial line is not trusted
    filler.unlink()
    append_record(ledger, {"path": "c.mp4", "label": "z", "digest": "d3"})
    assert set(read_ledger(ledger)) == {"d1", "d3"}
    assert ledger.read_bytes().endswith(b'"digest": "d3"}\n')


def test_read_ledger_skips_torn_undecodable_and_over_long_lines(tmp_path):
    from flows import inbox
    from flows.inbox import read_ledger

    ledger = tmp_path / "results.jsonl"
    lines = [json.dumps({"path": "a", "digest": "d1"}).encode(),
             '{"path": "é'.encode()[:-1],                                  # cut inside a UTF-8 character
             b'{"path": "' + b"x" * (inbox.MAX_LINE_BYTES + 10) + b'", "digest": "long"}',
             b"[" * 100_000,                                               # nesting past the recursion limit
             json.dumps({"path": "b", "digest": "d2"}).encode(),
             b'{"path": "c", "dig']                                        # torn last line
    ledger.write_bytes(b"\n".join(lines))
    assert set(read_ledger(ledger)) == {"d1", "d2"}
