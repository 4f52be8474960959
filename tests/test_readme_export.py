"""The README's "Export and deploy" section runs as written: its shell lines (through `videoseq.cli.main`)
and its Python block, against a tiny run folder, with the paths substituted."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from media import write_opencv
from test_bundle import make_bundle

from videoseq import cli
from videoseq.config import config_from_dict

pytest.importorskip("onnxruntime")

README = Path(__file__).resolve().parents[1] / "README.md"
CLASSES = ["left", "right", "up"]


def section(title: str) -> str:
    """The README text under `## title`, up to the next `## ` heading."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of `language` in `text`."""
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.fixture
def paths(tmp_path) -> dict[str, str]:
    """README path -> a real one: a tiny run folder (two heads), a video, the export's destination."""
    config = config_from_dict({
        "model": {"encoder": "small_cnn", "weights": None, "pooling": "grid2", "hidden": 8, "dropout": 0.0},
        "sampling": {"frames": 5, "size": 32}})
    run = tmp_path / "run"
    make_bundle(run / "models" / "per_frame", head="per_frame", classes=CLASSES, config=config,
                val_accuracy=0.4)
    make_bundle(run / "models" / "lstm", head="lstm", classes=CLASSES, config=config, val_accuracy=0.9)
    video = write_opencv(tmp_path / "clip.mp4", count=12, width=48, height=40)
    return {"runs/demo": str(run), "model.onnx": str(tmp_path / "model.onnx"), "clip.mp4": str(video)}


def substitute(text: str, paths: dict[str, str]) -> str:
    for old, new in paths.items():
        text = text.replace(old, new)
    return text


def test_the_export_and_deploy_section_runs_as_written(paths, capsys) -> None:
    text = section("Export and deploy")
    (shell,) = blocks(text, "bash")
    commands = [line for line in shell.splitlines() if line.strip()]
    assert [shlex.split(c)[:2] for c in commands] == [[".venv/bin/videoseq", "export"],
                                                      [".venv/bin/videoseq", "classify"]]
    assert "--runtime onnx" in commands[1]

    export, classify = (shlex.split(substitute(c, paths))[1:] for c in commands)
    assert cli.main(export) == 0
    out = capsys.readouterr().out
    assert out.startswith("exported lstm (the whole model, onnx, opset 17) to ")   # the best head
    assert Path(paths["model.onnx"]).is_file() and Path(paths["model.onnx"]).with_suffix(".json").is_file()

    assert cli.main(classify) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.startswith("label") and "(model: lstm, " in header
    label, score, *_ = row.split()
    assert label in CLASSES and 0 < float(score) <= 1 and row.endswith(paths["clip.mp4"])

    (python,) = blocks(text, "python")
    exec(compile(substitute(python, paths), "README.md", "exec"), {"__name__": "readme"})
    first, second = capsys.readouterr().out.splitlines()
    assert first == f"lstm {CLASSES}"
    path, label = second.split()
    assert path == paths["clip.mp4"] and label in CLASSES
