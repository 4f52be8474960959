"""`videoseq serve`: serve the scheduled deployments (nightly retrain, inbox classifier) on a Prefect server."""
from __future__ import annotations

import argparse

HELP = "serve the scheduled deployments from configs/schedules.yaml on the Prefect server at PREFECT_API_URL"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default="configs/schedules.yaml",
                   help="schedules YAML (default: configs/schedules.yaml)")
    p.add_argument("--check", action="store_true",
                   help="validate the schedules and the server connection, print them, and exit")


def run(args: argparse.Namespace) -> int:
    from flows.schedules import (build_deployments, check_server, configured_api_url, load_schedules,
                                 serve_deployments)

    specs = load_schedules(args.config)
    api_url = check_server(configured_api_url())
    for spec in specs:
        when = f"cron {spec.cron!r}" + (f" ({spec.timezone})" if spec.timezone else "") \
            if spec.cron is not None else f"every {spec.interval:g} s"
        print(f"{spec.name}: flow {spec.flow}, {when}, parameters {spec.parameters}")
    if args.check:
        print(f"server {api_url}: reachable")
        return 0
    deployments = build_deployments(specs)
    print(f"serving {len(deployments)} deployment(s) on {api_url}; Ctrl-C stops (schedules pause on exit)")
    serve_deployments(deployments)
    return 0
