"""`videoseq compare ROOT --out RUN_DIR`: train the heads on the same data and compare them on test."""
from __future__ import annotations

import argparse
import json

from videoseq.commands.common import add_config_arguments, config_from_args

HELP = "train heads (default per_frame and lstm) on the same data and compare them on the test split"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of `videoseq compare` to `p`."""
    p.add_argument("root", metavar="ROOT", help="dataset root (folder per class, split folders, or manifest.csv)")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run directory for metrics, report, plots, models; put in place whole when the run "
                        "completes (a killed run resumes from .RUN_DIR.work beside it)")
    p.add_argument("--heads", help="comma-separated heads, baseline first (default per_frame,lstm)")
    p.add_argument("--encoder", help="frame encoder, e.g. small_cnn or efficientnet_lite0")
    p.add_argument("--mode", choices=("frozen", "finetune"), help="train heads on cached features, or end to end")
    p.add_argument("--seeds", type=int, metavar="N", help="repeat every head with N seeds")
    p.add_argument("--force", action="store_true",
                   help="train every head again, even when RUN_DIR was built from the same config and videos "
                        "or holds finished runs of them")
    p.add_argument("--json", action="store_true", help="print metrics.json instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(p)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The shortcut flags as `--set` overrides (applied after --config and before explicit --set)."""
    out = []
    if args.heads:
        out.append(f"compare.heads=[{args.heads}]")
    if args.encoder:
        out.append(f"model.encoder={args.encoder}")
    if args.mode:
        out.append(f"train.mode={args.mode}")
    if args.seeds is not None:
        out.append(f"train.seeds={args.seeds}")
    return out


def run(args: argparse.Namespace) -> int:
    """Run `videoseq compare`: train the heads, print the table and verdicts (or metrics.json with
    `--json`); return 0. Bad input raises a `VideoseqError`, which `videoseq.cli` reports with exit 2."""
    args.overrides = overrides_from_args(args) + list(args.overrides)
    config = config_from_args(args)          # a bad config fails here, before torch is imported
    from videoseq.learn.compare import compare_heads
    from videoseq.learn.report import table, verdicts

    metrics = compare_heads(args.root, args.out, config, progress=config.runtime.progress and not args.quiet,
                            force=args.force)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(table(metrics))
    print()
    for line in verdicts(metrics):
        print(line)
    print(f"\nreport: {args.out}/report.md  ({metrics['seconds']:.0f} s)")
    return 0
