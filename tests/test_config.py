"""Config: YAML onto dataclasses, unknown keys rejected, --set overrides typed and validated."""
from __future__ import annotations

from pathlib import Path

import pytest

from videoseq.config import Config, config_digest, load_config
from videoseq.errors import ConfigError

CONFIGS = sorted(p for p in (Path(__file__).parents[1] / "configs").glob("*.yaml")
                 if p.name != "schedules.yaml")  # schedules.yaml has its own schema (flows/schedules.py)


def test_defaults_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.sampling.frames == 16
    assert cfg.compare.heads[0] == "per_frame"


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 7\nmodel:\n  encoder: small_cnn\n  weights: null\n")
    cfg = load_config(f, overrides=["train.lr=0.01", "compare.heads=per_frame,gru", "sampling.size=48",
                                    "data.group_regex=_g(\\d+)_"])
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.01
    assert cfg.model.encoder == "small_cnn" and cfg.model.weights is None
    assert cfg.compare.heads == ["per_frame", "gru"]
    assert cfg.sampling.size == 48
    assert cfg.data.group_regex == "_g(\\d+)_"


@pytest.mark.parametrize("text, fragment", [
    ("train:\n  epoch: 3\n", "train.epoch"),
    ("trian:\n  epochs: 3\n", "trian"),
    ("train:\n  epochs: three\n", "train.epochs"),
    ("model:\n  bidirectional: 3\n", "model.bidirectional"),
    ("- a\n- b\n", "mapping"),
    ("train: [\n", "not valid YAML"),
    ("train: !!python/object/apply:os.system [true]\n", "not valid YAML"),    # no tag builds objects
])
def test_bad_files_name_the_key(tmp_path, text, fragment):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=None) as e:
        load_config(f)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("item, fragment", [
    ("train.epochs", "key=value"),
    ("train.nope=1", "train.nope"),
    ("sampling.frames=1.5", "sampling.frames"),
    ("train.epochs=[1", "not a valid YAML value"),
    ("train.epochs=!!python/object/apply:os.system [true]", "not a valid YAML value"),
])
def test_bad_overrides(item, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[item])
    assert fragment in str(e.value)


def test_binary_file_is_one_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_a_bad_set_value_is_one_line_and_exit_2(capsys):
    from videoseq.cli import main

    assert main(["scan", "/nonexistent", "--set", "train.epochs=[1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("videoseq scan: error: --set 'train.epochs=[1'") and "\n" not in err


def test_configs_folder_falls_back_to_the_shipped_configs(tmp_path, monkeypatch):
    """`--config configs/demo.yaml` outside a checkout (after a wheel install) reads the shipped file."""
    monkeypatch.chdir(tmp_path)
    assert load_config("configs/demo.yaml") == load_config(Path(__file__).parents[1] / "configs" / "demo.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/absent.yaml")


def test_digest_changes_with_content():
    a, b = load_config(), load_config(overrides=["sampling.frames=8"])
    assert config_digest(a.sampling) == config_digest(load_config().sampling)
    assert config_digest(a.sampling) != config_digest(b.sampling)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    load_config(path)


def test_cli_help_lists_commands(capsys):
    from videoseq.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "COMMAND" in capsys.readouterr().out
