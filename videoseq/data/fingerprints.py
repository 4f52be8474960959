"""Persistent file fingerprints: a video's content hash, computed once and remembered across processes.

    digest = fingerprint("data/a/clip.mp4")          # blake2b-128 of the bytes, hex; read at most once
    store = FingerprintStore(tmp / "fp")             # an explicit store (tests, tools)
    digest = fingerprint(path, store=store)
    bytes_hashed()                                   # bytes this process has read to hash files

The store is a folder, by default `<cache>/fingerprints` (`$VIDEOSEQ_FINGERPRINTS`, else
`$VIDEOSEQ_CACHE/fingerprints`, else `~/.cache/videoseq/fingerprints`: the cache root of
`data.plan.default_cache_dir` for the default runtime section). One small JSON file per fingerprint,
`<root>/<k[:2]>/<k>.json`, where k hashes the file's stat key (absolute path, size, mtime_ns, inode,
ctime_ns): one lookup is one small read. An entry is trusted only when every field of its stat key
equals the file's current stat; an entry that does not parse or does not match is a miss, and the
file is hashed again and the entry rewritten. A digest is stored only when the file's stat is the
same after hashing as before (a file being written is hashed, not remembered).

Entries are written atomically (`io.atomic`), so any number of processes may fill one store at once:
writers of the same entry write the same bytes. A store that cannot be written (read-only, full, not
a folder) never breaks hashing: the digest is computed and returned, not remembered, and a warning
is logged once per folder and process. A file whose stat key changes (edited, touched, replaced, moved) leaves its
old entry behind; entries are a few hundred bytes and deleting the folder at any time is safe.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import threading
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

from videoseq.errors import OutputError, VideoReadError
from videoseq.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

ENV_VAR = "VIDEOSEQ_FINGERPRINTS"   # the store's folder; overrides the default under the cache root
STORE_FORMAT = 1                    # bump when an entry's fields change: old entries become misses
MEMO_SIZE = 65536                   # fingerprints remembered in memory per store (an LRU)
MAX_ENTRY_BYTES = 1 << 16           # an entry file larger than this is not one of ours: a miss
_CHUNK = 1 << 20
_HEX128 = re.compile(r"[0-9a-f]{32}")

_lock = threading.Lock()
_bytes_hashed = 0
_stores: dict[Path, "FingerprintStore"] = {}
_unwritable: set[Path] = set()      # store folders this process has warned about


class StatKey(NamedTuple):
    """What identifies one version of one file without reading it."""
    path: str          # absolute path
    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int      # changes on every write and metadata change; cannot be set back by a tool


def stat_key(path: str | Path) -> StatKey:
    """The `StatKey` of `path` (made absolute); `VideoReadError` "not a file" for anything but a
    regular file (a FIFO, a device, a folder), which is never opened; `OSError` when it cannot be
    stat'ed (e.g. it does not exist)."""
    p = os.path.abspath(path)
    st = os.stat(p)
    if not stat.S_ISREG(st.st_mode):
        raise VideoReadError(path, "not a file")
    return StatKey(p, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def bytes_hashed() -> int:
    """Bytes this process has read to hash files since it started: unchanged for fingerprints that
    came from memory or from the store."""
    return _bytes_hashed


def hash_file(path: str | Path) -> str:
    """blake2b (128 bit, hex) of the bytes of `path`, read in 1 MiB chunks; counted in `bytes_hashed`."""
    global _bytes_hashed
    h = hashlib.blake2b(digest_size=16)
    read = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            read += len(chunk)
    with _lock:
        _bytes_hashed += read
    return h.hexdigest()


def default_root() -> Path:
    """`$VIDEOSEQ_FINGERPRINTS`, else `<cache root>/fingerprints` with the cache root of the default
    runtime section (`$VIDEOSEQ_CACHE`, else `~/.cache/videoseq`; `data.plan.default_cache_dir`)."""
    chosen = os.environ.get(ENV_VAR)
    if chosen:
        return Path(chosen).expanduser()
    return Path(os.environ.get("VIDEOSEQ_CACHE") or "~/.cache/videoseq").expanduser() / "fingerprints"


def default_store() -> "FingerprintStore":
    """The store at `default_root()` (read from the environment on every call), one per folder."""
    root = default_root()
    with _lock:
        store = _stores.get(root)
        if store is None:
            store = _stores[root] = FingerprintStore(root)
    return store


def fingerprint(path: str | Path, *, store: "FingerprintStore | None" = None) -> str:
    """The content digest of the file `path` (blake2b-128, hex), from memory or `store` (None: the
    default store) when its stat key is unchanged, else hashed now and remembered. Raises
    `VideoReadError` "not a file" for a FIFO, device or folder, `OSError` for a file that cannot be
    read; a store that cannot be read or written only costs hashing."""
    return (store or default_store()).digest(path)


class FingerprintStore:
    """Fingerprints under `root`, shared by every process that opens the same folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._memo: OrderedDict[StatKey, str] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FingerprintStore({str(self.root)!r})"

    def digest(self, path: str | Path) -> str:
        """The digest of `path` (see `fingerprint`)."""
        key = stat_key(path)
        with self._lock:
            digest = self._memo.get(key)
            if digest is not None:
                self._memo.move_to_end(key)
                return digest
        digest = self.lookup(key)
        if digest is None:
            digest = hash_file(key.path)
            if not _unchanged(key):                # written (or removed) while it was read: not remembered
                return digest
            self._save(key, digest)
        self._remember(key, digest)
        return digest

    def entry_path(self, key: StatKey) -> Path:
        """The file that holds (or would hold) the fingerprint of `key`."""
        blob = json.dumps([os.fsencode(key.path).hex(), *key[1:]]).encode()
        name = hashlib.blake2b(blob, digest_size=16).hexdigest()
        return self.root / name[:2] / f"{name}.json"

    def lookup(self, key: StatKey) -> str | None:
        """The stored digest of exactly this stat key, or None: no entry, an entry that cannot be read,
        does not parse, or was written for another stat key (all misses)."""
        entry = self.entry_path(key)
        try:
            with open(entry, "rb") as f:
                raw = f.read(MAX_ENTRY_BYTES + 1)
        except OSError:
            return None
        try:
            if len(raw) > MAX_ENTRY_BYTES:
                raise ValueError(f"{len(raw)} bytes or more")
            record = json.loads(raw)
            value = record[self.FIELD]
            stored = (record["format"], record["path"], record["size"], record["mtime_ns"], record["ino"],
                      record["ctime_ns"])
            if not self._valid(value):
                raise ValueError(f"{self.FIELD} {value!r}")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            log.debug("%s entry %s is unusable (%s: %s); computing again", self.FIELD, entry, type(e).__name__, e)
            return None
        return value if stored == (STORE_FORMAT, *key) else None

    FIELD = "digest"                 # the entry's value: a content digest

    @staticmethod
    def _valid(value: object) -> bool:
        return isinstance(value, str) and _HEX128.fullmatch(value) is not None

    def _save(self, key: StatKey, digest) -> None:
        # the path as JSON text: undecodable bytes are surrogate escapes, which JSON keeps as \udcXX
        text = json.dumps({"format": STORE_FORMAT, **key._asdict(), self.FIELD: digest}) + "\n"
        try:
            atomic_write_text(self.entry_path(key), text)
        except (OutputError, OSError) as e:        # full, read-only, not a folder, ...
            with _lock:
                first = self.root not in _unwritable
                _unwritable.add(self.root)
            if first:
                log.warning("fingerprint store %s cannot be written (%s); file digests are computed but "
                            "not remembered", self.root, e)

    def remembered(self, path: str | Path, compute):
        """The value stored for `path`'s current stat key, else `compute()` stored (when the file did
        not change meanwhile and the value is not None) and returned."""
        key = stat_key(path)
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        value = self.lookup(key)
        if value is None:
            value = compute()
            if value is None or not _unchanged(key):
                return value
            self._save(key, value)
        self._remember(key, value)
        return value

    def _remember(self, key: StatKey, digest) -> None:
        with self._lock:
            self._memo[key] = digest
            self._memo.move_to_end(key)
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)


class ProbeStore(FingerprintStore):
    """What a scan learnt about a file (status, frame count, whether exact, for a `min_frames`), kept
    like the fingerprints, keyed by the file's stat key, under `<fingerprint store>/probes/`: a rerun
    of a scan over unchanged files opens none of them."""

    FIELD = "probe"

    @staticmethod
    def _valid(value: object) -> bool:
        return (isinstance(value, list) and len(value) == 4 and isinstance(value[0], int)
                and isinstance(value[1], str) and (value[2] is None or isinstance(value[2], int))
                and isinstance(value[3], bool))


def default_probe_store() -> ProbeStore:
    """The probe store under `default_root()` (read from the environment on every call), one per folder."""
    root = default_root() / "probes"
    with _lock:
        store = _stores.get(root)
        if store is None:
            store = _stores[root] = ProbeStore(root)
    return store  # type: ignore[return-value]


def _unchanged(key: StatKey) -> bool:
    """True when the file at `key.path` still has exactly this stat key."""
    try:
        return stat_key(key.path) == key
    except (OSError, VideoReadError):
        return False
