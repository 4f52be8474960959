"""Tiny real videos for tests, with the frame number drawn into every frame.

Each frame carries its index as a 4x4 grid of large cells inside the central square of the frame
(so it survives a shorter-side resize + centre crop): the top-left cell is pure red (an orientation and
RGB-order marker), the other 15 cells are the bits of the index, white = 1, black = 0, most significant
first. `frame_number(frame_rgb)` reads it back; it raises `ValueError` when the marker is not red in the
top-left cell, i.e. when a frame is rotated or in BGR order.

Writers: OpenCV `VideoWriter` (mp4v .mp4, MJPG .avi) and the ffmpeg CLI (H.264 with a chosen GOP in
mp4/mkv/mov/ts, a portrait file with display-rotation metadata, a variable-frame-rate mp4, an audio-only
file), plus broken files (zero-byte, truncated, text named .mp4).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

GRID = 4                         # cells per side of the code square
BITS = GRID * GRID - 1           # 15 bits: frame numbers 0 .. 32767
MARKER_RGB = (255, 0, 0)         # top-left cell


def ffmpeg_exe() -> str:
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


# ----------------------------------------------------------------------------- drawing and reading

def draw_frame(index: int, *, width: int = 96, height: int = 64) -> np.ndarray:
    """An (height, width, 3) uint8 RGB frame with `index` coded in its central square."""
    assert 0 <= index < 2 ** BITS, index
    frame = np.empty((height, width, 3), np.uint8)
    # a soft background gradient that moves with the index, so codecs see some motion
    xs = (np.arange(width)[None, :] + 3 * index) % 256
    frame[...] = (np.clip(xs * 0.3 + 60, 0, 255).astype(np.uint8))[..., None]
    side = min(width, height)
    y0, x0 = (height - side) // 2, (width - side) // 2
    cell = side / GRID
    bits = [(index >> (BITS - 1 - k)) & 1 for k in range(BITS)]
    for k in range(GRID * GRID):
        r, c = divmod(k, GRID)
        ya, yb = y0 + round(r * cell), y0 + round((r + 1) * cell)
        xa, xb = x0 + round(c * cell), x0 + round((c + 1) * cell)
        frame[ya:yb, xa:xb] = MARKER_RGB if k == 0 else (255 if bits[k - 1] else 0)
    return frame


def _cell_means(frame: np.ndarray) -> np.ndarray:
    """(16, 3) mean RGB of the inner half of each code cell."""
    h, w = frame.shape[:2]
    side = min(w, h)
    y0, x0 = (h - side) // 2, (w - side) // 2
    cell = side / GRID
    means = []
    for k in range(GRID * GRID):
        r, c = divmod(k, GRID)
        ya, yb = y0 + int((r + 0.25) * cell), y0 + int(np.ceil((r + 0.75) * cell))
        xa, xb = x0 + int((c + 0.25) * cell), x0 + int(np.ceil((c + 0.75) * cell))
        means.append(frame[ya:yb, xa:xb].reshape(-1, 3).mean(axis=0))
    return np.asarray(means)


def frame_number(frame: np.ndarray) -> int:
    """The index drawn by `draw_frame`, read from an upright RGB frame (any size, e.g. resized/cropped)."""
    means = _cell_means(frame)
    red, green, blue = means[0]
    if not (red > 150 and blue < 100 and green < 100):
        raise ValueError(f"no red marker in the top-left cell (rgb={means[0].round()}): rotated or BGR frame")
    value = 0
    for grey in means[1:].mean(axis=1):
        value = (value << 1) | int(grey > 127)
    return value


def frames(count: int, *, width: int = 96, height: int = 64, start: int = 0) -> list[np.ndarray]:
    """`count` RGB frames numbered start, start+1, ..."""
    return [draw_frame(start + i, width=width, height=height) for i in range(count)]


# ----------------------------------------------------------------------------- OpenCV writers

def write_opencv(path: str | Path, *, count: int, fourcc: str = "mp4v", fps: float = 25.0,
                 width: int = 96, height: int = 64) -> Path:
    """A video written by cv2.VideoWriter: fourcc "mp4v" (use .mp4) or "MJPG" (use .avi)."""
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    try:
        assert writer.isOpened(), f"VideoWriter cannot write {path} with {fourcc}"
        for frame in frames(count, width=width, height=height):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


# ----------------------------------------------------------------------------- ffmpeg CLI writers

def _ffmpeg(args: list[str], *, stdin: bytes | None = None) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{proc.stderr.decode(errors='replace')}")


def _raw_input(width: int, height: int, fps: float) -> list[str]:
    return ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]


def write_ffmpeg(path: str | Path, *, count: int, codec: str = "libx264", gop: int = 250,
                 fps: float = 25.0, width: int = 96, height: int = 64, bframes: int | None = None,
                 extra: tuple[str, ...] = (), pictures: list[np.ndarray] | None = None) -> Path:
    """Encode numbered frames with the ffmpeg CLI; the container follows the suffix (.mp4 .mkv .mov .ts .avi).

    `gop` is the keyframe interval (1 = all-intra). `pictures` overrides the drawn frames (RGB arrays).
    """
    path = Path(path)
    pictures = pictures if pictures is not None else frames(count, width=width, height=height)
    h, w = pictures[0].shape[:2]
    args = [*_raw_input(w, h, fps), "-c:v", codec, "-g", str(gop)]
    if codec == "libx264":
        args += ["-pix_fmt", "yuv420p", "-preset", "veryfast", "-crf", "18",
                 "-x264-params", f"keyint={gop}:min-keyint={gop}:scenecut=0"]
        if bframes is not None:
            args += ["-bf", str(bframes)]
    elif codec == "mjpeg":
        args += ["-pix_fmt", "yuvj420p", "-q:v", "3"]
    args += [*extra, str(path)]
    _ffmpeg(args, stdin=np.ascontiguousarray(np.stack(pictures)).tobytes())
    return path


def write_h264(path: str | Path, *, count: int, gop: int = 250, **kw) -> Path:
    """H.264 (libx264, with B-frames) in the container named by the suffix."""
    return write_ffmpeg(path, count=count, codec="libx264", gop=gop, **kw)


def write_faststart_mp4(path: str | Path, *, count: int, gop: int = 12, **kw) -> Path:
    """H.264 mp4 with the index (moov) at the front, so a cut file still decodes its first frames."""
    return write_ffmpeg(path, count=count, gop=gop, extra=("-movflags", "+faststart"), **kw)


def write_rotated(path: str | Path, *, count: int, rotation: int = 90, width: int = 64,
                  height: int = 96, gop: int = 12) -> Path:
    """A portrait video: frames upright at (height, width) when displayed, stored rotated with
    display-rotation metadata (`rotation` degrees counter-clockwise, ffmpeg's -display_rotation)."""
    path = Path(path)
    upright = frames(count, width=width, height=height)
    # the player rotates the stored picture by `rotation` CCW; store it rotated the other way
    k = (rotation // 90) % 4
    stored = [np.ascontiguousarray(np.rot90(f, k=-k)) for f in upright]
    plain = path.with_name(path.stem + ".plain" + path.suffix)
    write_h264(plain, count=count, gop=gop, pictures=stored)
    try:
        _ffmpeg(["-display_rotation:v:0", str(rotation), "-i", str(plain), "-c", "copy", str(path)])
    finally:
        plain.unlink(missing_ok=True)
    return path


def vfr_timestamps(count: int, *, fps: float = 25.0) -> np.ndarray:
    """Presentation times (s) used by `write_vfr`: gaps grow from 1/fps to 3/fps and back."""
    gaps = 1.0 + (np.arange(count) % 8 >= 4) * 2.0   # 4 frames at 1x spacing, 4 at 3x, ...
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])]) / fps


def write_vfr(path: str | Path, *, count: int, fps: float = 25.0, width: int = 96,
              height: int = 64, gop: int = 12) -> Path:
    """A variable-frame-rate H.264 mp4: every frame kept, with irregular timestamps (`vfr_timestamps`)."""
    # frame N gets PTS = N + 2 * (number of "slow" frames before N), in units of 1/fps
    expr = "(N+2*(floor(N/8)*4+max(0,mod(N,8)-4)))/(FR*TB)"
    return write_ffmpeg(path, count=count, gop=gop, fps=fps, width=width, height=height,
                        extra=("-vf", f"setpts='{expr}'", "-fps_mode", "passthrough"))


def write_audio_only(path: str | Path, *, seconds: float = 1.0) -> Path:
    """An mp4 (m4a) with one AAC audio stream and no video stream."""
    path = Path(path)
    _ffmpeg(["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", str(path)])
    return path


# ----------------------------------------------------------------------------- broken files

def write_empty(path: str | Path) -> Path:
    """A zero-byte file."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_text(path: str | Path) -> Path:
    """A text file with a video suffix."""
    path = Path(path)
    path.write_text("this is not a video\n" * 20)
    return path


def write_noise(path: str | Path, *, size: int = 4096, seed: int = 0) -> Path:
    """Random bytes with a video suffix (no recognisable container)."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def truncate(src: str | Path, dest: str | Path, *, fraction: float = 0.5) -> Path:
    """Copy the first `fraction` of the bytes of `src` to `dest` (a download cut short)."""
    data = Path(src).read_bytes()
    dest = Path(dest)
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


# ----------------------------------------------------------------------------- reading back (reference)

def ffmpeg_decode(path: str | Path, *, width: int, height: int) -> np.ndarray:
    """Every frame as ffmpeg's CLI decodes it (autorotated, all frames, no rate conversion):
    (N, height, width, 3) uint8 RGB. An independent reference for OpenCV's decode."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path),
           "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)
