"""The dataset index: every video file of a root, its label, split, group and status.

    index = scan_dataset("my_videos", DataConfig(group_regex=r"_g(\\d+)_"), workers=2, progress=True)
    index.counts()        # {"train": {"a": 14, "b": 14}, "val": {...}, "test": {...}}
    index.skipped()       # [VideoEntry(path=".../b/cut.mp4", ..., status="too short (3 < 8)")]
    index.to_json("runs/x/index.json")

Every candidate file is probed in a bounded process pool: its packets are indexed (no decoding) and
its first frame decoded, so a file that cannot be opened or decoded at all is found here, cheaply. A
broken file becomes an entry with the reason it is skipped, never an exception. The frame count is the
container's packet count (`frames_exact=False`); frames are decoded once, by extraction
(`cache.extract_dataset`), which confirms the count, records it, and skips a file that turns out to be
broken or shorter than `min_frames` (a truncated file whose index promised more) with its reason. A
file whose packet count is below `min_frames` is counted exactly here before it is called too short.
Splits come from the layout (`layouts.py`) or from `splits.make_splits` over the usable videos, and are
validated either way. A probe that runs longer than the timeout (`runtime.job_timeout`: a stalled mount,
a hung decoder) is stopped with its worker, and its file skipped as "unreadable: timed out after N s".
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from videoseq.io.atomic import atomic_write_json
from videoseq.config import JOB_TIMEOUT, DataConfig
from videoseq.errors import DatasetError, VideoReadError
from videoseq.data.layouts import find_videos
from videoseq.io.pool import JobCrash, JobTimeout, run_jobs
from videoseq.data.splits import SPLITS, SplitItem, check_splits, make_splits

log = logging.getLogger(__name__)

INDEX_FORMAT = 1


@dataclass(slots=True)
class VideoEntry:
    """One video file of a dataset: its label, split and group, and whether it is usable (or why not)."""

    path: str                      # absolute path of the file
    label: str                     # class name ("" for a file in no class folder)
    split: str                     # "train" | "val" | "test"; "" for a skipped file no layout put in a split
    group: str | None              # clips of one group never span two splits; None = its own group
    status: str = "ok"             # "ok" or why the file is skipped ("cannot open", "too short (3 < 8)", ...)
    num_frames: int | None = None  # scan: the packet count (provisional); extraction: the decoded count.
    #                                None when the file could not be read
    frames_exact: bool = False     # True once num_frames is confirmed by decoding (extraction, or a
    #                                scan that had to count: no packet index, or fewer than min_frames)


@dataclass
class DatasetIndex:
    """Every video file under one dataset root, with its layout, class list and where the splits came from."""

    root: str                      # absolute dataset root
    layout: str                    # "folders" | "splits" | "manifest"
    classes: list[str]             # sorted class names; a label's position here is its class id
    entries: list[VideoEntry] = field(default_factory=list)  # sorted by path
    split_source: str = "videoseq"  # "videoseq" (made by make_splits), "layout" (as given), "layout+val" (val carved)
    min_frames: int = 1            # data.min_frames of the scan; extraction enforces it on the decoded count

    def ok(self, split: str | None = None) -> list[VideoEntry]:
        """The usable entries; those of `split` only when it is given."""
        return [e for e in self.entries if e.status == "ok" and (split is None or e.split == split)]

    def skipped(self) -> list[VideoEntry]:
        """The unusable entries, each with its reason in `status`."""
        return [e for e in self.entries if e.status != "ok"]

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> class -> usable videos, for every split that has any (every class listed, zeros too)."""
        counts: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            n = Counter(e.label for e in self.ok(split))
            if n:
                counts[split] = {c: n.get(c, 0) for c in self.classes}
        return counts

    def mark_failed(self, path: str, reason: str) -> None:
        """Record that a file found usable at scan time failed later (e.g. decoding broke mid-way)."""
        self._entry(path).status = reason

    def confirm_frames(self, counts: dict[str, int]) -> None:
        """Record the frame counts that decoding found (extraction), path -> frames: they become exact."""
        by_path = {os.path.abspath(e.path): e for e in self.entries}
        for path, num_frames in counts.items():
            entry = by_path.get(os.path.abspath(path))
            if entry is None:
                raise KeyError(f"{path} is not in the index of {self.root}")
            entry.num_frames, entry.frames_exact = int(num_frames), True

    def _entry(self, path: str) -> VideoEntry:
        target = os.path.abspath(path)
        for e in self.entries:                 # entry paths are absolute already: a string compare
            if e.path == target:
                return e
        for e in self.entries:
            if os.path.abspath(e.path) == target:
                return e
        raise KeyError(f"{path} is not in the index of {self.root}")

    def relpath(self, entry: VideoEntry) -> str:
        """The path of `entry` relative to `root`, with forward slashes."""
        root = self.root.rstrip("/\\")
        if os.sep == "/" and entry.path.startswith(root + "/"):   # the common case, cheaply (millions of rows)
            return os.path.normpath(entry.path[len(root) + 1:])
        return Path(os.path.relpath(entry.path, self.root)).as_posix()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: entry paths relative to `root`."""
        return {"format": INDEX_FORMAT, "root": self.root, "layout": self.layout, "classes": self.classes,
                "split_source": self.split_source, "min_frames": self.min_frames,
                "entries": [{**{k: getattr(e, k) for k in _ENTRY_FIELDS}, "path": self.relpath(e)}
                            for e in self.entries]}

    def to_json(self, path: str | Path) -> Path:
        """Write `to_dict()` to `path` as JSON, atomically; return the path."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "index") -> DatasetIndex:
        """The index of a `to_dict()` form; `DatasetError` naming `source` when `raw` is not one."""
        try:
            if raw.get("format") != INDEX_FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {INDEX_FORMAT}")
            root = str(raw["root"])
            entries = [VideoEntry(**{**e, "path": os.path.normpath(os.path.join(root, e["path"]))})
                       for e in raw["entries"]]
            return cls(root=root, layout=str(raw["layout"]), classes=list(raw["classes"]), entries=entries,
                       split_source=str(raw.get("split_source", "videoseq")),
                       min_frames=int(raw.get("min_frames", 1)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DatasetError(f"{source}: not a videoseq dataset index ({type(e).__name__}: {e})") from None

    @classmethod
    def from_json(cls, path: str | Path) -> DatasetIndex:
        """The index in a JSON file written by `to_json`; `DatasetError` when unreadable or not an index."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DatasetError(f"{path}: cannot read the dataset index ({e})") from None
        if not isinstance(raw, dict):
            raise DatasetError(f"{path}: not a videoseq dataset index (not a JSON object)")
        return cls.from_dict(raw, source=str(path))


_ENTRY_FIELDS = [f.name for f in fields(VideoEntry)]


def probe_status(path: str, min_frames: int) -> tuple[str, int | None, bool]:
    """(status, frames, exact): status "ok" or why the file is unusable; frames the packet count
    (exact=False) or a decoded count (exact=True), None when unreadable. Decodes the first frame only,
    unless the packets promise fewer than `min_frames` (then counts by decoding before calling the file
    too short). Never raises: runs in pool workers. Remembered per file version and `min_frames` in
    the probe store (`data.fingerprints.ProbeStore`): an unchanged file is not opened again."""
    from videoseq.data.fingerprints import default_probe_store

    def compute() -> list | None:
        status, frames, exact, certain = _probe(path, min_frames)
        return [min_frames, status, frames, exact] if certain else None

    try:
        value = default_probe_store().remembered(path, compute)
    except (OSError, VideoReadError):            # cannot be stat'ed, or not a file: probe says why
        value = None
    if value is None or value[0] != min_frames:
        status, frames, exact, _ = _probe(path, min_frames)
        return status, frames, exact
    return value[1], value[2], value[3]


def _probe(path: str, min_frames: int) -> tuple[str, int | None, bool, bool]:
    """`probe_status`'s answer, and whether it is certain (a file's property, not a chance failure:
    an unforeseen decoder error is not remembered)."""
    from videoseq.io.video import probe

    try:
        info = probe(path)
        if info.num_frames < min_frames and not info.frames_exact:
            info = probe(path, count_frames=True)
    except VideoReadError as e:
        return e.reason, None, False, True
    except Exception as e:  # a decoder error we did not foresee must not end the scan
        first = (str(e).strip().splitlines() or [""])[0]
        return f"unreadable: {type(e).__name__}: {first}".rstrip(": "), None, False, False
    return length_status(info.num_frames, min_frames), int(info.num_frames), bool(info.frames_exact), True


def length_status(num_frames: int, min_frames: int) -> str:
    """"ok", "no frames" or "too short (n < min_frames)": the one rule for scan and extraction."""
    if num_frames <= 0:
        return "no frames"
    if num_frames < min_frames:
        return f"too short ({num_frames} < {min_frames})"
    return "ok"


def scan_dataset(root: str | Path, data: DataConfig, *, workers: int = 2, progress: bool = False,
                 timeout: float | None = JOB_TIMEOUT) -> DatasetIndex:
    """Index every video under `root`, probe each (in `workers` processes; 0 = in-process), split, validate.

    A probe still running after `timeout` seconds (None or 0: no limit; not enforced with workers=0) is
    stopped and its file skipped as "unreadable: timed out after N s". Raises `DatasetError` when the
    layout is unusable, no file is usable, a class has no usable video, a class is too small to split,
    or explicit splits miss a class / share a group.
    """
    root = Path(os.path.abspath(os.path.expanduser(str(root))))
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    layout, found = find_videos(root, data)
    if not found:
        raise DatasetError(f"{root}: no video files (layout {layout}; extensions {', '.join(data.extensions)})")

    todo = [f for f in found if not f.status]
    results = run_jobs(probe_status, [(str(root / f.rel), data.min_frames) for f in todo],
                       workers=workers, progress=progress, desc="scan", timeout=timeout)
    probed = {}
    for f, res in zip(todo, results):
        if isinstance(res, JobTimeout):
            res = (f"unreadable: {res.reason}", None, False)
        elif isinstance(res, JobCrash):
            res = ("unreadable: decoder crashed", None, False)
        probed[f.rel] = res
    entries = []
    prefix = os.path.join(str(root), "")
    for f in found:
        status, frames, exact = probed[f.rel] if f.rel in probed else (f.status, None, False)
        path = prefix + f.rel if os.sep == "/" else os.path.normpath(prefix + f.rel)   # rel: normalised
        entries.append(VideoEntry(path, f.label, f.split, f.group, status, frames, exact))
    index = DatasetIndex(root=str(root), layout=layout, classes=sorted({e.label for e in entries if e.label}),
                         entries=entries, min_frames=data.min_frames)
    _require_usable(index)
    _assign_splits(index, data, explicit=any(f.split for f in found))
    ok = index.ok()
    log.info("%s: %d usable videos of %d, %d classes, layout %s", root, len(ok), len(entries),
             len(index.classes), layout)
    return index


def _require_usable(index: DatasetIndex) -> None:
    skipped = index.skipped()
    if not index.ok():
        e = skipped[0]
        raise DatasetError(f"{index.root}: none of the {len(skipped)} video files is usable "
                           f"(e.g. {index.relpath(e)}: {e.status})")
    usable = {e.label for e in index.ok()}
    for label in index.classes:
        if label not in usable:
            bad = [e for e in skipped if e.label == label]
            raise DatasetError(f"class {label!r} has no usable video ({len(bad)} skipped, e.g. "
                               f"{index.relpath(bad[0])}: {bad[0].status})")


def _assign_splits(index: DatasetIndex, data: DataConfig, *, explicit: bool) -> None:
    """Fill in `split` for the usable entries: made here (folders, split-less manifest) or checked
    and completed (explicit splits; a missing val is carved from train, stratified and group-aware)."""
    ok = index.ok()
    items = {index.relpath(e): (e, SplitItem(index.relpath(e), e.label, e.group)) for e in ok}
    index.split_source = "layout" if explicit else "videoseq"
    if not explicit:
        assignment = make_splits([it for _, it in items.values()],
                                 fractions={"val": data.val_fraction, "test": data.test_fraction},
                                 seed=data.split_seed)
    else:
        assignment = {key: e.split for key, (e, _) in items.items()}
        present = [s for s in SPLITS if s in set(assignment.values())]
        check_splits([it for _, it in items.values()], assignment,
                     required=[s for s in SPLITS if s in present or s != "val"])
        if "val" not in present and data.val_fraction > 0:
            index.split_source = "layout+val"
            train = [it for e, it in items.values() if e.split == "train"]
            assignment.update(make_splits(train, fractions={"val": data.val_fraction},
                                          seed=data.split_seed, where=" in train"))
    for key, (e, _) in items.items():
        e.split = assignment[key]
