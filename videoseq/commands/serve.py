"""`videoseq serve`: serve the scheduled deployments (nightly retrain, inbox classifier) on a Prefect server."""
from __future__ import annotations

import argparse

HELP = ("serve the scheduled deployments from schedules.yaml (the shipped one unless --config) on the "
        "Prefect server at PREFECT_API_URL")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of `videoseq serve` to `p`."""
    p.add_argument("--config", metavar="FILE",
                   help="schedules YAML (default: schedules.yaml shipped in the package, videoseq/configs/)")
    p.add_argument("--check", action="store_true",
                   help="validate the schedules and the server connection, print them, and exit")


def run(args: argparse.Namespace) -> int:
    """Run `videoseq serve`: read and print the schedules, check the server, serve until Ctrl-C (or
    exit after the check with --check); return 0. Bad schedules or no server raise a `VideoseqError`."""
    from flows.schedules import (build_deployments, check_server, configured_api_url, load_schedules,
                                 serve_deployments)
    from videoseq.configs import config_file

    path = args.config if args.config else config_file("schedules.yaml")
    specs = load_schedules(path)
    print(f"schedules: {path}")          # before the server check: what would be served, even without one
    for spec in specs:
        when = f"cron {spec.cron!r}" + (f" ({spec.timezone})" if spec.timezone else "") \
            if spec.cron is not None else f"every {spec.interval:g} s"
        print(f"{spec.name}: flow {spec.flow}, {when}, parameters {spec.parameters}")
    api_url = check_server(configured_api_url())
    if args.check:
        print(f"server {api_url}: reachable")
        return 0
    deployments = build_deployments(specs)
    print(f"serving {len(deployments)} deployment(s) on {api_url}; Ctrl-C stops (schedules pause on exit)")
    serve_deployments(deployments)
    return 0
