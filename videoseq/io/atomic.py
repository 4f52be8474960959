"""Atomic file and folder writes: a temp file (or folder) beside the destination, fsync, then rename.

A run killed at any point leaves either the old file or the new one, never half of one; a full disk
(or quota, or a read-only file system) is an `OutputError` naming the destination, with the temp file
removed.

    atomic_write_json("runs/x/metrics.json", metrics)
    replace_dir(Path("models/.lstm.tmp123"), Path("models/lstm"))   # the old folder or the new, always

A folder built over a long time (a run directory, a bundle) is built in `work_dir(dest)`, the hidden
sibling `.NAME.work`, which a rerun resumes from, and moved to `dest` with `replace_dir` when complete.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from videoseq.errors import OutputError

# Errors that mean "this output cannot be written here", reported as one line (OutputError).
OUTPUT_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                 errno.EPERM: "operation not permitted", errno.EFBIG: "file too large"}


def output_error(path: str | Path, e: OSError) -> OutputError | None:
    """The one-line OutputError for an OSError that means the output cannot be written, else None."""
    reason = OUTPUT_ERRNOS.get(e.errno or 0)
    return OutputError(path, reason) if reason else None


@contextmanager
def output_errors(path: str | Path) -> Iterator[None]:
    """Turn an OSError that means "cannot write here" (full disk, ...) raised inside the block into a
    one-line OutputError naming the file the system named, else `path`."""
    try:
        yield
    except OSError as e:
        err = output_error(e.filename or path, e)
        if err is None:
            raise
        raise err from None


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; create parent folders as needed. A full disk (or another
    reason the output cannot be written) is an OutputError, the temp file removed."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(e, OSError) and (err := output_error(path, e)) is not None:
            raise err from None
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` as UTF-8, atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Write `obj` as JSON (keys in their order, a final newline) to `path`, atomically; return the path."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """`np.savez` (uncompressed: frames are already small) written atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """`torch.save` of tensors / state dicts, written atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


# --- folders -------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2          # linux/fs.h: atomically exchange two paths


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE): at every instant each
    name holds one of the two folders. False where the system or file system does not offer it."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def work_dir(dest: str | Path) -> Path:
    """The hidden sibling `.NAME.work` where the folder `dest` is built (and resumed after a kill)."""
    dest = Path(os.path.abspath(dest))
    return dest.with_name(f".{dest.name}.work")


def check_replaceable(dest: str | Path, allowed: Iterable[str], *, what: str) -> None:
    """OutputError unless `dest` is absent, an empty folder, or a folder holding only `allowed`
    names (a previous `what`): replacing a folder never deletes anything else."""
    dest = Path(dest)
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_symlink() or not dest.is_dir():
        raise OutputError(dest, f"not a folder; expected a {what} or a new path")
    allowed = set(allowed)
    foreign = sorted(p.name for p in dest.iterdir() if p.name not in allowed)
    if foreign:
        raise OutputError(dest, f"holds {foreign[0]!r}, which is not part of a {what}; "
                                f"choose a new or empty folder")


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder `tmp` to `dest`, replacing any folder there, so that `dest` is the old
    folder or the new one at every instant: an atomic exchange where the system has one, else a
    rename protocol that `recover_dir` completes (old moved to `.NAME.old`, new moved in). `tmp`
    must be on the same file system (a sibling, or inside `work_dir(dest)`)."""
    tmp, dest = Path(tmp), Path(dest)
    with output_errors(dest):
        recover_dir(dest)
        if not dest.exists():
            os.replace(tmp, dest)
        elif exchange_paths(tmp, dest):
            shutil.rmtree(tmp, ignore_errors=True)          # tmp now holds the old folder
        else:
            old = _old_name(dest)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            try:
                os.replace(tmp, dest)                        # killed before this line: recover_dir
            except OSError:
                recover_dir(dest)                            # not killed: the old folder goes back
                raise
            shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dest.parent)


def recover_dir(dest: str | Path) -> None:
    """Finish a `replace_dir` that was killed between its two renames: the old folder goes back.
    Loaders call it before reading `dest`; a file system that refuses (read-only) is left as is."""
    dest = Path(dest)
    old = _old_name(dest)
    try:
        if not dest.exists() and old.is_dir():
            os.replace(old, dest)
        elif old.exists() and dest.exists():
            shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass


def _old_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.old")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
