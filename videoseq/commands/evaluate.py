"""`videoseq evaluate BUNDLE_DIR ROOT [--split test] [--json]`: score a bundle on a labelled dataset.

The dataset is scanned as `videoseq scan` does, the chosen split is predicted through the same path as
`videoseq classify` (so each video's probabilities are identical to classifying it alone), and the
accuracy with its 95% interval, the mean class accuracy and the confusion matrix are printed.
"""
from __future__ import annotations

import argparse
import json
import sys

from videoseq.config import INFERENCE_BATCH_SIZE

HELP = "score a model bundle on a dataset split: accuracy (95% CI), mean class accuracy, confusion"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of `videoseq evaluate` to `p`."""
    p.add_argument("bundle", metavar="BUNDLE_DIR", help="a model bundle (or a run folder: its best head)")
    p.add_argument("root", metavar="ROOT", help="dataset root (any layout `videoseq scan` reads)")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                   help="which split to evaluate (default: test)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--batch-size", type=int, default=INFERENCE_BATCH_SIZE, metavar="B",
                   help="videos per forward pass (as for classify)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads / scan processes")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")


def run(args: argparse.Namespace) -> int:
    """Run `videoseq evaluate`; return 0, or 1 when some videos could not be classified."""
    from videoseq.data.cache import FrameCache
    from videoseq.data.plan import extraction_plan
    from videoseq.data.dataset import scan_dataset
    from videoseq.errors import DatasetError
    from videoseq.infer.evaluation import evaluate_paths
    from videoseq.models.bundle import load_bundle

    bundle = load_bundle(args.bundle, device=args.device)
    index = scan_dataset(args.root, bundle.config.data, workers=args.workers, timeout=bundle.config.runtime.timeout)
    entries = index.ok(None if args.split == "all" else args.split)
    if not entries:
        raise DatasetError(f"{args.root}: no usable videos in split {args.split!r}")
    for entry in index.skipped():
        print(f"videoseq evaluate: skipped {entry.path}: {entry.status}", file=sys.stderr)
    cache = FrameCache(extraction_plan(bundle.config).frames_dir)
    result = evaluate_paths(bundle, [e.path for e in entries], [e.label for e in entries],
                            batch_size=args.batch_size, workers=args.workers, cache=cache)
    for failure in result.failed:
        print(f"videoseq evaluate: {failure.path}: {failure.error}", file=sys.stderr)

    if args.json:
        print(json.dumps({"bundle": str(bundle.path), "root": str(args.root), "split": args.split,
                          **result.to_json()}))
    else:
        _print_report(result, bundle_path=str(bundle.path), split=args.split)
    return 1 if result.failed else 0


def _print_report(result, *, bundle_path: str, split: str) -> None:
    lo, hi = result.accuracy_ci95
    print(f"model     {result.head}  ({bundle_path})")
    print(f"split     {split}: {result.n} videos" + (f", {len(result.failed)} failed" if result.failed else ""))
    print(f"accuracy  {result.accuracy:.3f}  (95% CI {lo:.3f}-{hi:.3f})")
    print(f"mean class accuracy  {result.mean_class_accuracy:.3f}")
    width = max(6, *(len(c) for c in result.classes))
    print("\nconfusion (rows: true class, columns: predicted)")
    print(" " * (width + 2) + " ".join(f"{c[:width]:>{width}}" for c in result.classes))
    for name, row in zip(result.classes, result.confusion):
        print(f"{name:<{width}}  " + " ".join(f"{int(v):>{width}}" for v in row))
