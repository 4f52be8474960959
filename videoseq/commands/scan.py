"""`videoseq scan ROOT`: index and validate a dataset; print counts per class and split, and every
skipped file with its reason. Exit 0 when at least one video is usable, 2 when none (or the layout
cannot be used).

Scan opens each file and decodes its first frame only; frame counts are the containers' packet counts.
Extraction (`compare`, `train`, the pipeline flow) decodes each file once and skips, with its reason in
the run's report, a file that breaks mid-way or turns out shorter than data.min_frames."""
from __future__ import annotations

import argparse
import json
import sys

from videoseq.commands.common import add_config_arguments, config_from_args

HELP = "index and validate a dataset; print counts per class and split, and every skipped file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of `videoseq scan` to `p`."""
    p.add_argument("root", metavar="ROOT", help="dataset folder (class folders, train/val/test, or manifest.csv)")
    p.add_argument("--json", action="store_true", help="print the index as JSON on stdout")
    p.add_argument("--group-regex", metavar="R",
                   help=r"group of a file from its name (first capture group), e.g. '_g(\d+)_' for UCF101")
    p.add_argument("--index-out", metavar="FILE", help="also write the index as JSON to FILE")
    p.add_argument("--workers", type=int, metavar="N", help="probe processes (default: runtime.workers)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="seconds a file may take to probe before it is skipped as timed out (a stalled "
                        "mount, a hung decoder); 0 = no limit (default: runtime.job_timeout)")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Run `videoseq scan`: index ROOT, print the index as a table (or JSON); return 0 when a video is
    usable, else 2. A root that cannot be used raises `DatasetError` (exit 2 from `videoseq.cli`)."""
    from videoseq.data.dataset import scan_dataset
    from videoseq.errors import ConfigError

    cfg = config_from_args(args)
    if args.group_regex is not None:
        cfg.data.group_regex = args.group_regex
    if args.timeout is not None:
        if not args.timeout >= 0:
            raise ConfigError(f"--timeout {args.timeout:g}: expected seconds >= 0 (0: no limit)")
        cfg.runtime.job_timeout = args.timeout
    workers = cfg.runtime.workers if args.workers is None else args.workers
    index = scan_dataset(args.root, cfg.data, workers=workers,
                         progress=cfg.runtime.progress and sys.stderr.isatty(), timeout=cfg.runtime.timeout)
    if args.index_out:
        index.to_json(args.index_out)
    if args.json:
        print(json.dumps(index.to_dict(), indent=2))
    else:
        print(render(index, seed=cfg.data.split_seed))
    return 0 if index.ok() else 2


def render(index, *, seed: int) -> str:
    """A table of usable videos per class and split, then the skipped files with their reasons."""
    counts = index.counts()
    splits = list(counts)
    how = {"videoseq": f"split made by videoseq, seed {seed}", "layout": "splits as given",
           "layout+val": f"splits as given, val carved from train with seed {seed}"}
    how = how.get(index.split_source, index.split_source)
    lines = [f"{index.root}", f"layout: {index.layout} ({how}); {len(index.classes)} classes, "
             f"{len(index.ok())} usable of {len(index.entries)} video files"]
    width = max([len("class"), len("total")] + [len(c) for c in index.classes])
    lines.append(f"  {'class':<{width}}" + "".join(f"{s:>8}" for s in splits) + f"{'total':>8}")
    for c in index.classes:
        row = [counts[s][c] for s in splits]
        lines.append(f"  {c:<{width}}" + "".join(f"{n:>8}" for n in row) + f"{sum(row):>8}")
    totals = [sum(counts[s].values()) for s in splits]
    lines.append(f"  {'total':<{width}}" + "".join(f"{n:>8}" for n in totals) + f"{sum(totals):>8}")
    skipped = index.skipped()
    if skipped:
        lines.append(f"skipped {len(skipped)} file(s):")
        lines += [f"  {index.relpath(e)}: {e.status}" for e in skipped]
    else:
        lines.append("skipped: none")
    lines.append(f"frame counts are from the containers; extraction decodes every file and skips any that "
                 f"breaks mid-way or has fewer than {index.min_frames} frame(s) (data.min_frames)")
    return "\n".join(lines)

