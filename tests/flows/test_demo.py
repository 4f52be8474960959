"""`videoseq demo` end to end (small: 4 videos per class, 2 epochs) and `videoseq run` under the harness."""
from __future__ import annotations

import json

import pytest



@pytest.fixture
def quiet_prefect_env(monkeypatch):
    """What demo/run change in the process (environment, prefect logger propagation), restored after."""
    import logging

    for key in ("OMP_WAIT_POLICY", "PREFECT_LOGGING_EXTRA_LOGGERS", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setattr(logging.getLogger("prefect"), "propagate", logging.getLogger("prefect").propagate)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "quiet_prefect_env")
def test_demo_generates_runs_compares_and_classifies(tmp_path, capsys):
    from videoseq.cli import main

    data, run = tmp_path / "data", tmp_path / "run"
    code = main(["demo", "--data", str(data), "--out", str(run), "--videos-per-class", "4",
                 "--set", "train.epochs=2", "--set", "compare.bootstrap=50", "--set", "sampling.train_views=1"])
    out = capsys.readouterr().out
    assert code == 0, out
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "demo finished in"):
        assert step in out
    assert "| per_frame |" in out and "| lstm |" in out and f"report: {run / 'report.md'}" in out
    assert sorted(p.name for p in (data / "test").iterdir()) == [
        "circle_left", "circle_right", "square_left", "square_right", "triangle_left", "triangle_right"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["models"]) == {"per_frame", "lstm"}
    assert "circle_left_" in out and "circle_right_" in out      # the two classified test videos
    assert len(list((run / "timelines").glob("*.png"))) == 2


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "quiet_prefect_env")
def test_run_command_prints_the_table_and_skipped_files(tiny_dataset_with_broken, tiny_config, tmp_path, capsys):
    from videoseq.cli import main

    assert main(["run", str(tiny_dataset_with_broken), "--out", str(tmp_path / "run"),
                 "--config", tiny_config, "--set", "compare.heads=[per_frame]",
                 "--set", "runtime.progress=true"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    for stage in ("videoseq: scan", "videoseq: extract and encode", "videoseq: compare heads per_frame",
                  "videoseq: compare: report done"):            # the terminal shows where the flow is
        assert stage in captured.err, captured.err[-2000:]
    assert "| per_frame |" in out and "| lstm |" not in out
    assert "skipped:" in out and "broken.avi" in out
    assert (tmp_path / "run" / "models" / "per_frame" / "model.pt").is_file()


def test_run_command_with_a_bad_config_fails_before_prefect_starts(tmp_path, capsys):
    from videoseq.cli import main

    assert main(["run", str(tmp_path), "--out", str(tmp_path / "run"), "--set", "train.epochs=lots"]) == 2
    assert "train.epochs: expected an integer" in capsys.readouterr().err
