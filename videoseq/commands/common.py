"""Arguments shared by several commands."""
from __future__ import annotations

import argparse

from videoseq.config import Config, load_config


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """Add `--config FILE` and the repeatable `--set KEY=VALUE` (collected in `overrides`) to `p`."""
    p.add_argument("--config", metavar="FILE", help="YAML config (see configs/)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one config value, e.g. --set train.epochs=10 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    """The `Config` from `--config` and the `--set` overrides; `ConfigError` when either does not fit."""
    return load_config(args.config, overrides=args.overrides)
