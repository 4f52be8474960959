"""Find the videos of a dataset root in one of three layouts, detected automatically (data/README.md).

    layout, found = find_videos(Path("my_videos"), DataConfig())

- "manifest": `root/manifest.csv` with columns `path,label[,split][,group]`, paths relative to root;
- "splits":   `root/{train,val,test}/<class>/...` (val optional: videoseq carves it from train);
- "folders":  `root/<class>/...`, the split made by videoseq.

Hidden files and folders, and files whose extension is not a video extension, are ignored. Nothing is
decoded here: `Found.status` is "" for a file still to be probed, or the reason it is already skipped.
"""
from __future__ import annotations

import csv
import os
import re
import stat
from pathlib import Path
from typing import Iterator, NamedTuple, TextIO

from videoseq.config import DataConfig
from videoseq.errors import DatasetError
from videoseq.data.splits import SPLITS, compile_group_regex, group_of
from videoseq.io.files import is_video_file, normalize_extensions, walk_videos

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("path", "label", "split", "group")
MAX_MANIFEST_LINE = 64 << 10      # characters in one manifest line; a row is a path and a few names
MAX_MANIFEST_ROWS = 5_000_000     # rows of a manifest (the largest public video datasets have ~10^6 clips)
_DRIVE = re.compile(r"[A-Za-z]:")


class Found(NamedTuple):
    """One file a layout found under the root, before probing."""
    rel: str             # POSIX path relative to the root
    label: str           # "" when the file is in no class folder
    split: str           # "" when the layout leaves the split to videoseq
    group: str | None
    status: str          # "" = to be probed; otherwise why it is skipped


def detect_layout(root: Path) -> str:
    """The layout of `root`: "manifest" (a manifest.csv), "splits" (train/val/test folders) or "folders"."""
    if (root / MANIFEST).is_file():
        return "manifest"
    if any((root / s).is_dir() for s in SPLITS):
        return "splits"
    return "folders"


def find_videos(root: Path, data: DataConfig) -> tuple[str, list[Found]]:
    """The layout of `root` and every candidate video in it, sorted by relative path."""
    pattern = compile_group_regex(data.group_regex)
    exts = normalize_extensions(data.extensions)
    layout = detect_layout(root)
    if layout == "manifest":
        found = _from_manifest(root, exts, pattern)
    elif layout == "splits":
        found = _from_split_folders(root, exts, pattern)
    else:
        found = _from_class_folders(root, "", root, exts, pattern)
    return layout, sorted(found)


def _from_class_folders(root: Path, split: str, folder: Path, exts: set[str],
                        pattern: re.Pattern[str] | None) -> list[Found]:
    found = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            for path in walk_videos(child, exts):
                rel = path.relative_to(root).as_posix()
                found.append(Found(rel, child.name, split, group_of(path.name, pattern), ""))
        elif is_video_file(child, exts):
            found.append(Found(child.relative_to(root).as_posix(), "", split, None, "not in a class folder"))
    return found


def _from_split_folders(root: Path, exts: set[str], pattern: re.Pattern[str] | None) -> list[Found]:
    present = [s for s in SPLITS if (root / s).is_dir()]
    if "train" not in present or "test" not in present:
        raise DatasetError(f"{root}: has split folders ({', '.join(present)}) but a split layout needs "
                           f"train/ and test/ (val/ is optional); class folders named train, val or test "
                           f"need a {MANIFEST}")
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name not in SPLITS and not child.name.startswith("."):
            if next(iter(walk_videos(child, exts)), None) is not None:
                raise DatasetError(f"{root}: mixes split folders (train/, test/) with the folder "
                                   f"{child.name}/; put every class under train/, val/ or test/")
    found = []
    for s in present:
        found += _from_class_folders(root, s, root / s, exts, pattern)
    return found


def _from_manifest(root: Path, exts: frozenset[str], pattern: re.Pattern[str] | None) -> list[Found]:
    """The rows of `root/manifest.csv`, read as a stream: memory follows the rows, never one line's
    claim (MAX_MANIFEST_LINE) or a runaway row count (MAX_MANIFEST_ROWS). A row whose file is missing
    costs one failed `lstat`, never a probe."""
    manifest = root / MANIFEST
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            return _manifest_rows(manifest, csv.reader(_bounded_lines(f, manifest)), root, exts, pattern)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{manifest}: cannot read ({e})") from None


def _bounded_lines(f: TextIO, manifest: Path) -> Iterator[str]:
    """The lines of `f`, each read with a bound: a line longer than MAX_MANIFEST_LINE is a DatasetError
    naming it, found after reading MAX_MANIFEST_LINE characters of it (not the whole line)."""
    number = 0
    while line := f.readline(MAX_MANIFEST_LINE + 1):
        number += 1
        if len(line) > MAX_MANIFEST_LINE and not line.endswith("\n"):
            raise DatasetError(f"{manifest}:{number}: line longer than {MAX_MANIFEST_LINE} characters "
                               f"(MAX_MANIFEST_LINE); not a manifest of path,label[,split][,group] rows")
        yield line


def _manifest_rows(manifest: Path, reader: Iterator[list[str]], root: Path, exts: frozenset[str],
                   pattern: re.Pattern[str] | None) -> list[Found]:
    rows = (row for row in reader if "".join(row).strip())       # blank lines and rows are skipped
    first = next(rows, None)
    if first is None:
        raise DatasetError(f"{manifest}: empty; expected a header path,label[,split][,group]")
    header = [h.strip().lower() for h in first]
    unknown = [h for h in header if h not in MANIFEST_COLUMNS]
    if unknown or "path" not in header or "label" not in header or len(set(header)) != len(header):
        raise DatasetError(f"{manifest}: header {','.join(first)!r} must be path,label[,split][,group]")
    at = {h: header.index(h) if h in header else None for h in MANIFEST_COLUMNS}
    paths = _ManifestPaths(manifest, root, exts)
    found: list[Found] = []
    seen: dict[str, int] = {}
    shared: dict[str, str] = {}               # one string object per distinct label / split / group
    split_rows: tuple[bool, int] | None = None  # (the first data row has a split, its line)
    for row in rows:
        line = reader.line_num                # type: ignore[attr-defined]  (a csv reader)
        if len(found) >= MAX_MANIFEST_ROWS:
            raise DatasetError(f"{manifest}:{line}: more than {MAX_MANIFEST_ROWS} rows (MAX_MANIFEST_ROWS)")
        if len(row) != len(header):
            raise DatasetError(f"{manifest}:{line}: {len(row)} columns, the header has {len(header)}")
        raw, label = row[at["path"]].strip(), row[at["label"]].strip()
        given_split = row[at["split"]].strip() if at["split"] is not None else ""
        if split_rows is None:
            split_rows = (bool(given_split), line)
        elif bool(given_split) != split_rows[0]:
            missing = line if split_rows[0] else split_rows[1]
            raise DatasetError(f"{manifest}:{missing}: no split, while other rows have one; give every row a "
                               f"split or none")
        rel, status = paths.check(line, raw)
        if rel in seen:
            raise DatasetError(f"{manifest}:{line}: {raw!r} is listed twice (also line {seen[rel]})")
        seen[rel] = line
        if not label:
            raise DatasetError(f"{manifest}:{line}: {raw!r} has no label")
        split = given_split.lower()
        if split and split not in SPLITS:
            raise DatasetError(f"{manifest}:{line}: split {given_split!r} is not one of {', '.join(SPLITS)}")
        group = (row[at["group"]].strip() if at["group"] is not None else "") \
            or group_of(rel.rpartition("/")[2], pattern)
        found.append(Found(rel, shared.setdefault(label, label), shared.setdefault(split, split),
                           shared.setdefault(group, group) if group is not None else None, status))
    return found


class _ManifestPaths:
    """Manifest paths checked against the root: normalised, inside the root (symlinks resolved; the
    real path of each folder looked up once), and the status of the file each names, in one `lstat`."""

    def __init__(self, manifest: Path, root: Path, exts: frozenset[str]):
        self.manifest, self.root, self.exts = manifest, root, exts
        self.prefix = os.path.join(str(root), "")
        self.real_root = os.path.realpath(root)
        self.real_prefix = os.path.join(self.real_root, "")
        self._real_dirs: dict[str, str] = {"": self.real_prefix}     # folder -> its real path + "/"

    def check(self, line: int, raw: str) -> tuple[str, str]:
        """(`raw` as a normalised relative POSIX path, "" for a file to probe or why it is skipped: not
        found, not a file, not a video extension); `DatasetError` if the path leaves the root."""
        manifest, root = self.manifest, self.root
        if not raw:
            raise DatasetError(f"{manifest}:{line}: empty path")
        p = raw.replace("\\", "/")
        if p.startswith("/") or _DRIVE.match(p):
            raise DatasetError(f"{manifest}:{line}: path {raw!r} is absolute; paths must be relative to {root}")
        rel = os.path.normpath(p).replace(os.sep, "/")
        if rel == ".." or rel.startswith("../"):
            raise DatasetError(f"{manifest}:{line}: path {raw!r} leaves the dataset root {root}")
        full = self.prefix + rel
        try:
            st: os.stat_result | None = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):          # the file itself points elsewhere
            real = os.path.realpath(full)
            try:
                st = os.stat(full)
            except (FileNotFoundError, NotADirectoryError):
                st = None
        else:
            folder, _, name = rel.rpartition("/")
            real_dir = self._real_dirs.get(folder)
            if real_dir is None:
                real_dir = self._real_dirs[folder] = os.path.join(os.path.realpath(self.prefix + folder), "")
            real = real_dir + name
        if real != self.real_root and not real.startswith(self.real_prefix):
            raise DatasetError(f"{manifest}:{line}: path {raw!r} leaves the dataset root {root} "
                               f"(it resolves to {real})")
        if st is None:
            return rel, "not found"
        if not stat.S_ISREG(st.st_mode):
            return rel, "not a file"
        suffix = os.path.splitext(rel)[1].lower()
        return rel, "" if suffix in self.exts else f"not a video extension ({suffix or 'none'})"
