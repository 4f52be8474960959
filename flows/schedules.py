"""Scheduled deployments from YAML (`configs/schedules.yaml`), served by `videoseq serve`.

    deployments:
      - name: nightly-retrain        # deployment name shown in the Prefect UI
        flow: pipeline               # a key of FLOWS
        cron: "0 2 * * *"            # or `interval: 900` (seconds); exactly one of the two
        timezone: UTC                # cron only; IANA name
        parameters: {root: data, run_dir: runs/nightly, config: configs/default.yaml}

Relative paths in parameters are resolved against the folder `serve` runs in, so a run started
later by the runner finds the same files. One exception: a `config` such as `configs/default.yaml`
(or `default.yaml`) that is not there means the config of that name shipped in the package
(videoseq/configs/), so the shipped schedules work after a wheel install, from any folder.
"""
from __future__ import annotations

import datetime
import importlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videoseq.config import read_yaml_file
from videoseq.errors import ConfigError, VideoseqError
from videoseq.registry import Registry

FLOWS: Registry[str] = Registry("flow")    # name in YAML -> "module:attribute" of the flow object
FLOWS.add("pipeline", "flows.pipeline:pipeline")
FLOWS.add("classify_inbox", "flows.classify_inbox:classify_inbox")
PATH_PARAMETERS = {"root", "run_dir", "config", "inbox", "bundle", "results"}
SERVER_HINT = ("start one with `prefect server start --host 127.0.0.1` (or `make server`) and "
               "export PREFECT_API_URL=http://127.0.0.1:4200/api; schedules do not run on the "
               "ephemeral server")


@dataclass
class DeploymentSpec:
    """One deployment of the schedules file, validated; path parameters already absolute."""
    name: str
    flow: str                                  # key of FLOWS
    cron: str | None = None
    interval: float | None = None              # seconds
    timezone: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    concurrency_limit: int | None = 1          # a second run waits instead of racing the first
    paused: bool = False
    tags: list[str] = field(default_factory=list)


def load_schedules(path: str | Path, *, base: str | Path | None = None) -> list[DeploymentSpec]:
    """Read and validate a schedules file; relative path parameters become absolute (against `base`)."""
    p = Path(path)
    raw = read_yaml_file(p, what="schedules file")
    if not isinstance(raw, dict) or not isinstance(raw.get("deployments"), list) or not raw["deployments"]:
        raise ConfigError(f"{p}: expected a non-empty list under `deployments:`")
    unknown = sorted(set(raw) - {"deployments"})
    if unknown:
        raise ConfigError(f"{p}: unknown top-level key {unknown[0]!r}; expected only `deployments`")
    base_dir = Path(base) if base is not None else Path.cwd()
    specs = [_spec(p, i, item, base_dir) for i, item in enumerate(raw["deployments"])]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{p}: deployment name {dupes[0]!r} appears twice")
    return specs


def _spec(path: Path, i: int, item: Any, base: Path) -> DeploymentSpec:
    where = f"{path}: deployments[{i}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping")
    allowed = set(DeploymentSpec.__dataclass_fields__)
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    for key in ("name", "flow"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise ConfigError(f"{where}: `{key}` is required")
    if item["flow"] not in FLOWS:
        raise ConfigError(f"{where}: unknown flow {item['flow']!r}; choose from {', '.join(FLOWS.names())}")
    if (item.get("cron") is None) == (item.get("interval") is None):
        raise ConfigError(f"{where} ({item['name']}): give exactly one of `cron` or `interval`")
    interval = item.get("interval")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float))
                                 or interval <= 0):
        raise ConfigError(f"{where} ({item['name']}): `interval` must be a positive number of seconds")
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where} ({item['name']}): `parameters` must be a mapping")
    try:
        json.dumps(params)
    except TypeError:
        raise ConfigError(f"{where} ({item['name']}): `parameters` must be JSON values") from None
    params = {k: (_resolve_path(k, v, base) if k in PATH_PARAMETERS and isinstance(v, str) else v)
              for k, v in params.items()}
    spec = DeploymentSpec(**{**item, "parameters": params})
    if spec.cron is not None:
        from prefect.schedules import Cron

        try:
            Cron(spec.cron, timezone=spec.timezone)
        except ValueError as e:
            raise ConfigError(f"{where} ({spec.name}): bad cron {spec.cron!r} ({str(e).splitlines()[0]})") from None
    return spec


def _resolve_path(key: str, value: str, base: Path) -> str:
    """`value` against `base`; a `config` missing there but named like a shipped one is the shipped one."""
    path = (base / value).resolve()
    relative = Path(value)
    if key == "config" and not path.exists() and not relative.is_absolute() \
            and relative.parent in (Path("."), Path("configs")):
        from videoseq.configs import config_file

        try:
            return str(config_file(relative.name))
        except ConfigError:
            pass                 # not shipped either: keep the path; loading it will say it is missing
    return str(path)


def load_flow(name: str) -> Any:
    """The flow object registered in FLOWS under `name` (imported on first use)."""
    module, _, attr = FLOWS.get(name).partition(":")
    return getattr(importlib.import_module(module), attr)


def build_deployments(specs: list[DeploymentSpec]) -> list[Any]:
    """One `RunnerDeployment` per spec, ready for `prefect.serve(*deployments)`."""
    from prefect.schedules import Cron, Interval
    from prefect.types.entrypoint import EntrypointType

    deployments = []
    for spec in specs:
        if spec.cron is not None:
            schedule = Cron(spec.cron, timezone=spec.timezone)
        else:
            schedule = Interval(datetime.timedelta(seconds=float(spec.interval)))
        deployments.append(load_flow(spec.flow).to_deployment(
            spec.name, schedules=[schedule], parameters=spec.parameters, paused=spec.paused,
            concurrency_limit=spec.concurrency_limit, tags=["videoseq", *spec.tags],
            entrypoint_type=EntrypointType.MODULE_PATH))
    return deployments


def check_server(api_url: str | None, *, timeout: float = 5.0) -> str:
    """The API URL of a reachable Prefect server, or a `VideoseqError` saying how to start one."""
    if not api_url:
        raise VideoseqError(f"no Prefect server: PREFECT_API_URL is not set; {SERVER_HINT}")
    url = api_url.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status != 200:
                raise VideoseqError(f"{api_url}: Prefect server answered {response.status}; {SERVER_HINT}")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise VideoseqError(f"{api_url}: Prefect server not reachable ({reason}); {SERVER_HINT}") from None
    return api_url


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment (even when set empty: no server), else the active Prefect
    profile's, as prefect's own CLI does."""
    import os

    from prefect.settings import get_current_settings

    if "PREFECT_API_URL" in os.environ:
        return os.environ["PREFECT_API_URL"] or None
    return get_current_settings().api.url


def serve_deployments(deployments: list[Any]) -> None:
    """Block, running each deployment's scheduled runs, until interrupted (schedules pause on exit)."""
    from prefect import serve

    serve(*deployments, print_starting_message=False)
