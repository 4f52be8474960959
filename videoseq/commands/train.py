"""`videoseq train ROOT --head NAME --out BUNDLE_DIR`: train one head and save it as a model bundle."""
from __future__ import annotations

import argparse
import json

from videoseq.commands.common import add_config_arguments, config_from_args

HELP = "train one head on a dataset and save it as a model bundle"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of `videoseq train` to `p`."""
    p.add_argument("root", metavar="ROOT", help="dataset root (folder per class, split folders, or manifest.csv)")
    p.add_argument("--head", required=True, help="temporal head: per_frame, rnn, lstm, gru, conv1d")
    p.add_argument("--out", required=True, metavar="BUNDLE_DIR",
                   help="where the model bundle goes; put in place whole when training completes (a killed "
                        "run resumes from .BUNDLE_DIR.work beside it)")
    p.add_argument("--json", action="store_true", help="print the bundle's metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Run `videoseq train`: train one head, save the bundle, print its accuracies (or the metrics as
    JSON with `--json`); return 0. An unknown head or other bad input raises a `VideoseqError`
    (exit 2 from `videoseq.cli`)."""
    from videoseq.commands.common import registered_names
    from videoseq.errors import ConfigError

    heads = registered_names("compare.heads")
    if args.head not in heads:
        raise ConfigError(f"unknown head {args.head!r}; choose from {', '.join(heads)}")
    config = config_from_args(args)          # a bad config fails here, before torch is imported
    from videoseq.learn.compare import train_bundle
    result = train_bundle(args.root, args.out, config, head=args.head,
                          progress=config.runtime.progress and not args.quiet)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    lo, hi = result["accuracy_ci95"]
    print(f"{args.head}: test accuracy {100 * result['test_accuracy']:.1f}% [95% CI {100 * lo:.1f}, "
          f"{100 * hi:.1f}], validation {100 * result['val_accuracy']:.1f}% "
          f"(best epoch {result['best_epoch']} of {result['epochs']}, {result['train_seconds']:.1f} s)")
    print(f"bundle: {args.out}")
    return 0
