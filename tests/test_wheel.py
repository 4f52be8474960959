"""The wheel, installed outside the checkout, works: configs shipped as package data, CLI, demo, serve.

One wheel is built (offline, from a copy of the sources, so the checkout gets no build/ folder) and
installed into a fresh virtual environment in a temporary folder. That environment borrows the dev
environment's already-installed dependencies through a `.pth` line (torch is gigabytes; it is never
installed again). A path line in a `.pth` file only extends sys.path: the `.pth` files of the dev
site-packages are not run, so its editable install of videoseq (which points at the checkout) stays
off, and `import videoseq` finds the wheel's copy. Every command runs from a temporary folder with
no PYTHONPATH. Two fast tests check the same look-ups in the checkout.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "videoseq", "flows")       # what the wheel is built from
SHIPPED = sorted(p.name for p in (REPO / "videoseq" / "configs").glob("*.yaml"))
DEMO = ["--videos-per-class", "4", "--set", "train.epochs=2", "--set", "compare.bootstrap=50",
        "--set", "sampling.train_views=1"]


@dataclass
class Installed:
    wheel: Path
    venv: Path
    site: Path          # the new environment's site-packages
    cwd: Path           # a folder outside the checkout: every command runs here
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        """A command of the new environment (`python`, `videoseq`, ...), in `cwd`, with `env`."""
        return subprocess.run([str(self.venv / "bin" / args[0]), *args[1:]], cwd=self.cwd,
                              env={**self.env, **env}, capture_output=True, text=True, timeout=timeout)


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that could point back at the checkout or at other
    packages (PYTHONPATH, VIRTUAL_ENV, pip's config and find-links, Prefect settings and profiles)."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV",
            "__PYVENV_LAUNCHER__")
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith(("PIP_", "PREFECT_"))}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def _check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, \
        f"{proc.args}: exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    assert not work.resolve().is_relative_to(REPO), f"{work}: must be outside the checkout"
    pip_env = _clean_env()

    src = work / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    for extra in REPO.glob("LICEN[CS]E*"):
        shutil.copy2(extra, src / extra.name)
    dist = work / "dist"
    _check(subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(dist), str(src)], env=pip_env, capture_output=True,
                          text=True, timeout=300))
    wheels = list(dist.glob("videoseq-*.whl"))
    assert len(wheels) == 1, wheels

    venv = work / "venv"      # no pip of its own: its setuptools would shadow the one torch requires
    _check(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True,
                          text=True, timeout=120))
    site = Path(_check(subprocess.run([str(venv / "bin" / "python"), "-c",
                                       "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                      env=pip_env, capture_output=True, text=True)).stdout.strip())
    # Installed before the dev packages become visible: pip sees an empty environment, so it can
    # neither skip the wheel (same version as the editable install) nor try to uninstall anything.
    _check(subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "-q", "--no-index", "--no-deps", str(wheels[0])], env=pip_env,
                          capture_output=True, text=True, timeout=300))
    dev_site = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "_videoseq_dev_dependencies.pth").write_text("".join(f"{p}\n" for p in dev_site))

    cwd = work / "cwd"
    cwd.mkdir()
    env = _clean_env(PREFECT_HOME=str(work / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                     PREFECT_LOGGING_LEVEL="WARNING", DO_NOT_TRACK="1", MPLBACKEND="Agg",
                     VIDEOSEQ_CACHE=str(work / "cache"))
    return Installed(wheels[0], venv, site, cwd, env)


@pytest.mark.slow
def test_the_wheel_ships_every_config_and_asks_for_torch_ranges(installed):
    assert SHIPPED and {"default.yaml", "demo.yaml", "schedules.yaml", "synthetic.yaml"} <= set(SHIPPED)
    assert sorted(p.name for p in (REPO / "configs").glob("*.yaml")) == SHIPPED   # the checkout's link
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        for name in SHIPPED:
            assert whl.read(f"videoseq/configs/{name}") == (REPO / "videoseq" / "configs" / name).read_bytes()
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "flows/schedules.py" in names and "videoseq/cli.py" in names
    requires = {r.name: r for r in (Requirement(line.split(":", 1)[1]) for line in metadata.splitlines()
                                     if line.startswith("Requires-Dist:")) if r.marker is None}
    for package in ("torch", "torchvision"):      # ranges in the library; the pins live in the dev extra
        ops = {spec.operator for spec in requires[package].specifier}
        assert ops == {">=", "<"}, requires[package]


@pytest.mark.slow
def test_the_installed_package_is_the_wheel_and_its_dependencies_are_met(installed):
    out = _check(installed.run("python", "-c", (
        "import flows, videoseq\n"
        "from videoseq.configs import config_file\n"
        "print(videoseq.__file__); print(flows.__file__); print(config_file('demo.yaml'))"))).stdout.split()
    for path in out:
        assert Path(path).is_relative_to(installed.site), out
        assert not Path(path).resolve().is_relative_to(REPO), out
    # what `pip check` would say about the wheel's requirements, against what the environment sees
    _check(installed.run("python", "-c", (
        "import sys\n"
        "from importlib.metadata import PackageNotFoundError, distribution, version\n"
        "from packaging.requirements import Requirement\n"
        "bad = []\n"
        "for line in distribution('videoseq').requires or []:\n"
        "    r = Requirement(line)\n"
        "    if r.marker is not None and not r.marker.evaluate({'extra': ''}):\n"
        "        continue\n"
        "    try:\n"
        "        v = version(r.name)\n"
        "    except PackageNotFoundError:\n"
        "        bad.append(f'{r}: not installed'); continue\n"
        "    if not r.specifier.contains(v, prereleases=True):\n"
        "        bad.append(f'{r}: {v} installed')\n"
        "sys.exit('\\n'.join(bad) or None)\n")))


@pytest.mark.slow
def test_help(installed):
    out = _check(installed.run("videoseq", "--help")).stdout
    assert "COMMAND" in out and "demo" in out and "serve" in out


@pytest.mark.slow
def test_serve_finds_the_shipped_schedules(installed):
    """No server (PREFECT_API_URL empty): the schedules are read and printed, then the one-line error."""
    proc = installed.run("videoseq", "serve", "--check", PREFECT_API_URL="")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    shipped = installed.site / "videoseq" / "configs"
    assert f"schedules: {shipped / 'schedules.yaml'}" in proc.stdout
    assert "nightly-retrain: flow pipeline" in proc.stdout
    assert "classify-inbox: flow classify_inbox" in proc.stdout
    assert f"'config': '{shipped / 'default.yaml'}'" in proc.stdout          # the shipped default config
    assert f"'root': '{installed.cwd / 'data'}'" in proc.stdout               # relative to the serve folder
    assert "no Prefect server" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_runs_from_the_wheel(installed):
    data, run = installed.cwd / "data-demo", installed.cwd / "run-demo"
    proc = installed.run("videoseq", "demo", "--data", str(data), "--out", str(run), *DEMO, timeout=540)
    out = _check(proc).stdout
    assert f"pipeline flow with {installed.site / 'videoseq' / 'configs' / 'demo.yaml'}" in out
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "demo finished in"):
        assert step in out
    assert "| per_frame |" in out and "| lstm |" in out
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-4000:]
    assert (run / "report.md").is_file() and (run / "metrics.json").is_file()
    assert len(list((run / "timelines").glob("*.png"))) == 2


def test_shipped_configs_are_found_by_name():
    from videoseq.configs import config_file, shipped_configs
    from videoseq.errors import ConfigError

    assert shipped_configs() == SHIPPED
    assert config_file("demo.yaml") == config_file("demo") == REPO / "videoseq" / "configs" / "demo.yaml"
    with pytest.raises(ConfigError, match="no such shipped config; shipped: default.yaml, demo.yaml"):
        config_file("nope.yaml")


def test_a_schedules_config_missing_in_the_serve_folder_is_the_shipped_one(tmp_path):
    from flows.schedules import load_schedules

    schedules = tmp_path / "s.yaml"
    schedules.write_text("deployments:\n  - {name: a, flow: pipeline, interval: 60, parameters:"
                         " {config: configs/default.yaml}}\n"
                         "  - {name: b, flow: pipeline, interval: 60, parameters: {config: mine.yaml}}\n")
    shipped, mine = (s.parameters["config"] for s in load_schedules(schedules, base=tmp_path))
    assert shipped == str(REPO / "videoseq" / "configs" / "default.yaml")
    assert mine == str(tmp_path / "mine.yaml")          # not shipped: left as given (loading will say so)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("train: {epochs: 1}\n")
    [local, _] = (s.parameters["config"] for s in load_schedules(schedules, base=tmp_path))
    assert local == str(tmp_path / "configs" / "default.yaml")   # a file in the serve folder wins
