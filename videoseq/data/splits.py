"""Train/val/test splits: stratified by class, seeded, group-aware, and a pure function of the input.

    assignment = make_splits(items, fractions={"val": 0.15, "test": 0.15}, seed=0)
    # {"a/clip1.mp4": "train", "a/clip2.mp4": "test", ...}

An item is one usable video: its key (path relative to the dataset root), label and group. A group
(e.g. UCF101's `_g08_`) is kept whole in one split; a video without a group is its own group. The
order of `items` never matters: every random choice comes from blake2b of (seed, key), not from the
position of a file on disk or Python's salted `hash()`.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from typing import Iterable, Mapping, NamedTuple, Sequence

from videoseq.errors import DatasetError

SPLITS = ("train", "val", "test")


class SplitItem(NamedTuple):
    """One usable video as the splitter sees it: its key, label and group."""

    key: str             # path relative to the dataset root: identity and ordering
    label: str
    group: str | None    # None: the video is a group of its own


def group_of(name: str, pattern: re.Pattern[str] | None) -> str | None:
    """The group of a file name: the first capture group of `pattern`, or the whole match; None if no match."""
    if pattern is None:
        return None
    m = pattern.search(name)
    if m is None:
        return None
    return m.group(1) if pattern.groups else m.group(0)


def compile_group_regex(regex: str | None) -> re.Pattern[str] | None:
    """`regex` compiled, or None when it is empty; `DatasetError` when it is not a valid regular expression."""
    if not regex:
        return None
    try:
        return re.compile(regex)
    except re.error as e:
        raise DatasetError(f"group_regex {regex!r}: not a valid regular expression ({e})") from None


def make_splits(items: Iterable[SplitItem], *, fractions: Mapping[str, float], seed: int,
                where: str = "") -> dict[str, str]:
    """Assign every item to "train" or to one of the splits named in `fractions`.

    Per class, each split s gets max(1, round(n * fractions[s])) videos and train the rest; whole
    groups move together, so with groups the counts are approximate. Raises `DatasetError` when a
    class has too few videos (or groups) to give every split one, saying how many are needed.
    `where` (e.g. " in train") qualifies the counts in messages.
    """
    items = sorted(items)
    for name, frac in fractions.items():
        if name not in SPLITS[1:]:
            raise ValueError(f"unknown split {name!r}")
        if not 0.0 <= frac < 1.0:
            raise DatasetError(f"{name}_fraction={frac}: must be at least 0 and below 1")
    if sum(fractions.values()) >= 1.0:
        raise DatasetError(f"split fractions {dict(fractions)} leave nothing for train")
    names = ["train"] + [s for s in SPLITS[1:] if fractions.get(s, 0.0) > 0.0]
    if not items:
        return {}

    units = _units(items)                                      # unit id -> items
    per_class = Counter(it.label for it in items)
    units_per_class = Counter(label for members in units.values() for label in {m.label for m in members})
    grouped = any(it.group is not None for it in items)
    for label in sorted(per_class):
        have = units_per_class[label]
        if have < len(names):
            what = f"{per_class[label]} usable video(s){where}"
            if grouped:
                what += f" in {have} group(s); groups stay whole, so a {'/'.join(names)} split needs " \
                        f"at least {len(names)} groups of it"
            else:
                what += f"; a {'/'.join(names)} split needs at least {len(names)}"
            raise DatasetError(f"class {label!r} has {what}")

    target = {s: {} for s in names}                            # split -> class -> wanted videos
    for label, n in per_class.items():
        rest = n
        for s in names[1:]:
            target[s][label] = max(1, round(n * fractions[s]))
            rest -= target[s][label]
        while rest < 1:                                        # tiny class: shrink the largest held-out split
            s = max(names[1:], key=lambda s: (target[s][label], s))
            target[s][label] -= 1
            rest += 1
        target["train"][label] = rest

    # big groups first (bin packing), then a seeded order that does not depend on the input order
    order = sorted(units, key=lambda u: (-len(units[u]), _keyed_hash(seed, u)))
    current = {s: Counter() for s in names}
    assignment: dict[str, str] = {}
    for u in order:
        sizes = Counter(m.label for m in units[u])
        best = max(names, key=lambda s: (*_score(sizes, target[s], current[s]), -names.index(s)))
        current[best].update(sizes)
        for m in units[u]:
            assignment[m.key] = best
    check_splits(items, assignment, required=names, where=where)
    return assignment


def check_splits(items: Sequence[SplitItem], assignment: Mapping[str, str], *, required: Sequence[str],
                 where: str = "") -> None:
    """Raise `DatasetError` if a group spans two splits or a required split misses a class."""
    split_of_group: dict[str, tuple[str, str]] = {}
    for it in sorted(items):
        if it.group is None:
            continue
        split = assignment[it.key]
        seen = split_of_group.setdefault(it.group, (split, it.key))
        if seen[0] != split:
            raise DatasetError(f"group {it.group!r} appears in both {seen[0]} ({seen[1]}) and {split} "
                               f"({it.key}); all videos of a group must be in one split")
    have = defaultdict(set)
    for it in items:
        have[assignment[it.key]].add(it.label)
    for label in sorted({it.label for it in items}):
        for split in required:
            if label not in have[split]:
                raise DatasetError(f"split {split!r}{where} has no usable video of class {label!r}; "
                                   f"every split needs every class")


def _units(items: Sequence[SplitItem]) -> dict[str, list[SplitItem]]:
    units: dict[str, list[SplitItem]] = defaultdict(list)
    for it in items:
        units[f"g:{it.group}" if it.group is not None else f"f:{it.key}"].append(it)
    return units


def _score(sizes: Counter, target: Mapping[str, int], current: Counter) -> tuple[float, float]:
    """How well a unit with per-class `sizes` fits a split: videos that fill a gap minus videos that
    overflow it, then (tie-break) how empty the split still is relative to its target."""
    fill = over = 0
    relative = 0.0
    for label, n in sizes.items():
        gap = target.get(label, 0) - current[label]
        fill += min(n, max(gap, 0))
        over += max(n - max(gap, 0), 0)
        relative += gap / max(target.get(label, 0), 1)
    return float(fill - over), relative / len(sizes)


def _keyed_hash(seed: int, key: str) -> str:
    return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).hexdigest()
