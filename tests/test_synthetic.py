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
from videoseq.synthetic import TASKS, generate_dataset, get_task, render_clip, resolve_task
from videoseq.synthetic_render import CODECS, write_video
from videoseq.video import iter_frames, read_frames

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
            "real_scene", "real_pan", "real_zoom", "real_fade"} <= set(TASKS)
    with pytest.raises(ValueError, match="unknown task 'dirction'; choose from appearance, direction"):
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
    if task == "composite":   # the shape is visible; direction must not be: compare within a shape
        spec = get_task(task)
        for shape in ("circle", "square", "triangle"):
            a, b = spec.classes.index(f"{shape}_left"), spec.classes.index(f"{shape}_right")
            sa, sb = (_frame_samples(task, c, clips=300, keys=keys) for c in (a, b))
            assert all(ks_2samp(sa[k], sb[k]).pvalue > P_MIN for k in keys)
        return
    _assert_same_distribution(task, keys)


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
    clips = 40
    pick = np.random.default_rng(5)
    per_class = []
    correct = 0
    labels = range(len(spec.classes)) if task != "composite" else (0, 1)   # circle_left, circle_right
    for label in labels:
        samples = {}
        for i in range(clips):
            n = int(pick.integers(24, 41))
            frames, _ = render_clip(spec, label, n=n, size=(64, 64), seed_seq=(11, label, i))
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
