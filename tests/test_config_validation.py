"""The whole config is checked when it is loaded, before any work: enumerations, ranges and the names
the registries hold, each a one-line `ConfigError` naming the key, the value and the choices; the CLI
exits 2 without creating a run or cache folder; the API and the pipeline flow check the same way."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import videoseq
from videoseq.commands.common import BUILTIN_NAMES, check_config, check_motion
from videoseq.config import (DEVICES, POOLINGS, Config, ModelConfig, TrainConfig, check_values, load_config)
from videoseq.configs import config_file, shipped_configs
from videoseq.errors import ConfigError
from videoseq.models.encoders import list_encoders, parse_pooling
from videoseq.models.heads import list_heads
from videoseq.models.streams import MOTIONS, list_motions

REPO = Path(__file__).resolve().parents[1]


def error_of(overrides: list[str]) -> str:
    """The one-line message of the ConfigError that loading and checking these overrides raises."""
    with pytest.raises(ConfigError) as e:
        check_config(load_config(overrides=overrides))
    message = str(e.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- the command line

CLI_CASES = {
    "train.mode=frozn": "train.mode: 'frozn' is not one of frozen, finetune",
    "model.encoder=nope": f"model.encoder: 'nope' is not one of {', '.join(list_encoders())}",
    "compare.heads=[lstm,nope]": f"compare.heads: 'nope' is not one of {', '.join(list_heads())}",
}


@pytest.mark.parametrize("item", list(CLI_CASES))
def test_compare_fails_at_once_with_one_line_and_exit_2(tmp_path, item):
    """A subprocess `videoseq compare` on an existing dataset folder: exit 2 and exactly our line, no
    run folder, work folder or cache created. An empty folder would be a DatasetError if scanned first."""
    data, run, cache = tmp_path / "data", tmp_path / "run", tmp_path / "cache"
    data.mkdir()
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "videoseq", "compare", str(data), "--out", str(run),
                          "--set", item], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VIDEOSEQ_CACHE": str(cache)})
    seconds = time.monotonic() - started
    assert (out.returncode, out.stdout, out.stderr) == (2, "", f"videoseq compare: error: {CLI_CASES[item]}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert seconds < 30, f"{seconds:.1f} s"      # start-up and imports only; nothing scanned or extracted


@pytest.mark.parametrize("command", ["compare", "train", "scan"])
@pytest.mark.parametrize("item, fragment", [
    ("model.pooling=grid", "model.pooling: 'grid' is not one of avg, grid1,"),
    ("model.motion=blockmatch+nope", "model.motion: 'nope' is not one of none, blockmatch,"),
    ("sampling.short=pad", "sampling.short: 'pad' is not one of repeat, mask"),
    ("runtime.device=gpu", "runtime.device: 'gpu' is not one of auto, cpu, cuda, cuda:N, mps"),
])
def test_every_command_that_loads_a_config_checks_it_first(tmp_path, capsys, command, item, fragment):
    from videoseq.cli import main

    data = tmp_path / "data"
    data.mkdir()
    args = {"compare": ["--out", str(tmp_path / "run")], "train": ["--out", str(tmp_path / "b"), "--head", "lstm"],
            "scan": []}[command]
    assert main([command, str(data), *args, "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"videoseq {command}: error: {fragment}") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert not Path(os.environ["VIDEOSEQ_CACHE"]).exists() or not any(Path(os.environ["VIDEOSEQ_CACHE"]).iterdir())


def test_the_check_itself_takes_milliseconds():
    check_config(Config())                              # the registries imported once, as by a command
    started = time.perf_counter()
    for item in CLI_CASES:
        error_of([item])
    assert time.perf_counter() - started < 0.5


# ----------------------------------------------------------------------------- registry-backed keys

def test_builtin_names_are_the_registries():
    """The names checked without importing a registry are exactly what the registries hold."""
    assert BUILTIN_NAMES["model.encoder"] == set(list_encoders())
    assert BUILTIN_NAMES["compare.heads"] == set(list_heads())
    assert BUILTIN_NAMES["model.motion"] == set(MOTIONS.names())


def test_the_check_never_imports_torch():
    """Registries are read when their modules are loaded; before that they hold BUILTIN_NAMES."""
    code = ("import sys; from videoseq.commands.common import check_config; from videoseq.config import load_config;"
            "from videoseq.errors import ConfigError\n"
            "check_config(load_config(overrides=['model.motion=speed+blockmatch', 'compare.heads=[per_frame,gru]']))\n"
            "print('torch' in sys.modules)\n"
            "try:\n    check_config(load_config(overrides=['model.encoder=nope']))\n"
            "except ConfigError as e:\n    print('torch' in sys.modules, e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "False", f"False model.encoder: 'nope' is not one of {', '.join(list_encoders())}"]


def test_every_registered_name_passes_and_others_list_the_registry():
    for name in list_encoders():
        check_config(load_config(overrides=[f"model.encoder={name}"]))
    check_config(load_config(overrides=[f"compare.heads=[{','.join(list_heads())}]"]))
    for name in list_motions():
        check_config(load_config(overrides=[f"model.motion={name}"]))
    vectors = [n for n in MOTIONS.names() if n != "rgbdiff"]
    check_config(load_config(overrides=[f"model.motion={'+'.join(vectors + ['rgbdiff'])}"]))

    assert error_of(["model.encoder=efficientnet_lit0"]) == (
        f"model.encoder: 'efficientnet_lit0' is not one of {', '.join(list_encoders())}")
    assert error_of(["compare.heads=[per_frame,lstn]"]) == (
        f"compare.heads: 'lstn' is not one of {', '.join(list_heads())}")
    assert error_of(["model.motion=blockmatch+optical_flow"]) == (
        f"model.motion: 'optical_flow' is not one of {', '.join(list_motions())} (or several streams joined by '+')")
    assert error_of(["model.motion=none+blockmatch"]) == (
        "model.motion: 'none+blockmatch': 'none' (no stream) is not joined with streams")
    assert error_of(["model.motion=blockmatch+blockmatch"]) == "model.motion: 'blockmatch+blockmatch' names a stream twice"


def test_motion_values_build_motion_refuses_are_refused():
    """Whatever `models.streams.build_motion` refuses for two registered names, the check refuses; and
    it accepts exactly the distinct ones, the rule the check applies before streams.py is loaded."""
    from videoseq.models.streams import build_motion

    names = MOTIONS.names()
    for a in names:
        for b in names:
            value = f"{a}+{b}"
            try:
                build_motion(value)
            except (ValueError, KeyError):
                assert a == b, value
                with pytest.raises(ConfigError, match=r"^model\.motion: "):
                    check_motion(value)
            else:
                assert a != b, value
                check_motion(value)


def test_weights_path_must_be_a_file(tmp_path):
    assert error_of([f"model.weights={tmp_path / 'absent.pt'}"]) == (
        f"model.weights: '{tmp_path / 'absent.pt'}' is not a file (expected null, DEFAULT or the path of a state dict)")
    (tmp_path / "w.pt").write_bytes(b"checked when the encoder loads it")
    check_config(load_config(overrides=[f"model.weights={tmp_path / 'w.pt'}", "model.encoder=small_cnn"]))
    check_config(load_config(overrides=["model.weights=null"]))


# ----------------------------------------------------------------------------- enumerations and ranges

@pytest.mark.parametrize("item, message", [
    ("train.mode=frozn", "train.mode: 'frozn' is not one of frozen, finetune"),
    ("sampling.short=pad", "sampling.short: 'pad' is not one of repeat, mask"),
    ("model.pooling=grid9", "model.pooling: 'grid9' is not one of avg, grid1, grid2, grid3, grid4, grid5, grid6, "
                            "grid7, grid8"),
    ("runtime.device=cuda1", "runtime.device: 'cuda1' is not one of auto, cpu, cuda, cuda:N, mps"),
    ("sampling.frames=0", "sampling.frames: expected an integer >= 1, got 0"),
    ("sampling.size=0", "sampling.size: expected an integer >= 1, got 0"),
    ("sampling.train_views=0", "sampling.train_views: expected an integer >= 1, got 0"),
    ("data.val_fraction=1.0", "data.val_fraction: expected a number >= 0 and < 1, got 1.0"),
    ("data.test_fraction=-0.1", "data.test_fraction: expected a number >= 0 and < 1, got -0.1"),
    ("data.val_fraction=0.9", "data.val_fraction + data.test_fraction: 0.9 + 0.15 leaves nothing for train; "
                              "expected a sum below 1"),
    ("data.min_frames=0", "data.min_frames: expected an integer >= 1, got 0"),
    ("data.extensions=[]", "data.extensions: expected at least one extension, e.g. [.mp4]"),
    ("data.extensions=[.mp4, a/b]", "data.extensions: 'a/b' is not a file extension (e.g. .mp4)"),
    ("data.group_regex=_g(", "data.group_regex: '_g(' is not a valid regular expression (missing ), "
                             "unterminated subpattern at position 2)"),
    ("model.input_size=0", "model.input_size: expected an integer >= 1, got 0"),
    ("model.hidden=0", "model.hidden: expected an integer >= 1, got 0"),
    ("model.layers=0", "model.layers: expected an integer >= 1, got 0"),
    ("model.dropout=1", "model.dropout: expected a number >= 0 and < 1, got 1.0"),
    ("model.stream_dropout=1.5", "model.stream_dropout: expected a number >= 0 and <= 1, got 1.5"),
    ("model.modality_dropout=1", "model.modality_dropout: expected a number >= 0 and < 1, got 1.0"),
    ("model.stream_bottleneck=-1", "model.stream_bottleneck: expected an integer >= 0, got -1"),
    ("train.epochs=0", "train.epochs: expected an integer >= 1, got 0"),
    ("train.batch_size=0", "train.batch_size: expected an integer >= 1, got 0"),
    ("train.seeds=0", "train.seeds: expected an integer >= 1, got 0"),
    ("train.seed=-1", "train.seed: expected an integer >= 0, got -1"),
    ("train.patience=-1", "train.patience: expected an integer >= 0, got -1"),
    ("train.lr=0", "train.lr: expected a number > 0, got 0.0"),
    ("train.weight_decay=-1", "train.weight_decay: expected a number >= 0, got -1.0"),
    ("train.finetune_lr_scale=-0.1", "train.finetune_lr_scale: expected a number >= 0, got -0.1"),
    ("compare.heads=[]", "compare.heads: expected at least one head, the baseline first"),
    ("compare.heads=[lstm,gru,lstm]", "compare.heads: 'lstm' is listed twice"),
    ("compare.bootstrap=0", "compare.bootstrap: expected an integer >= 1, got 0"),
    ("runtime.workers=-1", "runtime.workers: expected an integer >= 0, got -1"),
    ("runtime.max_workers=0", "runtime.max_workers: expected an integer >= 1, got 0"),
    ("runtime.job_timeout=-5", "runtime.job_timeout: expected seconds >= 0 (0 or null: no limit), got -5.0"),
])
def test_enumerations_and_ranges_are_checked_on_load(item, message):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[item])                   # core checks: no registry needed
    assert str(e.value) == message


def test_the_enumerations_are_what_the_code_accepts():
    import torch

    for pooling in POOLINGS:
        parse_pooling(pooling)
    with pytest.raises(ValueError):
        parse_pooling("grid9")
    for device in DEVICES:
        if device != "auto":
            torch.device(device.replace(":N", ":1"))
        check_values(load_config(overrides=[f"runtime.device={device.replace(':N', ':3')}"]))


def test_shipped_configs_pass():
    names = [n for n in shipped_configs() if n != "schedules.yaml"]
    assert "default.yaml" in names and "demo.yaml" in names
    for name in names:
        check_config(load_config(config_file(name)))


# ----------------------------------------------------------------------------- the API and the flow

def test_the_api_checks_before_any_work(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(ConfigError, match=r"^model\.encoder: 'nope' is not one of"):
        videoseq.load_config(model__encoder="nope")
    with pytest.raises(ConfigError, match=r"^train\.mode: 'frozn' is not one of frozen, finetune$"):
        videoseq.compare(data, tmp_path / "run", Config(train=TrainConfig(mode="frozn")))
    with pytest.raises(ConfigError, match=r"^compare\.heads: 'nope'"):
        videoseq.compare(data, tmp_path / "run", compare__heads=["lstm", "nope"])
    with pytest.raises(ConfigError, match=r"^model\.pooling: 'grid' is not one of"):
        videoseq.scan(data, Config(model=ModelConfig(pooling="grid")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_the_pipeline_flow_checks_before_anything_else(tmp_path):
    """The flow body's first step: the check, before any Prefect call, scan or task (its function,
    called as plain Python, raises before asking for a run logger)."""
    from flows.pipeline import pipeline

    data = tmp_path / "data"
    data.mkdir()
    for item, fragment in [("model.encoder=nope", "model.encoder: 'nope'"),
                           ("runtime.task_runner=ray", "unknown task runner 'ray'; choose from dask, threads")]:
        with pytest.raises(ConfigError, match=fragment):
            pipeline.fn(str(data), str(tmp_path / "run"), overrides=[item])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


FLOW_RUN = """
import sys
from prefect.testing.utilities import prefect_test_harness
from flows.pipeline import pipeline
from videoseq.errors import ConfigError
with prefect_test_harness(server_startup_timeout=180):
    state = pipeline(sys.argv[1], sys.argv[2], overrides=[sys.argv[3]], return_state=True)
    try:
        state.result()
    except ConfigError as e:
        print("ConfigError:", e)
"""


@pytest.mark.slow
def test_a_real_flow_run_fails_at_its_start(tmp_path):
    """Under a Prefect server: the flow run fails with the ConfigError and no task run, no folder made."""
    data = tmp_path / "data"
    data.mkdir()
    out = subprocess.run([sys.executable, "-c", FLOW_RUN, str(data), str(tmp_path / "run"),
                          "compare.heads=[lstm,nope]"], cwd=REPO, capture_output=True, text=True, timeout=400,
                         env={**os.environ, "VIDEOSEQ_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"ConfigError: compare.heads: 'nope' is not one of {', '.join(list_heads())}" in out.stdout
    assert "scan-dataset" not in out.stdout + out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
