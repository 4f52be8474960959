"""Arguments shared by several commands, and the whole-config check every entry point runs.

    config = config_from_args(args)      # --config and --set, every value checked, before any work
    check_config(config)                 # the same check for a Config built another way (api, flows)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videoseq.config import Config, check_values, load_config
from videoseq.errors import ConfigError

# Where each registry-backed key's names are registered, and the names each of those modules registers
# when it is imported. The check reads a registry only when its module is loaded already (a command
# that has imported torch, or code that registered names of its own, which needs the module); otherwise
# the registry holds exactly these names, and the check needs neither the module nor torch.
# tests/test_config_validation.py checks that these sets equal the registries.
REGISTRIES: dict[str, tuple[str, str]] = {
    "model.encoder": ("videoseq.models.encoders", "ENCODERS"),
    "compare.heads": ("videoseq.models.heads", "HEADS"),
    "model.motion": ("videoseq.models.streams", "MOTIONS"),
}
BUILTIN_NAMES: dict[str, frozenset[str]] = {
    "model.encoder": frozenset({"efficientnet_b0", "efficientnet_lite0", "mobilenet_v3_large",
                                "mobilenet_v3_small", "resnet18", "resnet50", "small_cnn"}),
    "compare.heads": frozenset({"conv1d", "gru", "lstm", "per_frame", "rnn"}),
    "model.motion": frozenset({"blockmatch", "photometric", "rgbdiff", "speed", "tempo"}),  # distinct ones combine
}


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """Add `--config FILE` and the repeatable `--set KEY=VALUE` (collected in `overrides`) to `p`."""
    p.add_argument("--config", metavar="FILE", help="YAML config (see configs/)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one config value, e.g. --set train.epochs=10 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    """The `Config` from `--config` and the `--set` overrides, checked whole (`check_config`);
    `ConfigError` when either does not fit."""
    config = load_config(args.config, overrides=args.overrides)
    check_config(config)
    return config


def check_config(config: Config) -> None:
    """Check every value of `config` before any work: enumerations and ranges (`config.check_values`),
    the names the registries hold (model.encoder, each of compare.heads, each stream of model.motion;
    `registered_names`) and that a `model.weights` path is a file. `ConfigError`, one line naming the
    key, the value and the choices, for the first that does not fit. Imports neither torch nor the
    models. runtime.task_runner is checked by the flows, which own its registry (flows/runners.py)."""
    check_values(config)
    model = config.model
    _one_of("model.encoder", model.encoder, registered_names("model.encoder"))
    for head in config.compare.heads:
        _one_of("compare.heads", head, registered_names("compare.heads"))
    check_motion(model.motion)
    if model.weights not in (None, "DEFAULT") and not Path(model.weights).is_file():
        raise ConfigError(f"model.weights: {model.weights!r} is not a file (expected null, DEFAULT or the "
                          f"path of a state dict)")


def registered_names(key: str) -> list[str]:
    """The names registry-backed `key` accepts, sorted: its registry's when the module holding it is
    loaded, else the names that module registers on import (`BUILTIN_NAMES`)."""
    module, attr = REGISTRIES[key]
    registry = getattr(sys.modules.get(module), attr, None)
    return registry.names() if registry is not None else sorted(BUILTIN_NAMES[key])


def check_motion(value: str) -> None:
    """`ConfigError` unless `value` is "none" or distinct registered stream names joined by "+" (that
    `models.streams.build_motion` accepts together, when that module is loaded)."""
    names = [n.strip() for n in value.split("+")] if value not in ("none", "") else []
    choices = registered_names("model.motion")
    if "none" in names:
        raise ConfigError(f"model.motion: {value!r}: 'none' (no stream) is not joined with streams")
    for name in names:
        if name not in choices:
            raise ConfigError(f"model.motion: {name!r} is not one of none, {', '.join(choices)} "
                              f"(or several streams joined by '+')")
    if len(set(names)) != len(names):
        raise ConfigError(f"model.motion: {value!r} names a stream twice")
    if names and REGISTRIES["model.motion"][0] in sys.modules:
        from videoseq.models.streams import build_motion

        try:
            build_motion(value)
        except (ValueError, KeyError) as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(text if text.startswith("model.motion") else f"model.motion: {text}") from None


def _one_of(key: str, value: str, choices: list[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
