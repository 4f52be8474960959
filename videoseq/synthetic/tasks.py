"""Synthetic tasks: shapes on textured, noisy backgrounds, each task a separate dataset.

Every task's `plan(rng, label, n=, w=, h=)` returns a `Scene` whose per-frame ground truth sits in
`scene.truth`. The temporal tasks are built so that a *single frame* has the same distribution for
every class, which caps a per-frame model at chance (or at 1/2 for `composite`):

- a path and its time reversal visit the same positions/scales/brightnesses, so "left" vs "right",
  "grow" vs "shrink", "brighten" vs "darken" are drawn as one random ramp, played forwards or backwards;
- for `direction`, the coordinate across the motion is drawn from the very distribution that a random
  frame's coordinate along the motion has, so horizontal and vertical movers look alike frame by frame;
- for `order`, the two flash windows have i.i.d. lengths, so each colour is on screen equally often.

Sizes and speeds are in fractions of the frame, so the signal is as clear at 64x64 as at 320x240.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from videoseq.registry import Registry
from videoseq.synthetic.render import (Scene, Track, moving_distractors, render_scene,
                                       saturated_color, textured_background)

RED_HUE, BLUE_HUE = 0.0, 120.0          # OpenCV hue scale (0..180)


class TaskSpec(NamedTuple):
    """One generated task: its classes, the per-frame ceiling, how to plan and render a clip, defaults."""
    name: str
    classes: tuple[str, ...]
    ceiling: float                      # best test accuracy a model that sees one frame at a time can reach
    description: str                    # what a video of each class shows (README)
    plan: Callable[..., Any]            # (rng, label, *, n, w, h, sources) -> Scene | Shot
    render: Callable[..., np.ndarray]   # (plan, rng, sources) -> (n, H, W, 3) uint8 BGR
    footage: bool = False               # needs source videos/photos
    sizes: tuple[tuple[int, int], ...] = ((96, 96),)                 # default (W, H) choices
    codecs: tuple[str, ...] = ("mp4v", "MJPG")                        # default codec choices
    fps: tuple[float, ...] = (10, 15, 25)                             # default frame-rate choices


# ----------------------------------------------------------------------------- building blocks

def ramp(rng: np.random.Generator, n: int, *, lo: float, hi: float, span: tuple[float, float]) -> np.ndarray:
    """(n,) increasing linear ramp covering a random sub-interval of [lo, hi] of length span*(hi-lo)."""
    length = rng.uniform(*span) * (hi - lo)
    start = rng.uniform(lo, hi - length)
    return start + length * np.linspace(0.0, 1.0, n)


def ramp_frame(rng: np.random.Generator, n: int, *, lo: float, hi: float,
               span: tuple[float, float]) -> float:
    """One value distributed exactly like a random frame of `ramp(...)` (a random ramp, a random step)."""
    return float(ramp(rng, n, lo=lo, hi=hi, span=span)[rng.integers(n)])


def _base(rng: np.random.Generator, n: int, w: int, h: int, *,
          movers: bool = True) -> tuple[np.ndarray, list[Track], float]:
    """Background with static distractors, (0-1) moving grey distractors, sensor-noise sigma.
    Direction tasks go without movers: a grey object drifting its own way slows learning the vivid one's."""
    bg = textured_background(rng, w, h, distractors=int(rng.integers(2, 5)))
    tracks = moving_distractors(rng, n, w, h, int(rng.integers(0, 2))) if movers else []
    return bg, tracks, float(rng.uniform(2.0, 5.0))


def _random_walker(rng: np.random.Generator, n: int, w: int, h: int, r: float) -> tuple[np.ndarray, np.ndarray]:
    """A straight path between two uniform points inside the frame (time-symmetric in distribution)."""
    x0, x1 = rng.uniform(r, w - r, 2)
    y0, y1 = rng.uniform(r, h - r, 2)
    return np.linspace(x0, x1, n), np.linspace(y0, y1, n)


def _scene(bg, movers, tracks, n, noise, truth, brightness=None) -> Scene:
    b = np.ones(n) if brightness is None else brightness
    return Scene(bg, movers + tracks, b, noise, {k: np.asarray(v, float) for k, v in truth.items()})


PATH = dict(lo=0.0, hi=1.0, span=(0.5, 0.8))       # motion covers 50-80% of the free range


# ----------------------------------------------------------------------------- tasks

APPEARANCE_SHAPES = ("circle", "square", "triangle", "star")


def plan_appearance(rng, label, *, n, w, h, sources=None) -> Scene:
    """One vivid object of shape `label` on a random walk."""
    bg, movers, noise = _base(rng, n, w, h)
    r = rng.uniform(0.11, 0.17) * min(w, h)
    x, y = _random_walker(rng, n, w, h, r)
    obj = Track(APPEARANCE_SHAPES[label], saturated_color(rng), x, y, np.full(n, r), rng.uniform(0, 2 * np.pi))
    return _scene(bg, movers, [obj], n, noise, {"x": x / w, "y": y / h, "r": np.full(n, r)})


DIRECTIONS = ("left", "right", "up", "down")


def _directed(rng, n, w, h, r, direction) -> tuple[np.ndarray, np.ndarray]:
    """Pixel path of an object of radius r moving `direction`; free range is [r, side - r]."""
    along = ramp(rng, n, **PATH)
    if direction in ("left", "up"):
        along = along[::-1]
    across = np.full(n, ramp_frame(rng, n, **PATH))
    ax, ay = (along, across) if direction in ("left", "right") else (across, along)
    return r + ax * (w - 2 * r), r + ay * (h - 2 * r)


def plan_direction(rng, label, *, n, w, h, sources=None) -> Scene:
    """One object of random shape moving in direction `label` (left, right, up, down)."""
    bg, movers, noise = _base(rng, n, w, h, movers=False)
    r = rng.uniform(0.11, 0.16) * min(w, h)
    x, y = _directed(rng, n, w, h, r, DIRECTIONS[label])
    shape = ("circle", "square", "triangle", "star", "hexagon", "cross")[rng.integers(6)]
    obj = Track(shape, saturated_color(rng), x, y, np.full(n, r), rng.uniform(0, 2 * np.pi))
    return _scene(bg, movers, [obj], n, noise, {"x": x / w, "y": y / h})


COMPOSITE_SHAPES = ("circle", "square", "triangle")
COMPOSITE_CLASSES = tuple(f"{s}_{d}" for s in COMPOSITE_SHAPES for d in ("left", "right"))


def plan_composite(rng, label, *, n, w, h, sources=None) -> Scene:
    """An object of the class's shape moving in the class's direction (left or right)."""
    shape, direction = COMPOSITE_CLASSES[label].split("_")
    bg, movers, noise = _base(rng, n, w, h, movers=False)
    r = rng.uniform(0.11, 0.16) * min(w, h)
    x, y = _directed(rng, n, w, h, r, direction)
    obj = Track(shape, saturated_color(rng), x, y, np.full(n, r), rng.uniform(0, 2 * np.pi))
    return _scene(bg, movers, [obj], n, noise, {"x": x / w, "y": y / h})


ORDER_CLASSES = ("red_first", "blue_first")


def flash_windows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) bool masks of the first and second flash: i.i.d. lengths of 22-34% of the clip, >= 1 frame apart."""
    d1, d2 = (max(1, round(rng.uniform(0.22, 0.34) * n)) for _ in range(2))
    gaps = max(0, n - d1 - d2 - 1)
    g0, g1, _ = rng.multinomial(gaps, [1 / 3] * 3)
    t = np.arange(n)
    first = (t >= g0) & (t < g0 + d1)
    s2 = g0 + d1 + 1 + g1
    second = (t >= s2) & (t < s2 + d2)
    return first, second


def plan_order(rng, label, *, n, w, h, sources=None) -> Scene:
    """A red and a blue object shown one after the other; the class is which comes first."""
    bg, movers, noise = _base(rng, n, w, h)
    first, second = flash_windows(rng, n)
    red_on, blue_on = (first, second) if ORDER_CLASSES[label] == "red_first" else (second, first)
    tracks, truth = [], {"red_on": red_on, "blue_on": blue_on}
    for name, hue, on in (("red", RED_HUE, red_on), ("blue", BLUE_HUE, blue_on)):
        r = rng.uniform(0.12, 0.18) * min(w, h)
        x, y = _random_walker(rng, n, w, h, r)
        x, y = x[0] + 0.15 * (x - x[0]), y[0] + 0.15 * (y - y[0])     # a slow drift, not a race
        shape = ("circle", "square", "triangle", "star", "hexagon", "cross")[rng.integers(6)]
        tracks.append(Track(shape, saturated_color(rng, hue), x, y, np.full(n, r),
                            rng.uniform(0, 2 * np.pi), visible=on))
        truth[f"{name}_x"], truth[f"{name}_y"] = x / w, y / h
    return _scene(bg, movers, tracks, n, noise, truth)


ZOOM_CLASSES = ("grow", "shrink")


def plan_zoom(rng, label, *, n, w, h, sources=None) -> Scene:
    """One object whose radius grows or shrinks over part of the clip."""
    bg, movers, noise = _base(rng, n, w, h)
    side = min(w, h)
    scale = ramp(rng, n, lo=0.07, hi=0.36, span=(0.5, 0.75))          # radius / side
    if ZOOM_CLASSES[label] == "shrink":
        scale = scale[::-1]
    r = scale * side
    rmax = r.max()
    cx, cy = rng.uniform(rmax, w - rmax), rng.uniform(rmax, h - rmax)
    shape = ("circle", "square", "triangle", "star", "hexagon", "cross")[rng.integers(6)]
    obj = Track(shape, saturated_color(rng), np.full(n, cx), np.full(n, cy), r, rng.uniform(0, 2 * np.pi))
    return _scene(bg, movers, [obj], n, noise, {"scale": scale, "x": np.full(n, cx / w), "y": np.full(n, cy / h)})


FADE_CLASSES = ("brighten", "darken")


def plan_fade(rng, label, *, n, w, h, sources=None) -> Scene:
    """A scene whose brightness ramps up (brighten) or down (darken) over part of the clip."""
    bg, movers, noise = _base(rng, n, w, h)
    b = ramp(rng, n, lo=0.12, hi=1.0, span=(0.55, 0.8))
    if FADE_CLASSES[label] == "darken":
        b = b[::-1]
    r = rng.uniform(0.11, 0.17) * min(w, h)
    x, y = _random_walker(rng, n, w, h, r)
    shape = ("circle", "square", "triangle", "star", "hexagon", "cross")[rng.integers(6)]
    obj = Track(shape, saturated_color(rng), x, y, np.full(n, r), rng.uniform(0, 2 * np.pi))
    return _scene(bg, movers, [obj], n, noise, {"brightness": b}, brightness=b)


def _render(scene: Scene, rng: np.random.Generator, sources=None) -> np.ndarray:
    return render_scene(scene, rng)


TASKS: Registry[TaskSpec] = Registry("task")   # synthetic tasks here; footage.py adds the real_* ones
for _spec in (
    TaskSpec(
        "appearance", APPEARANCE_SHAPES, 1.0,
        "One vivid object moves along a random straight path; the class is its shape. "
        "One frame suffices.", plan_appearance, _render),
    TaskSpec(
        "direction", DIRECTIONS, 0.25,
        "One vivid object of random shape moves left, right, up or down across 50-80% of the frame. "
        "Start positions and paths are drawn so that any single frame has the same distribution for "
        "every class: only the sequence tells the direction.", plan_direction, _render),
    TaskSpec(
        "order", ORDER_CLASSES, 0.5,
        "A red and a blue object each appear for 22-34% of the clip, one after the other; the class "
        "is which came first. Each colour is on screen equally often in both classes.", plan_order, _render),
    TaskSpec(
        "zoom", ZOOM_CLASSES, 0.5,
        "One vivid object grows or shrinks (radius ramps over a random part of 7-36% of the frame); "
        "a single frame shows the same size distribution in both classes.", plan_zoom, _render),
    TaskSpec(
        "fade", FADE_CLASSES, 0.5,
        "The whole scene brightens or darkens (brightness ramps over a random part of 12-100%); a "
        "single frame shows the same brightness distribution in both classes.", plan_fade, _render),
    TaskSpec(
        "composite", COMPOSITE_CLASSES, 0.5,
        "Object shape (circle, square, triangle) x direction (left, right): one frame shows the "
        "shape but not the direction, so a per-frame model can reach 1/2 and no more.",
        plan_composite, _render),
):
    TASKS.add(_spec.name, _spec)
