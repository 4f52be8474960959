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
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from videoseq.config import DataConfig
from videoseq.errors import DatasetError
from videoseq.data.splits import SPLITS, compile_group_regex, group_of
from videoseq.io.files import is_video_file, normalize_extensions, walk_videos

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("path", "label", "split", "group")


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


def _from_manifest(root: Path, exts: set[str], pattern: re.Pattern[str] | None) -> list[Found]:
    manifest = root / MANIFEST
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{manifest}: cannot read ({e})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DatasetError(f"{manifest}: empty; expected a header path,label[,split][,group]")
    header = [h.strip().lower() for h in rows[0]]
    unknown = [h for h in header if h not in MANIFEST_COLUMNS]
    if unknown or "path" not in header or "label" not in header or len(set(header)) != len(header):
        raise DatasetError(f"{manifest}: header {','.join(rows[0])!r} must be path,label[,split][,group]")
    records = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DatasetError(f"{manifest}:{line}: {len(row)} columns, the header has {len(header)}")
        records.append((line, {h: cell.strip() for h, cell in zip(header, row)}))
    with_split = [line for line, r in records if r.get("split")]
    if with_split and len(with_split) != len(records):
        missing = next(line for line, r in records if not r.get("split"))
        raise DatasetError(f"{manifest}:{missing}: no split, while other rows have one; give every row a "
                           f"split or none")
    real_root = root.resolve()
    found, seen = [], {}
    for line, r in records:
        rel = _manifest_path(manifest, line, r["path"], root, real_root)
        if rel in seen:
            raise DatasetError(f"{manifest}:{line}: {r['path']!r} is listed twice (also line {seen[rel]})")
        seen[rel] = line
        if not r["label"]:
            raise DatasetError(f"{manifest}:{line}: {r['path']!r} has no label")
        split = r.get("split", "").lower()
        if split and split not in SPLITS:
            raise DatasetError(f"{manifest}:{line}: split {r['split']!r} is not one of {', '.join(SPLITS)}")
        path = root / rel
        group = r.get("group") or group_of(path.name, pattern)
        if not path.exists():
            status = "not found"
        elif not path.is_file():
            status = "not a file"
        elif not is_video_file(path, exts):
            status = f"not a video extension ({path.suffix or 'none'})"
        else:
            status = ""
        found.append(Found(rel, r["label"], split, group, status))
    return found


def _manifest_path(manifest: Path, line: int, raw: str, root: Path, real_root: Path) -> str:
    """A manifest path as a normalised relative POSIX path; `DatasetError` if it leaves the root."""
    if not raw:
        raise DatasetError(f"{manifest}:{line}: empty path")
    p = raw.replace("\\", "/")
    if PurePosixPath(p).is_absolute() or re.match(r"^[A-Za-z]:", p):
        raise DatasetError(f"{manifest}:{line}: path {raw!r} is absolute; paths must be relative to {root}")
    rel = os.path.normpath(p).replace(os.sep, "/")
    if rel == ".." or rel.startswith("../"):
        raise DatasetError(f"{manifest}:{line}: path {raw!r} leaves the dataset root {root}")
    real = (root / rel).resolve()
    if real != real_root and real_root not in real.parents:
        raise DatasetError(f"{manifest}:{line}: path {raw!r} leaves the dataset root {root} "
                           f"(it resolves to {real})")
    return rel

