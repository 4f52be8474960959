"""Atomic file and folder writes: a temp file (or folder) beside the destination, fsync, then rename.

A run killed at any point leaves either the old file or the new one, never half of one; a full disk
(or quota, or a read-only file system) is an `OutputError` naming the destination, with the temp file
removed.

    atomic_write_json("runs/x/metrics.json", metrics)
    replace_dir(Path("models/.lstm.tmp123"), Path("models/lstm"))   # the old folder or the new, always
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
from pathlib import Path
from typing import Any

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


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder `tmp` to `dest`, replacing any folder there, so that `dest` is the old
    folder or the new one at every instant: an atomic exchange where the system has one, else a
    rename protocol that `recover_dir` completes (old moved to `.NAME.old`, new moved in)."""
    tmp, dest = Path(tmp), Path(dest)
    if not dest.exists():
        os.replace(tmp, dest)
    elif exchange_paths(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)          # tmp now holds the old folder
    else:
        old = _old_name(dest)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(tmp, dest)                            # killed before this line: recover_dir
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dest.parent)


def recover_dir(dest: Path) -> None:
    """Finish a `replace_dir` that was killed between its two renames: the old folder goes back."""
    dest = Path(dest)
    old = _old_name(dest)
    if not dest.exists() and old.is_dir():
        os.replace(old, dest)
    elif dest.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)


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
