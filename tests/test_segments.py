"""Long videos in overlapping segments (`infer.segments`, `classify --window`, `Model.predict_segments`):
labels in the right places, streaming equal to files and to frames in memory, memory bounded."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import media
from test_bundle import make_bundle, tiny_config

import videoseq
from videoseq.cli import main
from videoseq.config import config_from_dict
from videoseq.infer.frames import predict_frames
from videoseq.infer.segments import (Segment, classify_segments, held_frames_bound, iter_segments,
                                     window_bounds)
from videoseq.io.video import iter_frames, probe
from videoseq.models.bundle import load_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("b") / "lstm", head="lstm"), device="cpu")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """103 frames at 10 fps (10.3 s), 120x80: resize_crop goes through pyrDown and resize."""
    return media.write_opencv(tmp_path_factory.mktemp("v") / "long.mp4", count=103, fps=10.0,
                              width=120, height=80)


# ----------------------------------------------------------------------------- windows

def test_window_bounds_round_half_up_and_tolerate_float_error() -> None:
    assert [window_bounds(k, 10.0, 2.0, 1.0) for k in range(3)] == [(0, 20), (10, 30), (20, 40)]
    assert window_bounds(1, 25.0, 4.0, 0.1) == (3, 103)          # 0.1 * 25 = 2.5 -> 3
    assert window_bounds(3, 29.97, 1.0, 1 / 3) == (30, 60)       # 29.97 -> 29.97 + 29.97


def test_segments_of_a_file_are_the_windows_and_the_kept_tail(video, bundle) -> None:
    segs = list(classify_segments(video, bundle, window=2.0, stride=1.0))
    assert [s.index for s in segs] == list(range(10))
    assert [(s.first, s.frames) for s in segs] == [(10 * k, 20) for k in range(9)] + [(90, 13)]
    assert (segs[0].start, segs[0].end, segs[-1].end) == (0.0, 2.0, 10.3)
    assert all(s.label == max(s.probs, key=s.probs.get) and s.score == s.probs[s.label] for s in segs)
    assert list(segs[0].probs) == bundle.classes and segs[0].head == "lstm"
    assert set(segs[0].to_json()) == {"segment", "start", "end", "label", "score", "probs", "head"}
    # a video shorter than one window is one segment; a tail inside the last full window is dropped
    (short,) = list(iter_segments(np.zeros((7, 48, 64, 3), np.uint8), 10.0, bundle, window=2.0, stride=1.0))
    assert (short.first, short.frames, short.end) == (0, 7, 0.7)
    segs = list(iter_segments(np.zeros((30, 48, 64, 3), np.uint8), 10.0, bundle, window=2.0, stride=1.0))
    assert [(s.first, s.frames) for s in segs] == [(0, 20), (10, 20)]
    # a cut window with new frames is kept from min(T, 1 s) = 4 frames on
    for n, expected in ((22, [(0, 20)]), (24, [(0, 20), (20, 4)]), (32, [(0, 20), (10, 20), (20, 12)])):
        stride = 2.0 if n < 30 else 1.0
        segs = list(iter_segments(np.zeros((n, 48, 64, 3), np.uint8), 10.0, bundle, window=2.0, stride=stride))
        assert [(s.first, s.frames) for s in segs] == expected, n


# ----------------------------------------------------------------------------- exactness

def test_a_file_and_its_frames_streamed_give_the_same_segments_bit_for_bit(video, bundle) -> None:
    from_file = list(classify_segments(video, bundle, window=2.0, stride=1.0))
    streamed = list(iter_segments(iter_frames(video), probe(video).fps, bundle, window=2.0, stride=1.0))
    assert streamed == from_file                     # NamedTuples: every field, probs dicts exactly


@pytest.mark.parametrize("short", ["repeat", "mask"])
def test_each_segment_equals_predicting_exactly_its_frames(video, short, tmp_path) -> None:
    config = config_from_dict({**tiny_config().to_dict(), "sampling": {"frames": 8, "size": 32, "short": short}})
    b = load_bundle(make_bundle(tmp_path / "b", head="gru", config=config), device="cpu")
    frames = np.stack(list(iter_frames(video)))      # (N, H, W, 3)
    segs = list(iter_segments(frames, 10.0, b, window=0.6, stride=0.4, batch_size=3))   # n = 6 < T = 8
    assert len(segs) == 25 and segs[-1].first + segs[-1].frames == 102        # a 3-frame tail is dropped
    tail = list(iter_segments(frames, 10.0, b, window=1.5, stride=1.0, batch_size=3))
    assert len(tail) == 10 and (tail[-1].first, tail[-1].frames) == (90, 13)  # a 13-frame tail is kept
    for s in segs + tail:
        alone = predict_frames(b, frames[s.first:s.first + s.frames], batch_size=3)
        assert alone.probs == s.probs, s.index


def test_the_api_takes_a_file_or_any_iterable_of_frames(video, tmp_path) -> None:
    model = videoseq.load(make_bundle(tmp_path / "b", head="per_frame"), device="cpu")
    from_file = list(model.predict_segments(video, window=3))             # stride = window / 2
    assert [s.first for s in from_file] == [0, 15, 30, 45, 60, 75] and from_file[-1].end == 10.3
    assert list(model.predict_segments((f for f in iter_frames(video)), window=3, fps=10)) == from_file
    with pytest.raises(ValueError, match="fps"):
        model.predict_segments(iter_frames(video), window=3)
    with pytest.raises(ValueError, match="window"):
        model.predict_segments(video, window=0.0)
    with pytest.raises(ValueError, match="frame 0"):
        list(model.predict_segments([np.zeros((4, 4), np.uint8)], window=1, fps=10))


# ----------------------------------------------------------------------------- memory

def _stream(count: int, counter: list[int]):
    """`count` 64x48 frames, made as they are asked for; counter[0]: how many were taken."""
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 255, (48, 64, 3), np.uint8)
    for i in range(count):
        counter[0] = i + 1
        yield np.roll(pattern, i, axis=1)


def test_memory_stays_bounded_whatever_the_length(bundle) -> None:
    fps, window, stride = 25.0, 4.0, 3.0
    bound = held_frames_bound(fps, window, frames=bundle.frames, batch_size=4)
    peaks = {}
    for count in (5_000, 20_000):
        stats, taken = {}, [0]
        segments = iter_segments(_stream(count, taken), fps, bundle, window=window, stride=stride, stats=stats)
        first = next(segments)            # streaming: the first batch comes before the stream is read
        assert isinstance(first, Segment) and taken[0] <= window * fps + 4 * stride * fps
        n = 1 + sum(1 for _ in segments)
        assert n == {5_000: 66 + 1, 20_000: 266 + 1}[count] and stats["frames"] == count   # full + the tail
        peaks[count] = stats["held_peak"]
    assert peaks[5_000] == peaks[20_000] <= bound < 200


# ----------------------------------------------------------------------------- labels in place

COLOURS = {"blue": (30, 40, 220), "green": (40, 200, 50), "red": (220, 40, 30)}   # RGB


def _colour_clip(colour: str, n: int, rng: np.random.Generator, *, w: int = 64, h: int = 48) -> np.ndarray:
    """(n, h, w, 3) uint8 RGB: a noisy background of `colour` with a grey square moving across."""
    frames = np.empty((n, h, w, 3), np.uint8)
    base = np.array(COLOURS[colour], np.int16)
    x0, y0, dx = rng.integers(0, w // 2), rng.integers(0, h // 2), rng.choice([-2, 2])
    for i in range(n):
        f = np.clip(base + rng.integers(-25, 26, (h, w, 3)), 0, 255).astype(np.uint8)
        x = int((x0 + dx * i) % (w - 12))
        f[y0:y0 + 12, x:x + 12] = 128
        frames[i] = f
    return frames


def _write(path: Path, frames: np.ndarray, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames.shape[2], frames.shape[1]))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_segments_of_concatenated_clips_have_the_clips_classes(tmp_path, capsys) -> None:
    from videoseq.learn.compare import train_bundle

    rng = np.random.default_rng(1)
    root = tmp_path / "colours"
    for split, per_class in (("train", 6), ("val", 3), ("test", 3)):
        for colour in COLOURS:
            (root / split / colour).mkdir(parents=True)
            for i in range(per_class):
                _write(root / split / colour / f"{colour}{i}.avi", _colour_clip(colour, 12, rng), 10.0)
    config = config_from_dict({**tiny_config().to_dict(),
                               "train": {"epochs": 30, "patience": 30, "lr": 3e-3, "batch_size": 8},
                               "runtime": {"workers": 0, "progress": False, "device": "cpu"}})
    # 36 short videos, a per_frame head on frozen features: ~5 s on 2 cores
    result = train_bundle(root, tmp_path / "model", config, head="per_frame", progress=False)
    assert result["test_accuracy"] == 1.0, result

    truth = ["green", "red", "blue", "green"]                        # 4 s each at 10 fps: 160 frames
    long = _write(tmp_path / "long.avi", np.concatenate([_colour_clip(c, 40, rng) for c in truth]), 10.0)
    model = videoseq.load(tmp_path / "model", device="cpu")
    segs = list(model.predict_segments(long, window=2.0, stride=0.5))
    inside = [s for s in segs if s.first // 40 == (s.first + s.frames - 1) // 40]
    assert len(inside) == 4 * 5 and len(segs) == 29                  # 5 windows fit in each 4 s clip
    assert [s.label for s in inside] == [truth[s.first // 40] for s in inside]

    # the same through the command line, as JSON lines and a timeline
    rc = main(["classify", str(long), "--model", str(tmp_path / "model"), "--window", "2", "--stride", "0.5",
               "--json", "--timeline", str(tmp_path / "plots")])
    out, _ = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and [r["label"] for r in records] == [s.label for s in segs]
    assert (tmp_path / "plots" / "long.timeline.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- command line

def test_classify_window_prints_segments_json_lines_and_a_timeline(video, bundle, tmp_path, capsys) -> None:
    model = str(bundle.path)
    assert main(["classify", str(video), "--model", model, "--window", "4", "--top-k", "2"]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[1] == str(video) and len(lines) == 2 + 5            # windows at 0, 2, 4, 6 s; tail from 8 s
    assert lines[2].split()[0] == "0.00-4.00" and lines[-1].split()[0] == "8.00-10.30"

    png = tmp_path / "seg.png"
    assert main(["classify", str(video), "--model", model, "--window", "2", "--stride", "1", "--json",
                 "--timeline", str(png)]) == 0
    records = [json.loads(line) for line in capsys.readouterr()[0].splitlines()]
    expected = list(classify_segments(video, bundle, window=2.0, stride=1.0))
    assert [r["probs"] for r in records] == [s.probs for s in expected]
    assert set(records[0]) == {"path", "segment", "start", "end", "label", "score", "probs", "head"}
    assert records[0]["path"] == str(video) and records[-1]["end"] == 10.3
    assert png.read_bytes()[:4] == b"\x89PNG"

    missing = tmp_path / "missing.mp4"
    assert main(["classify", str(missing), str(video), "--model", model, "--window", "2", "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out.splitlines()[0]) == {"path": str(missing), "error": "no such file or directory"}
    assert len(out.splitlines()) == 1 + 10 and err.count("\n") == 1


@pytest.mark.parametrize("extra", [["--window", "0"], ["--window", "-1"], ["--window", "nan"],
                                   ["--window", "2", "--stride", "0"], ["--stride", "1"],
                                   ["--window", "2", "--runtime", "onnx"], ["--window", "2", "--compare"]])
def test_bad_window_options_are_usage_errors(extra, video, bundle, capsys) -> None:
    assert main(["classify", str(video), "--model", str(bundle.path), *extra]) == 2
    err = capsys.readouterr()[1]
    assert err.startswith("videoseq classify: error:") and err.count("\n") == 1
