"""Tasks cut from real footage where the class is a change other than a pan or a zoom: a partial fade,
a lighting change, playback speed, a cut, camera speed.

Built like the tasks of footage.py (a crop window over a source clip or photo, `Shot`), with the same
rule: any single frame has the same distribution in both classes, so a per-frame model stays at
chance. Ramps are one random ramp played forwards or backwards; a fast clip is the normal one with
time running k times faster (camera path and source content alike); a cut joins two shots that each
look like a continuous one. Content is played within one of the source's own continuous shots
(`source_shots`: bikes.mp4 has five cuts of its own), back and forth at its ends. Each shot is rendered without noise, changed, then given its sensor noise.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from videoseq.synthetic.footage import (FOOTAGE_CODECS, FPS, SIZES, Shot, _max_width, load_source,
                                        render_shot)
from videoseq.synthetic.render import finish_frames
from videoseq.synthetic.tasks import TASKS, TaskSpec, ramp


@dataclass
class ChangedShot:
    """One or two shots (a cut joins them at frame `cut`), then a change of light: each frame mixed
    towards the flat colour `mix_color` by `mix` (n,), and multiplied by a gain field `gain` (n,) times
    (1 + `slope` * the position along the direction `angle`, -0.5..0.5 across the frame)."""
    shots: list[Shot]
    cut: int
    mix: np.ndarray
    mix_color: np.ndarray          # (3,) BGR
    gain: np.ndarray
    slope: float
    angle: float
    noise_sigma: float
    truth: dict[str, np.ndarray] = field(default_factory=dict)


def render_changed(plan: ChangedShot, rng: np.random.Generator, sources=None) -> np.ndarray:
    """(n, h, w, 3) uint8 BGR frames of `plan`."""
    frames = render_shot(plan.shots[0], rng)
    if len(plan.shots) > 1:
        frames[plan.cut:] = render_shot(plan.shots[1], rng)[plan.cut:]
    f = frames.astype(np.float32)
    n, h, w = f.shape[:3]
    if np.any(plan.mix):
        a = plan.mix.astype(np.float32)[:, None, None, None]
        f = (1 - a) * f + a * plan.mix_color.astype(np.float32)
    if not (np.all(plan.gain == 1.0) and plan.slope == 0):
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        along = (np.cos(plan.angle) * (xs / w - 0.5) + np.sin(plan.angle) * (ys / h - 0.5))
        field_ = (1 + plan.slope * along)[None, :, :, None]                      # (1, h, w, 1)
        f = f * plan.gain.astype(np.float32)[:, None, None, None] * field_
    np.clip(f, 0, 255, out=f)
    return finish_frames(f.astype(np.uint8), np.ones(n), plan.noise_sigma, rng)


def _pingpong(pos: np.ndarray, length: int) -> np.ndarray:
    """Positions on an unbounded line folded into 0..length-1, back and forth (a reflection)."""
    if length <= 1:
        return np.zeros(len(pos), int)
    period = 2 * (length - 1)
    p = np.mod(np.round(pos).astype(int), period)
    return np.where(p < length, p, period - p)


def _bounce(pos: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions folded into [lo, hi] by reflection at both ends."""
    if hi <= lo:
        return np.full(len(pos), (lo + hi) / 2)
    span = hi - lo
    p = np.mod(pos - lo, 2 * span)
    return lo + np.where(p < span, p, 2 * span - p)


@functools.lru_cache(maxsize=16)
def source_shots(source: str) -> tuple[tuple[int, int], ...]:
    """(start, stop) frame ranges of the continuous shots of a source: a cut is a step whose mean
    absolute grey change exceeds 4x the source's median step + 5 (bikes.mp4 has five)."""
    src = load_source(source)
    if len(src) < 2:
        return ((0, len(src)),)
    grey = np.asarray(src[:, ::4, ::4], np.float32).mean(axis=3)                # (N, h/4, w/4)
    step = np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2))                      # (N-1,)
    cuts = [i + 1 for i, v in enumerate(step) if v > 4 * np.median(step) + 5]
    bounds = [0, *cuts, len(src)]
    return tuple((a, b) for a, b in zip(bounds, bounds[1:]) if b > a)


def _source(rng, sources):
    """A random source, its frames, and one of its continuous shots (longer shots more likely)."""
    source = sources[int(rng.integers(len(sources)))]
    src = load_source(source)
    shots = source_shots(source)
    lengths = np.array([b - a for a, b in shots], float)
    a, b = shots[int(rng.choice(len(shots), p=lengths / lengths.sum()))]
    return source, src, a, b


def _playback(rng, a: int, b: int, t: np.ndarray) -> np.ndarray:
    """Source frame numbers of shot [a, b) at times t: step 1 or 2, forwards or backwards, back and forth
    at the shot's ends, from a random start."""
    step = int(rng.integers(1, 3)) * (1 if rng.random() < 0.5 else -1)
    return a + _pingpong(rng.uniform(0, b - a) + step * t, b - a)


def _drifting(rng, n, w, h, sources, *, time_scale: float = 1.0, width=(0.55, 0.9)) -> Shot:
    """A shot of a random source: a random excerpt at step 1 or 2 (forwards or backwards, back and forth
    at its ends), a random window drifting straight by up to 15% of its width over the clip.
    `time_scale` plays the content that much faster."""
    source, src, a, b = _source(rng, sources)
    sh, sw = src.shape[1:3]
    cw = rng.uniform(*width) * _max_width(src, w, h)
    ch = cw * h / w
    idx = _playback(rng, a, b, time_scale * np.arange(n))
    x0, y0 = rng.uniform(cw / 2, sw - cw / 2), rng.uniform(ch / 2, sh - ch / 2)
    x1 = np.clip(x0 + rng.uniform(-0.15, 0.15) * cw, cw / 2, sw - cw / 2)
    y1 = np.clip(y0 + rng.uniform(-0.15, 0.15) * cw, ch / 2, sh - ch / 2)
    return _window(source, src, idx, np.linspace(x0, x1, n), np.linspace(y0, y1, n), np.full(n, cw), w, h)


def _window(source, src, idx, cx, cy, cw, w, h) -> Shot:
    sh, sw = src.shape[1:3]
    truth = {"cx": cx / sw, "cy": cy / sh, "time": idx / max(1, len(src) - 1)}
    return Shot(source, np.asarray(idx), cx, cy, cw, np.ones(len(idx)), (w, h), 0.0, truth)


def _changed(shots, n, rng, *, cut=0, mix=None, mix_color=None, gain=None, slope=0.0, angle=0.0,
             truth=None) -> ChangedShot:
    mix = np.zeros(n) if mix is None else mix
    gain = np.ones(n) if gain is None else gain
    color = np.zeros(3) if mix_color is None else mix_color
    base = {k: v for k, v in shots[0].truth.items()}
    return ChangedShot(shots, cut, mix, color, gain, slope, angle, float(rng.uniform(0.0, 3.0)),
                       {**base, "mix": mix, "gain": gain, **(truth or {})})


# ----------------------------------------------------------------------------- tasks

PARTIAL_FADE_CLASSES = ("fade_in", "fade_out")


def plan_partial_fade(rng, label, *, n, w, h, sources) -> ChangedShot:
    """Moving footage mixed towards a flat colour (black, grey, white or a random colour) by a share
    that ramps over 60-100% of the clip between 0 and 40-75%: it never reaches or leaves the flat colour.
    Fade out: the share grows; fade in: it shrinks."""
    shot = _drifting(rng, n, w, h, sources)
    kind = int(rng.integers(4))
    color = (np.zeros(3), np.full(3, rng.uniform(80, 180)), np.full(3, 255.0),
             rng.uniform(0, 255, 3))[kind]
    top = rng.uniform(0.4, 0.75)
    a = ramp(rng, n, lo=0.0, hi=top, span=(0.6, 1.0))
    if PARTIAL_FADE_CLASSES[label] == "fade_in":
        a = a[::-1].copy()
    return _changed([shot], n, rng, mix=a, mix_color=color)


LIGHT_CLASSES = ("light_up", "light_down")


def plan_light(rng, label, *, n, w, h, sources) -> ChangedShot:
    """Moving footage under light that rises (light_up) or falls (light_down) over a random part of
    0.45-1.15 times the original brightness, with a gradient of up to +-30% across a random direction."""
    shot = _drifting(rng, n, w, h, sources)
    g = ramp(rng, n, lo=0.45, hi=1.15, span=(0.45, 0.8))
    if LIGHT_CLASSES[label] == "light_down":
        g = g[::-1].copy()
    return _changed([shot], n, rng, gain=g, slope=float(rng.uniform(0.0, 0.6)),
                    angle=float(rng.uniform(0, 2 * np.pi)))


SPEED_CLASSES = ("normal", "fast")


def plan_speed(rng, label, *, n, w, h, sources) -> ChangedShot:
    """Hand-held footage: a window wandering on a smooth random path (three sines per axis, 4-10% of
    its width), over content played at step 1 or 2. Fast: 3-4 times as fast, path and content alike
    (fast-forward of the same kind of shot)."""
    k = float(rng.uniform(3.0, 4.0)) if SPEED_CLASSES[label] == "fast" else 1.0
    source, src, a, b = _source(rng, sources)
    sh, sw = src.shape[1:3]
    cw = rng.uniform(0.5, 0.75) * _max_width(src, w, h)
    ch = cw * h / w
    t = k * np.arange(n) + rng.uniform(0, 1000)
    path = []
    for lo, hi in ((cw / 2, sw - cw / 2), (ch / 2, sh - ch / 2)):
        wobble = sum(rng.uniform(0.04, 0.1) * cw / 3 * np.sin(2 * np.pi * t / rng.uniform(12, 40)
                                                              + rng.uniform(0, 2 * np.pi))
                     for _ in range(3))
        path.append(_bounce(rng.uniform(lo, hi) + wobble, lo, hi))
    idx = _playback(rng, a, b, t)
    shot = _window(source, src, idx, path[0], path[1], np.full(n, cw), w, h)
    return _changed([shot], n, rng, truth={"speed": np.full(n, k)})


CUT_CLASSES = ("continuous", "cut")


def plan_cut(rng, label, *, n, w, h, sources) -> ChangedShot:
    """One continuous drifting shot, or two such shots (of random sources, places and times) joined by a
    hard cut at 30-70% of the clip."""
    first = _drifting(rng, n, w, h, sources)
    if CUT_CLASSES[label] == "continuous":
        return _changed([first], n, rng, truth={"cut": np.zeros(n)})
    at = int(round(rng.uniform(0.3, 0.7) * (n - 1)))
    second = _drifting(rng, n, w, h, sources)
    return _changed([first, second], n, rng, cut=at, truth={"cut": (np.arange(n) >= at).astype(float)})


CAMSPEED_CLASSES = ("slow", "fast")


def plan_camspeed(rng, label, *, n, w, h, sources) -> ChangedShot:
    """A window (40-60% of the widest) panning in a random direction, bouncing off the source's borders:
    0.5-1.2% of its width per frame (slow) or 3-5% (fast). The content plays at its own speed."""
    source, src, a, b = _source(rng, sources)
    sh, sw = src.shape[1:3]
    cw = rng.uniform(0.4, 0.6) * _max_width(src, w, h)
    ch = cw * h / w
    speed = rng.uniform(0.005, 0.012) if CAMSPEED_CLASSES[label] == "slow" else rng.uniform(0.03, 0.05)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.arange(n)
    cx = _bounce(rng.uniform(0, 4 * sw) + np.cos(angle) * speed * cw * t, cw / 2, sw - cw / 2)
    cy = _bounce(rng.uniform(0, 4 * sh) + np.sin(angle) * speed * cw * t, ch / 2, sh - ch / 2)
    idx = _playback(rng, a, b, t)
    shot = _window(source, src, idx, cx, cy, np.full(n, cw), w, h)
    return _changed([shot], n, rng, truth={"speed": np.full(n, speed)})


def _task(name, classes, description, plan) -> TaskSpec:
    return TaskSpec(name, classes, 0.5, description, plan, render_changed, footage=True,
                    sizes=SIZES, codecs=FOOTAGE_CODECS, fps=FPS)


for _spec in (
    _task("real_fade_partial", PARTIAL_FADE_CLASSES,
          "Moving real footage fades part of the way in from, or out to, a flat colour (black, grey, "
          "white or any colour), never reaching it. Single frames look alike in both classes.",
          plan_partial_fade),
    _task("real_light", LIGHT_CLASSES,
          "The light on moving real footage rises or falls (0.45-1.15x, with a gradient across a random "
          "direction). Single frames look alike in both classes.", plan_light),
    _task("real_speed", SPEED_CLASSES,
          "Hand-held real footage at normal speed or fast-forwarded 3-4x (camera path and content "
          "alike). Single frames look alike in both classes.", plan_speed),
    _task("real_cut", CUT_CLASSES,
          "One continuous real shot, or two joined by a hard cut. Single frames look alike in both "
          "classes.", plan_cut),
    _task("real_camspeed", CAMSPEED_CLASSES,
          "A camera pans over real footage in a random direction, slowly (0.5-1.2% of the frame per "
          "frame) or fast (3-5%). Single frames look alike in both classes.", plan_camspeed),
):
    TASKS.add(_spec.name, _spec)
