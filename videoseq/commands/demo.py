"""`videoseq demo`: the whole pipeline on the `composite` synthetic task, end to end, in a few minutes.

1. generate data/demo/ (6 classes: circle|square|triangle x left|right) unless it is already there;
2. run the Prefect pipeline flow with the shipped demo.yaml (videoseq/configs/; per_frame vs lstm on
   frozen Lite0 features);
3. print the comparison table and the report path;
4. classify two test videos (same shape, opposite directions) through `videoseq classify --timeline`.

A single frame shows the shape but not the direction, so per_frame cannot pass 50%; the LSTM can.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

HELP = "the embedded demo: generate a dataset, run the pipeline, compare per_frame vs lstm, classify"

DEMO_TASK = "composite"
DEMO_VIDEOS_PER_CLASS = 100      # 60 train / 20 val / 20 test per class (split_counts): 600 videos
DEMO_FRAMES = (24, 40)           # frames per generated video
DEMO_SIZE = (96, 96)


def default_config() -> Path:
    """The demo.yaml shipped in the package (videoseq/configs/), wherever videoseq is installed."""
    from videoseq.configs import config_file

    return config_file("demo.yaml")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of `videoseq demo` to `p`."""
    p.add_argument("--data", default="data/demo", metavar="DIR", help="dataset folder (default: data/demo)")
    p.add_argument("--out", default="runs/demo", metavar="RUN_DIR", help="run folder (default: runs/demo)")
    p.add_argument("--config", metavar="FILE",
                   help="config YAML (default: demo.yaml shipped in the package, videoseq/configs/)")
    p.add_argument("--videos-per-class", type=int, default=DEMO_VIDEOS_PER_CLASS, metavar="N",
                   help=f"dataset size (default: {DEMO_VIDEOS_PER_CLASS}; fewer is faster and noisier)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one config value (repeatable)")


def pick_examples(root: Path) -> list[Path]:
    """Two test videos that differ only in direction: the pair a per-frame model cannot tell apart."""
    from videoseq.config import VIDEO_EXTENSIONS

    def first(label: str) -> Path | None:
        folder = root / "test" / label
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS) if folder.is_dir() else []
        return files[0] if files else None

    for shape in ("circle", "square", "triangle"):
        pair = [first(f"{shape}_left"), first(f"{shape}_right")]
        if all(pair):
            return pair  # type: ignore[return-value]
    return []


def run(args: argparse.Namespace) -> int:
    """Run `videoseq demo`: generate, run the pipeline flow, print the table, classify two test videos;
    return `videoseq classify`'s exit code. A bad config raises `ConfigError` before anything is generated."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")  # the demo prints its own steps
    from videoseq.commands.run import keep_prefect_logs_to_prefect, prepare_prefect_environment, print_summary

    prepare_prefect_environment()
    from videoseq.commands.common import check_config
    from videoseq.config import load_config
    from videoseq.synthetic.generate import generate_dataset

    t0 = time.perf_counter()
    config = Path(args.config) if args.config else default_config()
    cfg = load_config(config, overrides=args.overrides)      # fail fast, before generating anything
    check_config(cfg)
    data = Path(args.data)
    print(f"[1/4] dataset: {DEMO_TASK} task in {data} (generated once, then reused)")
    generate_dataset(data, task=DEMO_TASK, videos_per_class=args.videos_per_class, frames=DEMO_FRAMES,
                     size=DEMO_SIZE, progress=True)
    print(f"      ready after {time.perf_counter() - t0:.0f} s")

    print(f"[2/4] pipeline flow with {config} (Prefect; scan, extract, compare per_frame vs lstm)")
    from flows.pipeline import pipeline

    keep_prefect_logs_to_prefect()
    summary = pipeline(root=str(data), run_dir=args.out, config=str(config), overrides=list(args.overrides),
                       progress=cfg.runtime.progress)
    print(f"[3/4] comparison after {time.perf_counter() - t0:.0f} s")
    print_summary(summary)

    examples = pick_examples(data)
    print(f"[4/4] classify {len(examples)} test videos with the run's best head (timelines in {args.out}/timelines)")
    from videoseq.cli import main as cli_main

    code = cli_main(["classify", *map(str, examples), "--model", args.out,
                     "--timeline", str(Path(args.out) / "timelines")]) if examples else 0
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; report: {summary['report']}")
    return code
