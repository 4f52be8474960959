"""The YAML configs shipped inside the package (package data); `configs/` of a checkout links here.

    from videoseq.configs import config_file
    load_config(config_file("demo.yaml"))

Found through `importlib.resources`, so they are there after a wheel install, whatever the working
folder is. A package (not a plain data folder) only so that this helper can live next to the files.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from videoseq.errors import ConfigError


def shipped_configs() -> list[str]:
    """File names of the shipped configs, sorted ("default.yaml", "demo.yaml", ...)."""
    return sorted(p.name for p in files(__name__).iterdir() if p.name.endswith(".yaml"))


def config_file(name: str) -> Path:
    """The shipped config `name` ("demo.yaml"; "demo" works too) as a path on disk; ConfigError if none."""
    if not name.endswith(".yaml"):
        name += ".yaml"
    path = files(__name__) / name
    if "/" in name or "\\" in name or not path.is_file():
        raise ConfigError(f"{name}: no such shipped config; shipped: {', '.join(shipped_configs())}")
    return Path(str(path))     # a regular package on disk (wheels install unzipped): a real path
