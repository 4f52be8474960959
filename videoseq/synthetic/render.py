"""Drawing and encoding for the synthetic datasets: shapes, textured backgrounds, scenes, video files.

A `Scene` is everything about one synthetic clip that a task decides (object tracks, background,
global brightness, noise level); `render_scene` turns it into frames with vectorised OpenCV/numpy
calls only (no per-pixel Python). `write_video` encodes frames with OpenCV's VideoWriter or with the
ffmpeg CLI that imageio-ffmpeg ships, chosen by codec name from `CODECS`.

Conventions: coordinates are pixels (float, sub-pixel accurate through OpenCV's fixed-point `shift`),
frames are (H, W, 3) uint8 **BGR** (what VideoWriter takes). Objects are saturated colours; the
background and distractors are (nearly) grey, so "the object" is well defined for tests and models.
"""
from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import cv2
import numpy as np

from videoseq.registry import Registry

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross")
_SHIFT = 4                      # fixed-point bits for sub-pixel drawing
_ONE = 1 << _SHIFT


# ----------------------------------------------------------------------------- shapes

def shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """(K, 2) float vertices of `shape` with circumradius `r` centred at (cx, cy), rotated by `angle` rad."""
    if shape == "square":
        t = np.arange(4) * np.pi / 2 + np.pi / 4
        rad = np.full(4, r)
    elif shape == "triangle":
        t = np.arange(3) * 2 * np.pi / 3 - np.pi / 2
        rad = np.full(3, r)
    elif shape == "star":
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    elif shape == "hexagon":
        t = np.arange(6) * np.pi / 3
        rad = np.full(6, r)
    elif shape == "cross":
        a = 0.35 * r                     # half the arm width
        pts = np.array([(a, r), (a, a), (r, a), (r, -a), (a, -a), (a, -r),
                        (-a, -r), (-a, -a), (-r, -a), (-r, a), (-a, a), (-a, r)], float)
        t = np.arctan2(pts[:, 1], pts[:, 0])
        rad = np.hypot(pts[:, 0], pts[:, 1])
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    t = t + angle
    return np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], axis=1)


def draw_shape(img: np.ndarray, shape: str, cx: float, cy: float, r: float, angle: float,
               color: tuple[int, int, int]) -> None:
    """Fill `shape` into `img` (H, W, 3) in place, anti-aliased, at sub-pixel position."""
    if shape == "circle":
        cv2.circle(img, (round(cx * _ONE), round(cy * _ONE)), max(1, round(r * _ONE)), color,
                   -1, cv2.LINE_AA, _SHIFT)
        return
    pts = np.round(shape_polygon(shape, cx, cy, r, angle) * _ONE).astype(np.int32)
    cv2.fillPoly(img, [pts], color, cv2.LINE_AA, _SHIFT)


def saturated_color(rng: np.random.Generator, hue: float | None = None) -> tuple[int, int, int]:
    """A vivid BGR colour (HSV saturation >= 0.75, value >= 0.8); `hue` in [0, 180) or random."""
    h = rng.uniform(0, 180) if hue is None else hue
    hsv = np.array([[[h, rng.uniform(190, 255), rng.uniform(205, 255)]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def grey_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random near-grey BGR colour (channels within +-6 of one level)."""
    g = rng.uniform(20, 235)
    return tuple(int(np.clip(g + rng.uniform(-6, 6), 0, 255)) for _ in range(3))


# ----------------------------------------------------------------------------- scenes

@dataclass
class Track:
    """One object over n frames. Arrays are (n,) float; `visible` (n,) bool."""
    shape: str
    color: tuple[int, int, int]
    x: np.ndarray
    y: np.ndarray
    r: np.ndarray
    angle: float = 0.0
    visible: np.ndarray | None = None   # None = always visible


@dataclass
class Scene:
    """A synthetic clip before drawing: background (H, W, 3) uint8 BGR with the static distractors
    already in it, the tracks drawn on top in order, a per-frame brightness multiplier (n,), noise."""
    background: np.ndarray
    tracks: list[Track]
    brightness: np.ndarray
    noise_sigma: float
    truth: dict[str, np.ndarray] = field(default_factory=dict)   # per-frame ground truth, (n,) each

    @property
    def num_frames(self) -> int:
        return len(self.brightness)


def textured_background(rng: np.random.Generator, w: int, h: int, *, distractors: int = 3) -> np.ndarray:
    """A grey-ish textured (H, W, 3) uint8 BGR background: smooth blobs, fine grain, a gradient and
    `distractors` small grey shapes."""
    base = rng.uniform(70, 170)
    img = np.full((h, w), base, np.float32)
    # coarse blobs, then finer texture; mild, so that small training sets still find the object
    for cell, amp in ((max(w, h) / 3, 14.0), (8.0, 6.0)):
        gw, gh = max(2, int(w / cell) + 2), max(2, int(h / cell) + 2)
        low = rng.normal(0, amp, (gh, gw)).astype(np.float32)
        img += cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img += rng.uniform(0, 15) * ((xx / w - 0.5) * np.cos(theta) + (yy / h - 0.5) * np.sin(theta))
    tint = rng.uniform(-8, 8, 3).astype(np.float32)
    bg = np.clip(img[..., None] + tint, 0, 255).astype(np.uint8)
    side = min(w, h)
    for _ in range(distractors):
        draw_shape(bg, SHAPES[rng.integers(len(SHAPES))], rng.uniform(0, w), rng.uniform(0, h),
                   rng.uniform(0.04, 0.09) * side, rng.uniform(0, 2 * np.pi), grey_color(rng))
    return bg


def moving_distractors(rng: np.random.Generator, n: int, w: int, h: int, count: int) -> list[Track]:
    """Small grey objects on straight paths in random directions (time-symmetric, so class-free)."""
    side = min(w, h)
    tracks = []
    for _ in range(count):
        x0, x1 = rng.uniform(0, w, 2)
        y0, y1 = rng.uniform(0, h, 2)
        tracks.append(Track(SHAPES[rng.integers(len(SHAPES))], grey_color(rng),
                            np.linspace(x0, x1, n), np.linspace(y0, y1, n),
                            np.full(n, rng.uniform(0.03, 0.06) * side), rng.uniform(0, 2 * np.pi)))
    return tracks


def render_scene(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """(n, H, W, 3) uint8 BGR frames of `scene`, with per-frame Gaussian sensor noise from `rng`."""
    h, w = scene.background.shape[:2]
    n = scene.num_frames
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        img = out[t]
        img[...] = scene.background
        for tr in scene.tracks:
            if tr.visible is None or tr.visible[t]:
                draw_shape(img, tr.shape, tr.x[t], tr.y[t], tr.r[t], tr.angle, tr.color)
    return finish_frames(out, scene.brightness, scene.noise_sigma, rng)


def finish_frames(frames: np.ndarray, brightness: np.ndarray, noise_sigma: float,
                  rng: np.random.Generator) -> np.ndarray:
    """uint8 frames (n, H, W, 3) times a per-frame brightness (n,), plus Gaussian noise: one vectorised pass."""
    f = frames.astype(np.float32)
    if not np.all(brightness == 1.0):
        f *= np.asarray(brightness, np.float32)[:, None, None, None]
    if noise_sigma > 0:            # OpenCV's generator, seeded from ours: faster than numpy's normal
        noise = np.empty_like(f)
        cv2.setRNGSeed(int(rng.integers(2**31 - 1)))
        cv2.randn(noise.reshape(len(f), -1), 0.0, float(noise_sigma))
        f += noise
    np.clip(f, 0, 255, out=f)
    return f.astype(np.uint8)


# ----------------------------------------------------------------------------- encoding

class Codec(NamedTuple):
    """How one codec writes a video: the container extension and the writer function."""
    ext: str                                            # container extension, with the dot
    write: Callable[[Path, np.ndarray, float], None]    # (path, frames (n, H, W, 3) BGR, fps)


def _opencv_writer(fourcc: str) -> Callable[[Path, np.ndarray, float], None]:
    def write(path: Path, frames: np.ndarray, fps: float) -> None:
        h, w = frames.shape[1:3]
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
        try:
            if not vw.isOpened():
                raise RuntimeError(f"{path}: OpenCV cannot write {fourcc} video")
            for f in frames:
                vw.write(np.ascontiguousarray(f))
        finally:
            vw.release()
    return write


def ffmpeg_exe() -> str:
    """The ffmpeg binary that imageio-ffmpeg ships."""
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg_writer(*codec_args: str, align: int = 2) -> Callable[[Path, np.ndarray, float], None]:
    """Pipe raw BGR frames into the ffmpeg CLI. Sides are padded (edge rows/columns repeated) to a
    multiple of `align`: 4:2:0 needs even sides, and this build's libx265 crashes unless they are x8."""
    def write(path: Path, frames: np.ndarray, fps: float) -> None:
        h, w = frames.shape[1:3]
        ph, pw = -h % align, -w % align
        if ph or pw:
            frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
            h, w = h + ph, w + pw
        cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-", "-threads", "1", *codec_args, "-pix_fmt", "yuv420p", "-an", str(path)]
        proc = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{path}: ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    return write


CODECS: Registry[Codec] = Registry("codec")
CODECS.add("mp4v", Codec(".mp4", _opencv_writer("mp4v")))     # MPEG-4 part 2 in mp4 (OpenCV)
CODECS.add("MJPG", Codec(".avi", _opencv_writer("MJPG")))     # motion JPEG in avi (OpenCV)
CODECS.add("XVID", Codec(".avi", _opencv_writer("XVID")))     # MPEG-4 part 2 in avi (OpenCV)
CODECS.add("h264", Codec(".mp4", _ffmpeg_writer("-c:v", "libx264", "-preset", "veryfast", "-crf", "20")))
CODECS.add("h264_mkv", Codec(".mkv", _ffmpeg_writer("-c:v", "libx264", "-preset", "veryfast", "-crf", "23")))
CODECS.add("hevc", Codec(".mkv", _ffmpeg_writer("-c:v", "libx265", "-preset", "ultrafast", "-crf", "26",
                                                "-x265-params", "log-level=error:pools=none:frame-threads=1", align=8)))
CODECS.add("vp9", Codec(".webm", _ffmpeg_writer("-c:v", "libvpx-vp9", "-deadline", "realtime",
                                                 "-cpu-used", "8", "-b:v", "0", "-crf", "34")))
CODECS.add("mpeg2", Codec(".mpg", _ffmpeg_writer("-c:v", "mpeg2video", "-q:v", "4")))


def write_video(path: str | Path, frames: np.ndarray, *, fps: float, codec: str) -> Path:
    """Encode (n, H, W, 3) uint8 BGR `frames` to `path` (its suffix is replaced by the codec's).

    Written under a temporary name in the same folder and renamed, so a killed run never leaves a
    half-written video that looks finished. Returns the final path.
    """
    spec = CODECS.get(codec)       # UnknownNameError (a ValueError) listing the codecs
    path = Path(path).with_suffix(spec.ext)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{spec.ext}")
    try:
        spec.write(tmp, frames, fps)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
