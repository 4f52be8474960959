"""`videoseq run ROOT --out RUN_DIR`: the Prefect pipeline flow (scan, cached extraction, compare, report).

Runs against the Prefect server named by PREFECT_API_URL, or a temporary local one when it is unset.
prefect is imported inside `run` only: the library never imports it.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from videoseq.commands.common import add_config_arguments

HELP = "run the Prefect pipeline flow: scan, extract (cached per video), compare heads, report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of `videoseq run` to `p`."""
    p.add_argument("root", metavar="ROOT", help="dataset root (any of the three layouts)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    p.add_argument("--force", action="store_true",
                   help="train every head again, even when RUN_DIR was built from the same config and videos")
    add_config_arguments(p)


def prepare_prefect_environment() -> None:
    """Before prefect is imported: library logs (videoseq.*) go to the flow run logs, no telemetry, and
    a temporary server that may take a while to start on a busy 2-core machine (first start migrates
    its SQLite database)."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "videoseq")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def keep_prefect_logs_to_prefect() -> None:
    """After prefect is imported: its loggers print through Prefect's own console handler only, not
    a second time through the root handler that `videoseq.cli` installs."""
    import logging

    logging.getLogger("prefect").propagate = False


def print_summary(summary: dict[str, Any]) -> None:
    """Print the flow's summary: videos extracted, cached and failed, skipped files, the comparison
    table and where the report is."""
    import json
    from pathlib import Path

    from videoseq.learn.report import table

    metrics = json.loads(Path(summary["metrics"]).read_text())
    print(f"frames: {summary['extracted']} videos extracted, {summary['cached']} from the cache, "
          f"{len(summary['failed'])} failed")
    for path, reason in summary["failed"]:
        print(f"  failed: {path}: {reason}")
    for item in metrics["dataset"].get("skipped", []):
        print(f"  skipped: {item['path']}: {item['reason']}")
    print()
    print(table(metrics))
    print()
    print(f"report: {summary['report']}")


def run(args: argparse.Namespace) -> int:
    """Run `videoseq run`: check the config, run the pipeline flow, print its summary; return 0.
    A bad config raises `ConfigError` before Prefect starts (exit 2 from `videoseq.cli`)."""
    prepare_prefect_environment()
    from videoseq.commands.common import config_from_args

    config = config_from_args(args)   # bad config: one line, before prefect starts
    from flows.pipeline import pipeline

    keep_prefect_logs_to_prefect()
    summary = pipeline(root=args.root, run_dir=args.out, config=args.config, overrides=list(args.overrides),
                       progress=config.runtime.progress, force=args.force)
    print_summary(summary)
    return 0
