"""Finding video files: the one walker every part of videoseq uses (dataset layouts, `classify` on a
folder, the inbox flow), so all of them agree on what counts as a video.

    for path in walk_videos("data/inbox", [".mp4", ".avi"]):    # sorted, hidden entries skipped
        ...
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator


def normalize_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """`["MP4", ".avi"]` -> `{".mp4", ".avi"}`: lower case, with the leading dot."""
    return frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def is_video_file(path: str | Path, extensions: Iterable[str]) -> bool:
    """True when `path`'s suffix (case-insensitive) is one of `extensions` (with or without the dot)."""
    return Path(path).suffix.lower() in normalize_extensions(extensions)


def walk_videos(folder: str | Path, extensions: Iterable[str]) -> Iterator[Path]:
    """Video files under `folder`, recursively, folder by folder in sorted order; files and folders
    whose name starts with "." are skipped (caches, ledgers, partial downloads)."""
    exts = normalize_extensions(extensions)
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in exts:
                yield Path(dirpath) / name
