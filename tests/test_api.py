"""The Python API (`import videoseq`): lazy imports, load/predict on files and on frames in memory
(bit-identical), predict_many, config overrides, scan/compare, the README's example, and figures that
leave matplotlib's backend alone."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import media
from test_bundle import CLASSES, make_bundle, tiny_config
from test_classify import run_dir  # noqa: F401  (fixture: models/per_frame and models/lstm bundles)

import videoseq
from videoseq.config import config_from_dict
from videoseq.errors import ConfigError, VideoReadError
from videoseq.infer.predict import FailedInput, Prediction
from videoseq.io.video import iter_frames

REPO = Path(__file__).resolve().parents[1]

# name -> writer: the read_frames strategies (sequential, seeking, JPEG packets), rotation metadata,
# and a frame size that takes resize_crop through both pyrDown and resize
VIDEOS = {
    "mp4v.mp4": lambda p: media.write_opencv(p, count=23, width=120, height=80),
    "h264_short_gop.mp4": lambda p: media.write_h264(p, count=60, gop=4, width=120, height=80),
    "mjpeg.avi": lambda p: media.write_opencv(p, count=30, fourcc="MJPG", width=120, height=80),
    "portrait.mp4": lambda p: media.write_rotated(p, count=20),
    "three.mp4": lambda p: media.write_opencv(p, count=3, width=120, height=80),   # fewer than T=4
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {name: make(d / name) for name, make in VIDEOS.items()}


@pytest.fixture(scope="module")
def model(run_dir: Path) -> videoseq.Model:
    return videoseq.load(run_dir / "models" / "lstm", device="cpu")


def _same(a: Prediction, b: Prediction) -> None:
    """Every field but path and seconds exactly equal (probabilities bit for bit)."""
    assert a.probs == b.probs and list(a.probs) == list(b.probs)
    assert (a.label, a.score, a.head, a.frames) == (b.label, b.score, b.head, b.frames)
    assert np.array_equal(a.steps, b.steps) and a.steps.dtype == b.steps.dtype
    assert np.array_equal(a.indices, b.indices)
    assert (a.thumbnails is None) == (b.thumbnails is None)
    if a.thumbnails is not None:
        assert np.array_equal(a.thumbnails, b.thumbnails)


# ----------------------------------------------------------------------------- import videoseq

def test_import_videoseq_loads_neither_torch_nor_opencv_nor_numpy() -> None:
    code = ("import sys, videoseq; heavy = lambda: sorted({'torch', 'cv2', 'numpy', 'matplotlib'} & set(sys.modules)); "
            "print(heavy()); dir(videoseq); cfg = videoseq.load_config(train__epochs=3); "
            "print(heavy(), cfg.train.epochs, videoseq.__version__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", f"[] 3 {videoseq.__version__}"]


def test_public_names_resolve_and_unknown_ones_are_attribute_errors() -> None:
    for name in videoseq.__all__:
        assert getattr(videoseq, name) is not None and name in dir(videoseq)
    assert videoseq.Model.__module__ == "videoseq.api" and videoseq.Prediction is Prediction
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        videoseq.nope  # noqa: B018


# ----------------------------------------------------------------------------- load and predict

def test_load_a_run_picks_the_best_head_or_the_one_asked_for(run_dir: Path) -> None:
    best = videoseq.load(run_dir, device="cpu")
    assert best.head == "lstm" and best.path == run_dir / "models" / "lstm"       # val 0.7 beats 0.4
    assert best.classes == CLASSES and isinstance(best.config, videoseq.Config)
    assert best.config.model.encoder == "small_cnn" and best.config.sampling.frames == 4
    assert videoseq.load(run_dir, head="per_frame", device="cpu").head == "per_frame"
    assert "lstm" in repr(best)
    with pytest.raises(videoseq.VideoseqError, match="no 'gru' model"):
        videoseq.load(run_dir, head="gru")


@pytest.mark.parametrize("name", list(VIDEOS))
def test_frames_in_memory_give_the_files_result_bit_for_bit(name, videos, model) -> None:
    path = videos[name]
    from_file = model.predict(path, thumbnails=True)
    frames = np.stack(list(iter_frames(path)))                    # (N, H, W, 3) uint8 RGB, full decode
    from_array = model.predict(frames, thumbnails=True)
    from_tensor = model.predict(torch.from_numpy(frames))
    _same(from_file, from_array)
    _same(from_file, from_tensor._replace(thumbnails=from_file.thumbnails))
    assert from_file.path == str(path) and from_array.path == "<frames>"
    assert from_file.frames == 4 and from_file.steps.shape == (4, len(CLASSES))


def test_opencv_frames_converted_to_rgb_work_too(videos, model) -> None:
    import cv2

    cap = cv2.VideoCapture(str(videos["mp4v.mp4"]))
    frames = []
    while (got := cap.read())[0]:
        frames.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    cap.release()
    _same(model.predict(videos["mp4v.mp4"]), model.predict(np.stack(frames)))


def test_masked_short_videos_match_too(videos, tmp_path) -> None:
    config = config_from_dict({**tiny_config().to_dict(), "sampling": {"frames": 4, "size": 32, "short": "mask"}})
    masked = videoseq.load(make_bundle(tmp_path / "masked", config=config), device="cpu")
    path = videos["three.mp4"]
    from_file = masked.predict(path)
    _same(from_file, masked.predict(np.stack(list(iter_frames(path)))))
    assert from_file.frames == 3 and from_file.indices.tolist() == [0, 1, 2, -1]


def test_frames_of_the_wrong_kind_are_one_clear_error(model) -> None:
    good = np.zeros((5, 16, 16, 3), np.uint8)
    bad = {
        "list": ([good[0]] * 5, "np.stack"),
        "float": (good.astype(np.float32), "uint8"),
        "float tensor": (torch.zeros(5, 16, 16, 3), "uint8"),
        "one frame": (good[0], r"\(N, H, W, 3\)"),
        "RGBA": (np.zeros((5, 16, 16, 4), np.uint8), r"\(N, H, W, 3\)"),
        "no frames": (good[:0], "at least one frame"),
        "a number": (3, "video path or"),
    }
    for what, (frames, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            model.predict(frames)
    assert model.predict(good[:1]).frames == 4              # one frame: repeated, like a one-frame file


def test_predict_many_is_lazy_in_order_and_keeps_going(videos, model, tmp_path) -> None:
    paths = [videos["mp4v.mp4"], tmp_path / "missing.mp4", videos["mjpeg.avi"]]
    results = model.predict_many(paths)
    assert not isinstance(results, list)                   # an iterator: results as they come
    results = list(results)
    assert [r.path for r in results] == [str(p) for p in paths]
    assert isinstance(results[1], FailedInput) and "no such file" in results[1].error
    _same(results[0], model.predict(paths[0]))
    _same(results[2], model.predict(paths[2]))
    with pytest.raises(VideoReadError, match="missing.mp4: no such file"):
        model.predict(paths[1])
    with pytest.raises(ValueError, match="list of video paths"):
        model.predict_many(str(paths[0]))


# ----------------------------------------------------------------------------- config, scan, compare

def test_overrides_are_section__key_keywords_and_never_change_the_given_config(tmp_path) -> None:
    cfg = videoseq.load_config(train__epochs=3, compare__heads="per_frame,gru", model__weights=None)
    assert (cfg.train.epochs, cfg.compare.heads, cfg.model.weights) == (3, ["per_frame", "gru"], None)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("train:\n  epochs: 7\n  seeds: 2\n")
    from_file = videoseq.load_config(yaml_file, train__epochs=4)
    assert (from_file.train.epochs, from_file.train.seeds) == (4, 2)
    again = videoseq.load_config(None)
    assert again.train.epochs == videoseq.Config().train.epochs
    for overrides, message in [({"epochs": 3}, "section__key"), ({"trian__epochs": 3}, "unknown config section"),
                               ({"train__epoch": 3}, "unknown config key 'train.epoch'"),
                               ({"train__epochs": "x"}, "expected an integer")]:
        with pytest.raises(ConfigError, match=message):
            videoseq.load_config(**overrides)
    from videoseq.api import _config

    assert _config(cfg, {"train__epochs": 9}).train.epochs == 9 and cfg.train.epochs == 3
    assert _config(str(yaml_file), {}).train.seeds == 2
    with pytest.raises(ConfigError, match="a Config, a YAML path or None"):
        _config(42, {})


TINY = dict(model__encoder="small_cnn", model__weights=None, model__pooling="grid2", model__hidden=16,
            sampling__frames=4, sampling__size=32, model__input_size=32, train__epochs=2,
            train__batch_size=8, train__patience=2, runtime__workers=0, runtime__progress=False,
            compare__bootstrap=100)


@pytest.mark.slow  # generates 16 videos and trains two heads: 5-15 s on a 2-core box
def test_scan_and_compare_from_python(tmp_path) -> None:
    from videoseq.synthetic.generate import generate_dataset

    root = generate_dataset(tmp_path / "direction", task="direction", videos_per_class=4, frames=(12, 16),
                            size=(64, 64), broken=0, workers=0, progress=False)
    index = videoseq.scan(root, **TINY)
    assert isinstance(index, videoseq.DatasetIndex) and len(index.ok()) == 16 and not index.skipped()
    result = videoseq.compare(root, tmp_path / "run", None, **TINY)
    assert isinstance(result, videoseq.Comparison) and result.heads == ["per_frame", "lstm"]
    assert set(result.accuracy) == {"per_frame", "lstm"} and (tmp_path / "run" / "metrics.json").is_file()
    assert (tmp_path / "run" / "plots" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert result.metrics["frames"] == 4 and "| per_frame |" in str(result) and len(result.verdicts()) == 1
    assert result.load(device="cpu").classes == ["down", "left", "right", "up"]


# ----------------------------------------------------------------------------- README

def readme_example() -> str:
    """The first python block of the README's "From Python" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(run_dir, videos, capsys) -> None:
    code = readme_example()
    first = next(line for line in code.splitlines() if line.startswith("run_dir, video = "))
    here = f"run_dir, video = {str(run_dir)!r}, {str(videos['mp4v.mp4'])!r}"
    exec(compile(code.replace(first, here, 1), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"lstm {CLASSES}" and out[1].split()[0] in CLASSES
    assert out[2].startswith(str(videos["mp4v.mp4"])) and "no such file" in out[3]


# ----------------------------------------------------------------------------- figures

def test_figures_leave_matplotlibs_backend_alone(tmp_path) -> None:
    """A notebook's backend (the inline one if installed, else another that needs no display) is the
    same after importing and drawing every figure; no pyplot; the PNGs are written; figures returned."""
    import importlib.util

    backend = ("module://matplotlib_inline.backend_inline" if importlib.util.find_spec("matplotlib_inline")
               else "svg")
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import numpy as np
        import matplotlib
        before = matplotlib.get_backend()
        from matplotlib.figure import Figure
        from videoseq.learn import plots
        from videoseq.infer.timeline import plot_timeline
        from videoseq.infer.predict import Prediction
        out = Path({str(tmp_path)!r})
        rows = [{{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_accuracy": 0.2 * e}} for e in (1, 2, 3)]
        figs = [plots.learning_curves({{"per_frame": [rows], "lstm": [rows, rows]}}, out / "curves.png"),
                plots.confusion_matrices({{"lstm": np.eye(3, dtype=int)}}, ["a", "b", "c"], out / "cm.png"),
                plots.accuracy_over_frames({{"lstm": np.linspace(0.3, 0.9, 4)}}, out / "frames.png", chance=1 / 3),
                plots.accuracy_over_frames({{"lstm": np.linspace(0.3, 0.9, 4)}}, chance=1 / 3)]
        steps = np.full((4, 3), 1 / 3)
        pred = Prediction("a.mp4", "a", 1 / 3, {{"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}}, "lstm", 4, 0.0, steps,
                          np.arange(4), np.zeros((4, 64, 64, 3), np.uint8))
        figs.append(plot_timeline(out / "timeline.png", pred, per_frame=pred._replace(head="per_frame")))
        assert all(isinstance(f, Figure) for f in figs), figs
        print(before, matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
    """)
    env = {**os.environ, "MPLBACKEND": backend}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [backend, backend, "False"]
    for name in ("curves", "cm", "frames", "timeline"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
