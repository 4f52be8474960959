"""OpenCV decoding underneath video.py: opening, a packet index, sequential and seeking readers.

Frame numbers are positions in a full sequential decode (presentation order). Two readers fetch
the frames at a set of such numbers:

- `read_sequential`: `grab()` every frame (decode only), `retrieve()` (colour conversion) the kept ones.
  Always exact; the cost of a full decode.
- `read_seeking`: jump close to each kept frame with `CAP_PROP_POS_FRAMES` and decode forward. OpenCV
  seeks by timestamp, so this is exact only on constant-frame-rate files; every frame it returns is
  checked against the timestamp that frame must carry (from the packet index), and any mismatch makes
  it give up (the caller falls back to the sequential reader).

- `read_jpeg_packets`: for MJPEG in AVI (every frame a JPEG, no rotation metadata possible), read the
  packets without decoding and decode only the kept ones, each as a one-frame JPEG stream through the
  same FFmpeg decoder and colour conversion (pixel-identical to the sequential decode, tested).

`index_packets` reads the container's packets without decoding them (OpenCV raw mode, milliseconds
even for long files): the packet count, keyframe positions and presentation timestamps. It decides
whether seeking can be exact and cheaper, and gives the provisional frame count that the decode then
confirms.
"""
from __future__ import annotations

import bisect
import contextlib
import io
import logging
import os
import threading
from array import array
from pathlib import Path
from typing import Callable, NamedTuple

import cv2
import numpy as np

from videoseq.errors import VideoReadError
from videoseq.io.diagnose import MAX_FRAME_PIXELS, diagnose, pixel_limit_reason

logger = logging.getLogger(__name__)

# Per-frame work here (pyrDown/resize/cvtColor on one frame) is too small for OpenCV's thread pool;
# parallelism comes from FFmpeg's decoder threads and from extraction worker processes.
cv2.setNumThreads(1)
DECODE_THREADS = int(os.environ.get("VIDEOSEQ_DECODE_THREADS", "2"))  # FFmpeg threads per capture
_per_thread = threading.local()  # set_capture_threads: this thread's own choice


def set_capture_threads(threads: int | None) -> None:
    """FFmpeg decoder threads for the captures that the calling thread opens from now on; None: back
    to DECODE_THREADS. For pools of decode workers, where the parallelism comes from the workers and
    2 FFmpeg threads per capture would oversubscribe the cores (e.g. as a ThreadPoolExecutor initializer)."""
    if threads is not None and threads < 1:
        raise ValueError(f"set_capture_threads: need at least 1 thread, got {threads}")
    _per_thread.threads = threads


def capture_threads() -> int:
    """FFmpeg decoder threads a capture opened by the calling thread gets."""
    return getattr(_per_thread, "threads", None) or DECODE_THREADS

MAX_VIDEO_FRAMES = 10_000_000  # packets of one video stream (~4.6 days at 25 fps); the packet index
#                               holds 9 bytes per packet, so at most ~90 MB
SEEK_COST_FRAMES = 3        # one seek (demuxer seek + decoder flush) costs about this many decoded frames
SEEK_WORTH = 0.75           # seek only when it decodes under this fraction of a full pass
OPENCV_SEEK_BACKOFF = 16    # OpenCV seeks to the keyframe before frame k-16, then decodes forward


class PacketIndex(NamedTuple):
    """What the container's packets say about a video stream, read without decoding."""
    count: int                   # video packets = frames a complete decode should give
    keyframes: np.ndarray        # (K,) sorted frame numbers (presentation order) of keyframes
    pts_ms: np.ndarray           # (count,) presentation times in ms, sorted: frame i has pts_ms[i]
    codec: str                   # FourCC as text, e.g. "h264", "MJPG"
    fps: float                   # container frame rate (average on variable-rate files)
    seekable: bool               # constant frame rate and not MPEG-TS: OpenCV's seek can be exact
    jpeg_packets: bool           # MJPEG in AVI, packets in presentation order: read_jpeg_packets applies


# ----------------------------------------------------------------------------- opening and diagnosis

@contextlib.contextmanager
def decoder_errors(path: str | Path):
    """Turn OpenCV/OS errors met while decoding `path` into a one-line VideoReadError."""
    try:
        yield
    except cv2.error as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise VideoReadError(path, f"decoder error: {lines[-1].strip() if lines else 'cv2.error'}") from None
    except OSError as e:
        raise VideoReadError(path, f"cannot read ({e.strerror or e})") from None


def check_file(path: str | Path) -> Path:
    """`path` as a Path if it is a readable regular file; VideoReadError naming the reason otherwise."""
    path = Path(path)
    if not path.exists():
        raise VideoReadError(path, "no such file")
    if not path.is_file():
        raise VideoReadError(path, "not a file")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "empty file (0 bytes)")
    return path


def open_capture(path: str | Path, *, raw: bool = False) -> cv2.VideoCapture:
    """An opened FFmpeg capture (raw = packets, not decoded). Raises VideoReadError with a diagnosis,
    or when the stream claims frames of more than MAX_FRAME_PIXELS pixels (before any is decoded)."""
    path = check_file(path)
    params = [cv2.CAP_PROP_FORMAT, -1] if raw else [cv2.CAP_PROP_N_THREADS, capture_threads()]
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise VideoReadError(path, diagnose(path))
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width * height > MAX_FRAME_PIXELS:
        cap.release()
        raise VideoReadError(path, pixel_limit_reason(width, height))
    return cap


def fourcc_text(cap: cv2.VideoCapture) -> str:
    """The capture's codec FourCC as text ("h264", "MJPG"), or its hex code when not printable."""
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    text = code.to_bytes(4, "little").decode("latin-1").strip("\x00 ")
    return text if text.isprintable() and text else f"0x{code:08x}"


JPEG_CODECS = {"MJPG", "mjpg", "jpeg", "JPEG", "AVRn", "dmb1"}


def is_avi(path: Path) -> bool:
    """True when the file starts with a RIFF/AVI header."""
    with path.open("rb") as f:
        head = f.read(12)
    return head[:4] == b"RIFF" and head[8:12] == b"AVI "


def is_mpeg_ts(path: Path) -> bool:
    """MPEG transport stream (188-byte packets) or M2TS (192): OpenCV's frame seeking is not exact there."""
    with path.open("rb") as f:
        head = f.read(4 * 192 + 8)
    return any(len(head) > off + 3 * step and all(head[off + i * step] == 0x47 for i in range(4))
               for step, off in ((188, 0), (192, 4)))


# ----------------------------------------------------------------------------- packet index

def index_packets(path: str | Path) -> PacketIndex:
    """Read every video packet without decoding: count, keyframes, timestamps, seekability. More than
    MAX_VIDEO_FRAMES packets is a VideoReadError (memory grows with the packets actually there, never
    with a count the header claims)."""
    path = check_file(path)
    cap = open_capture(path, raw=True)
    try:
        codec, fps = fourcc_text(cap), float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        pts, keys = array("d"), bytearray()
        while cap.grab():
            if len(pts) >= MAX_VIDEO_FRAMES:
                raise VideoReadError(path, f"more than {MAX_VIDEO_FRAMES} video packets (MAX_VIDEO_FRAMES)")
            pts.append(cap.get(cv2.CAP_PROP_POS_MSEC))
            keys.append(bool(cap.get(cv2.CAP_PROP_LRF_HAS_KEY_FRAME)))
    finally:
        cap.release()
    pts_arr = np.frombuffer(pts, np.float64) if pts else np.zeros(0, np.float64)
    order = np.argsort(pts_arr, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    keyframes = np.sort(rank[np.frombuffer(keys, np.uint8).astype(bool)]) if pts else np.zeros(0, np.int64)
    sorted_pts = pts_arr[order]
    in_order = bool(np.all(np.diff(pts_arr) > 0))
    jpeg = codec in JPEG_CODECS and all(keys) and in_order and is_avi(path)
    return PacketIndex(len(pts), keyframes, sorted_pts, codec, fps,
                       _constant_rate(sorted_pts, fps) and not is_mpeg_ts(path), jpeg)


def _constant_rate(pts_ms: np.ndarray, fps: float) -> bool:
    """Timestamps exactly (within 0.5 ms) on the 1/fps grid from the first: seeking by time is exact."""
    if len(pts_ms) < 2 or not fps > 0:
        return False
    step = 1000.0 / fps
    return bool(np.all(np.abs(pts_ms - pts_ms[0] - np.arange(len(pts_ms)) * step) < 0.5))


def seek_cost(index: PacketIndex, targets: np.ndarray) -> int:
    """Frames decoded (plus seek overheads) to fetch sorted `targets` and the last frame by seeking."""
    keys = index.keyframes.tolist()
    pos, cost = -1, 0
    for k in [*np.unique(targets).tolist(), index.count - 1]:
        start = keys[max(bisect.bisect_right(keys, max(k - OPENCV_SEEK_BACKOFF, 0)) - 1, 0)]
        if start > pos + SEEK_COST_FRAMES:
            cost += k - start + 1 + SEEK_COST_FRAMES
        else:
            cost += k - pos
        pos = k
    return cost


# ----------------------------------------------------------------------------- readers

Transform = Callable[[np.ndarray], np.ndarray]   # decoded BGR frame (H, W, 3) -> what to keep


class Decoded(NamedTuple):
    """The frames one decoding strategy kept, and what it learned about the stream on the way."""
    frames: dict[int, np.ndarray]   # frame number -> transform(frame)
    count: int                      # frames decoded (sequential: to the end unless stopped early)
    width: int                      # decoded frame size, rotation applied (0 when no frame was kept)
    height: int
    rotation: int                   # rotation metadata, degrees clockwise (OpenCV applies it)


def _keep(cap: cv2.VideoCapture, transform: Transform, shape: list[int]) -> np.ndarray | None:
    ok, frame = cap.retrieve()
    if not ok:
        return None
    shape[:] = frame.shape[:2]
    return transform(frame)


def _rotation(cap: cv2.VideoCapture) -> int:
    return int(cap.get(cv2.CAP_PROP_ORIENTATION_META)) % 360


def read_sequential(path: str | Path, wanted: set[int], transform: Transform, *,
                    stop_after: int | None = None) -> Decoded:
    """Decode from the start; keep transform(frame) for frame numbers in `wanted`.

    Decodes to the end unless `stop_after` is given. A decoder error mid-file ends the decode there
    (a truncated file keeps its decodable frames).
    """
    kept: dict[int, np.ndarray] = {}
    shape = [0, 0]
    cap = open_capture(path)
    n = 0
    try:
        while (stop_after is None or n <= stop_after) and cap.grab():
            if n in wanted:
                frame = _keep(cap, transform, shape)
                if frame is None:
                    break
                kept[n] = frame
            n += 1
        rotation = _rotation(cap)
    finally:
        cap.release()
    return Decoded(kept, n, shape[1], shape[0], rotation)


def read_seeking(path: str | Path, index: PacketIndex, targets: np.ndarray,
                 transform: Transform) -> Decoded | None:
    """Fetch the frames at `targets` by seeking; None when any frame is not verifiably the right one.

    Also decodes the last frame, so the frame count (index.count) is confirmed by decoding.
    """
    keys = index.keyframes.tolist()
    kept: dict[int, np.ndarray] = {}
    shape = [0, 0]
    want = set(np.unique(targets).tolist())
    cap = open_capture(path)
    pos = -1                                   # frame number of the last grabbed frame
    try:
        for k in sorted(want | {index.count - 1}):
            start = keys[max(bisect.bisect_right(keys, max(k - OPENCV_SEEK_BACKOFF, 0)) - 1, 0)]
            if start > pos + SEEK_COST_FRAMES:
                cap.set(cv2.CAP_PROP_POS_FRAMES, k)
                pos = k - 1
            while pos < k:
                if not cap.grab():
                    logger.debug("%s: seek read ended at frame %d of %d", path, pos + 1, index.count)
                    return None
                pos += 1
            if abs(cap.get(cv2.CAP_PROP_POS_MSEC) - index.pts_ms[k]) > 0.5:
                logger.debug("%s: seek landed off frame %d; falling back to sequential", path, k)
                return None
            if k in want:
                frame = _keep(cap, transform, shape)
                if frame is None:
                    return None
                kept[k] = frame
        if cap.grab():                          # more frames than packets: the index is not the truth
            return None
        rotation = _rotation(cap)
    finally:
        cap.release()
    return Decoded(kept, index.count, shape[1], shape[0], rotation)


def _decode_jpeg(packet: np.ndarray) -> np.ndarray | None:
    """One JPEG packet decoded by OpenCV's FFmpeg (jpeg_pipe demuxer, mjpeg decoder): BGR or None.

    A packet without its end-of-image marker (a cut file) is refused: a sequential decode paints the
    missing part from the previous frame, a standalone decode cannot.
    """
    data = packet.tobytes()
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None
    stream = io.BytesIO(data)   # must outlive the capture: OpenCV reads it lazily
    cap = cv2.VideoCapture(stream, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    try:
        ok, frame = cap.read() if cap.isOpened() else (False, None)
    finally:
        cap.release()
    return frame if ok else None


def read_jpeg_packets(path: str | Path, index: PacketIndex, targets: np.ndarray,
                      transform: Transform) -> Decoded | None:
    """Fetch the frames at `targets` of an MJPEG AVI by decoding only their packets; also decodes the
    last packet to confirm the count. None when a packet does not decode (the caller falls back)."""
    want = set(np.unique(targets).tolist())
    last = index.count - 1
    kept: dict[int, np.ndarray] = {}
    shape = [0, 0]
    cap = open_capture(path, raw=True)
    try:
        for k in range(index.count):
            if not cap.grab():
                return None
            if k in want or k == last:
                ok, packet = cap.retrieve()
                frame = _decode_jpeg(packet) if ok else None
                if frame is None:
                    logger.debug("%s: JPEG packet %d does not decode on its own", path, k)
                    return None
                if k in want:
                    shape[:] = frame.shape[:2]
                    kept[k] = transform(frame)
    finally:
        cap.release()
    return Decoded(kept, index.count, shape[1], shape[0], 0)
