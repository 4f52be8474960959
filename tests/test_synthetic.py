"""Synthetic benchmark datasets: per-frame ceilings hold, the sequence decides, files are real and readable.

Per-frame ceilings are checked two ways: on the generator's own per-frame ground truth (many clips,
one random frame each, so the samples are independent) and on measurements of rendered frames. A
hand-written sequence rule must then recover every label from the rendered (or decoded) frames.
"""
from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest
from scipy.stats import chi2_contingency, ks_2samp

from videoseq.cli import main
from videoseq.config import DataConfig
from videoseq.errors import DatasetError
from videoseq.synthetic.generate import TASKS, generate_dataset, get_task, render_clip, resolve_task
from videoseq.synthetic.render import CODECS, write_video
from videoseq.io.video import iter_frames, read_frames

P_MIN = 1e-3            # a class-dependent single-frame distribution fails this easily (see test below)


def _frame_samples(task: str, label: int, *, clips: int, keys: list[str], size=(48, 48), sources=()):
    """One random frame's ground truth per clip, from plans only (no drawing): {key: (clips,)}."""
    spec, _ = resolve_task(task, sources or None)
    rng = np.random.default_rng([label, 99])
    out = {k: [] for k in keys}
    for i in range(clips):
        n = int(rng.integers(24, 41))
        plan = spec.plan(np.random.default_rng([7, label, i]), label, n=n, w=size[0], h=size[1],
                         sources=list(sources))
        t = rng.integers(n)
        for k in keys:
            out[k].append(plan.truth[k][t])
    return {k: np.array(v) for k, v in out.items()}


def _assert_same_distribution(task: str, keys: list[str], clips: int = 300, sources=()):
    spec, srcs = resolve_task(task, sources or None)
    samples = [_frame_samples(task, c, clips=clips, keys=keys, sources=srcs) for c in range(len(spec.classes))]
    for (a, sa), (b, sb) in itertools.combinations(enumerate(samples), 2):
        for k in keys:
            p = ks_2samp(sa[k], sb[k]).pvalue
            assert p > P_MIN, f"{task}: {k} of single frames differs between {spec.classes[a]} and {spec.classes[b]} (p={p:.2g})"


# ----------------------------------------------------------------------------- registry

def test_registry_has_every_task_and_a_miss_lists_the_choices():
    assert {"appearance", "direction", "order", "zoom", "fade", "composite",
            "real_scene", "real_pan", "real_zoom", "real_fade"} <= set(TASKS.names())
    with pytest.raises(ValueError, match="unknown task 'dirction'; choose from appearance, composite, direction"):
        get_task("dirction")
    for name, spec in TASKS.items():
        if name != "real_scene":
            assert len(spec.classes) >= 2 and 1 / len(spec.classes) <= spec.ceiling <= 1


# ----------------------------------------------------------------------------- per-frame ceilings (ground truth)

@pytest.mark.parametrize("task,keys", [
    ("direction", ["x", "y"]),
    ("composite", ["x", "y"]),
    ("order", ["red_on", "blue_on", "red_x", "blue_y"]),
    ("zoom", ["scale", "x"]),
    ("fade", ["brightness"]),
])
def test_single_frames_have_the_same_distribution_in_every_class(task, keys):
    if task == "composite":   # the shape is visible; the direction must not be: compare within a shape
        spec = get_task(task)
        a, b = spec.classes.index("square_left"), spec.classes.index("square_right")
        sa, sb = (_frame_samples(task, c, clips=250, keys=keys) for c in (a, b))
        assert all(ks_2samp(sa[k], sb[k]).pvalue > P_MIN for k in keys)
        return
    _assert_same_distribution(task, keys, clips=250)


def test_the_distribution_check_can_fail():
    """The same check on the *first* frame of each clip (which does know the direction) rejects."""
    spec = get_task("direction")
    firsts = []
    for c in range(2):   # left, right
        xs = [spec.plan(np.random.default_rng([3, c, i]), c, n=30, w=48, h=48).truth["x"][0] for i in range(300)]
        firsts.append(xs)
    assert ks_2samp(*firsts).pvalue < 1e-10


# ----------------------------------------------------------------------------- measured on rendered frames

def _object_masks(frames_bgr: np.ndarray) -> np.ndarray:
    """(n, H, W) bool: the vivid object (backgrounds and distractors are grey)."""
    hsv = cv2.cvtColor(frames_bgr.reshape(-1, frames_bgr.shape[2], 3), cv2.COLOR_BGR2HSV)
    hsv = hsv.reshape(frames_bgr.shape)
    return (hsv[..., 1] > 110) & (hsv[..., 2] > 90)


def _centroids(frames_bgr):
    m = _object_masks(frames_bgr)
    ys, xs = np.mgrid[0:m.shape[1], 0:m.shape[2]]
    area = m.sum((1, 2)).clip(1)
    return (m * xs).sum((1, 2)) / area, (m * ys).sum((1, 2)) / area, m.sum((1, 2))


def _colour_counts(frames_bgr):
    """(n,) pixels of the red object and of the blue object per frame."""
    hsv = cv2.cvtColor(frames_bgr.reshape(-1, frames_bgr.shape[2], 3), cv2.COLOR_BGR2HSV).reshape(frames_bgr.shape)
    vivid = (hsv[..., 1] > 110) & (hsv[..., 2] > 90)
    hue = hsv[..., 0].astype(int)
    red = vivid & ((hue < 10) | (hue > 170))
    blue = vivid & (abs(hue - 120) < 12)
    return red.sum((1, 2)), blue.sum((1, 2))


def rule(task: str, frames_bgr: np.ndarray) -> str:
    """A hand-written sequence rule: the label, from the frames alone."""
    if task in ("direction", "composite"):
        x, y, _ = _centroids(frames_bgr)
        dx, dy = x[-1] - x[0], y[-1] - y[0]
        if task == "composite" or abs(dx) > abs(dy):
            return "right" if dx > 0 else "left"
        return "down" if dy > 0 else "up"
    if task == "order":
        red, blue = _colour_counts(frames_bgr)
        return "red_first" if np.argmax(red > 20) < np.argmax(blue > 20) else "blue_first"
    if task == "zoom":
        _, _, area = _centroids(frames_bgr)
        return "grow" if np.polyfit(np.arange(len(area)), area, 1)[0] > 0 else "shrink"
    if task == "fade":
        lum = frames_bgr.mean((1, 2, 3))
        return "brighten" if np.polyfit(np.arange(len(lum)), lum, 1)[0] > 0 else "darken"
    raise AssertionError(task)


def _measure(task: str, frames_bgr: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame measurements (n,) that a per-frame model could use."""
    if task == "order":
        red, blue = _colour_counts(frames_bgr)
        return {"red_seen": (red > 20).astype(float), "blue_seen": (blue > 20).astype(float)}
    if task == "fade":
        return {"luminance": frames_bgr.mean((1, 2, 3))}
    x, y, area = _centroids(frames_bgr)
    return {"x": x, "y": y, "area": area.astype(float)}


@pytest.mark.parametrize("task", ["direction", "composite", "order", "zoom", "fade"])
def test_rendered_frames_hide_the_class_but_the_sequence_reveals_it(task):
    spec = get_task(task)
    clips = 30
    pick = np.random.default_rng(5)
    per_class = []
    correct = 0
    labels = range(len(spec.classes)) if task != "composite" else (0, 1)   # circle_left, circle_right
    for label in labels:
        samples = {}
        for i in range(clips):
            n = int(pick.integers(24, 41))
            frames, _ = render_clip(spec, label, n=n, size=(48, 48), seed_seq=(11, label, i))
            truth = spec.classes[label].split("_")[-1] if task == "composite" else spec.classes[label]
            correct += rule(task, frames) == truth
            t = pick.integers(n)
            for k, v in _measure(task, frames).items():
                samples.setdefault(k, []).append(v[t])
        per_class.append(samples)
    assert correct / (clips * len(labels)) >= 0.97, f"{task}: the sequence rule got {correct}/{clips * len(labels)}"
    for sa, sb in itertools.combinations(per_class, 2):
        for k in sa:
            if k.endswith("_seen"):
                table = [[sum(sa[k]), clips - sum(sa[k])], [sum(sb[k]), clips - sum(sb[k])]]
                p = chi2_contingency(table).pvalue
            else:
                p = ks_2samp(sa[k], sb[k]).pvalue
            assert p > P_MIN, f"{task}: measured {k} of single frames differs between classes (p={p:.2g})"


# ----------------------------------------------------------------------------- real files on disk

def _decoded_bgr(path) -> np.ndarray:
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in iter_frames(path)])


@pytest.fixture(scope="module")
def direction_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "direction"
    generate_dataset(root, task="direction", videos_per_class=3, frames=(20, 26), size=(64, 48),
                     broken=4, workers=0, progress=False)
    return root


def test_dataset_layout_readme_and_metadata(direction_ds):
    meta = json.loads((direction_ds / "generate.json").read_text())
    assert meta["classes"] == ["left", "right", "up", "down"]
    for split, per_class in (("train", 1), ("val", 1), ("test", 1)):
        for cls in meta["classes"]:
            good = [p for p in (direction_ds / split / cls).iterdir() if not p.name.startswith("broken_")]
            assert len(good) == per_class
    readme = (direction_ds / "README.md").read_text()
    assert "Best accuracy a per-frame model can reach: 25%" in readme and "| up | 1 | 1 | 1 |" in readme
    assert sorted(b["kind"] for b in meta["broken_files"]) == ["empty", "garbage", "text", "truncated"]
    assert all(b["path"].startswith("train/") for b in meta["broken_files"])
    assert {v["codec"] for v in meta["videos"]} <= {"mp4v", "MJPG"}
    assert not list(direction_ds.parent.glob(".*partial*"))          # the temporary folder is gone


def test_every_good_file_reads_and_the_sequence_rule_recovers_its_label(direction_ds):
    meta = json.loads((direction_ds / "generate.json").read_text())
    for v in meta["videos"]:
        path = direction_ds / v["path"]
        clip = read_frames(path, count=8, size=32)
        assert clip.frames.shape == (8, 32, 32, 3) and clip.info.num_frames == v["frames"]
        assert rule("direction", _decoded_bgr(path)) == v["label"], v["path"]


def test_the_scanner_indexes_good_files_ok_and_skips_each_broken_one(direction_ds):
    from videoseq.data.dataset import scan_dataset
    index = scan_dataset(direction_ds, DataConfig(), workers=0)
    meta = json.loads((direction_ds / "generate.json").read_text())
    assert len(index.ok()) == len(meta["videos"])
    assert {index.relpath(e) for e in index.skipped()} == {b["path"] for b in meta["broken_files"]}
    assert index.classes == sorted(meta["classes"])


def test_same_seed_same_frames_in_any_worker_count(tmp_path):
    kw = dict(task="appearance", videos_per_class=3, frames=(6, 8), size=(40, 32),
              codecs=("mp4v", "MJPG", "h264"), progress=False)
    a = generate_dataset(tmp_path / "a", seed=3, workers=0, **kw)
    b = generate_dataset(tmp_path / "b", seed=3, workers=2, **kw)
    c = generate_dataset(tmp_path / "c", seed=4, workers=0, **kw)
    videos = json.loads((a / "generate.json").read_text())["videos"]
    assert {v["codec"] for v in videos} == {"mp4v", "MJPG", "h264"}
    for v in videos:
        fa, fb = _decoded_bgr(a / v["path"]), _decoded_bgr(b / v["path"])
        assert np.array_equal(fa, fb), v["path"]
    differs = [not (c / v["path"]).exists() or _decoded_bgr(c / v["path"]).shape != _decoded_bgr(a / v["path"]).shape
               or not np.array_equal(_decoded_bgr(c / v["path"]), _decoded_bgr(a / v["path"])) for v in videos]
    assert all(differs)


def test_existing_dataset_is_reused_and_other_folders_are_refused(tmp_path):
    kw = dict(task="order", videos_per_class=3, frames=(8, 8), size=(32, 32), workers=0, progress=False)
    dest = generate_dataset(tmp_path / "d", **kw)
    stamp = (dest / "README.md").stat().st_mtime_ns
    assert generate_dataset(tmp_path / "d", **kw) == dest and (dest / "README.md").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="not empty and not this dataset"):
        generate_dataset(tmp_path / "d", **{**kw, "seed": 1})


@pytest.mark.parametrize("codec", CODECS.names())
def test_every_codec_writes_a_readable_video(tmp_path, codec):
    frames = np.random.default_rng(0).integers(0, 255, (9, 30, 41, 3), dtype=np.uint8)
    path = write_video(tmp_path / "v", frames, fps=12.5, codec=codec)
    assert path.suffix == CODECS.get(codec).ext and not list(tmp_path.glob(".*"))
    decoded = list(iter_frames(path))
    h, w = decoded[0].shape[:2]                 # codecs may round sides to even ones (hevc: to x8)
    assert len(decoded) == 9 and 30 <= h <= 32 and 40 <= w <= 48


def test_cli_generate_prints_where_and_class_counts(tmp_path, capsys):
    dest = tmp_path / "cli"
    rc = main(["generate", str(dest), "--task", "zoom", "--videos-per-class", "3", "--frames", "8:10",
               "--size", "32x32", "--fps", "12", "--codecs", "MJPG", "--broken", "1", "--no-progress",
               "--workers", "0"])
    out = capsys.readouterr().out
    assert rc == 0 and str(dest) in out and "per-frame ceiling 50%" in out
    assert "grow" in out and "shrink" in out and "1 broken" in out
    assert {p.suffix for p in dest.rglob("*_0*") if not p.name.startswith("broken_")} == {".avi"}
    assert main(["generate", str(tmp_path / "x"), "--task", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- tasks cut from real footage

@pytest.mark.parametrize("task,keys", [
    ("real_pan", ["cx", "cy", "time"]),
    ("real_zoom", ["scale", "cx", "time"]),
    ("real_fade", ["brightness", "time"]),
])
def test_real_footage_single_frames_have_the_same_distribution_in_both_classes(task, keys):
    _assert_same_distribution(task, keys, clips=250)


def _gray(frames_bgr):
    return [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.float32) for f in frames_bgr]


def _centre_zoom(img: np.ndarray, s: float) -> np.ndarray:
    """The central s-fraction of img, enlarged back to full size: what a zoom in by 1/s shows."""
    h, w = img.shape
    ch, cw = round(h * s), round(w * s)
    y, x = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(img[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def real_rule(task: str, frames_bgr: np.ndarray) -> str:
    g = _gray(frames_bgr)
    if task == "real_pan":       # the picture moves left when the camera pans right
        win = cv2.createHanningWindow(g[0].shape[::-1], cv2.CV_32F)
        dx = sum(cv2.phaseCorrelate(a, b, win)[0][0] for a, b in zip(g, g[1:]))
        return "pan_right" if dx < 0 else "pan_left"
    if task == "real_zoom":      # does a later frame look like an enlarged centre of an earlier one?
        votes = 0
        for a, b in zip(g[::4], g[4::4]):
            err_in = min(np.abs(_centre_zoom(a, s) - b).mean() for s in (0.8, 0.87, 0.93))
            err_out = min(np.abs(_centre_zoom(b, s) - a).mean() for s in (0.8, 0.87, 0.93))
            votes += 1 if err_in < err_out else -1
        return "zoom_in" if votes > 0 else "zoom_out"
    if task == "real_fade":
        lum = np.array([x.mean() for x in g])
        return "fade_in" if lum[-len(lum) // 3:].mean() > lum[:len(lum) // 3].mean() else "fade_out"
    raise AssertionError(task)


@pytest.mark.parametrize("task", ["real_pan", "real_zoom", "real_fade"])
def test_real_footage_sequence_rule_recovers_the_class(task):
    spec, srcs = resolve_task(task)
    results = []
    for label, cls in enumerate(spec.classes):
        for i in range(8):
            frames, _ = render_clip(spec, label, n=24, size=(160, 120), seed_seq=(21, label, i), sources=srcs)
            results.append(real_rule(task, frames) == cls)
    assert np.mean(results) >= 0.93, f"{task}: rule right on {sum(results)}/{len(results)}"


def test_real_scene_classes_are_the_sources(tmp_path):
    spec, srcs = resolve_task("real_scene")
    assert spec.classes == ("bigbuckbunny", "bikes", "carphone_pristine") and spec.ceiling == 1.0
    dest = generate_dataset(tmp_path / "scene", task="real_scene", videos_per_class=3, frames=(6, 8),
                            sources=["skimage:chelsea", "skimage:coffee"], codecs=["h264"],
                            workers=0, progress=False)
    meta = json.loads((dest / "generate.json").read_text())
    assert meta["classes"] == ["chelsea", "coffee"]
    sizes = {(v["width"], v["height"]) for v in meta["videos"]}
    assert all(w > h for w, h in sizes)          # the real-footage default sizes are landscape, not square
    for v in meta["videos"]:
        clip = read_frames(dest / v["path"], count=4, size=64)
        assert clip.info.width == v["width"] and clip.info.height == v["height"]
    with pytest.raises(DatasetError, match="source video not found"):
        resolve_task("real_pan", [str(tmp_path / "missing.mp4")])
    with pytest.raises(DatasetError, match="distinct"):
        resolve_task("real_scene", ["skimage:coffee", "skimage:coffee"])
