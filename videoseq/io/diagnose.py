"""Why a file does not open as a video, as a short reason; and the frame-size limit every open enforces.

    reason = diagnose(Path("clip.mp4"))   # "truncated or incomplete MP4/MOV (no moov index; ...)"

Only a file FFmpeg/OpenCV refuses is diagnosed, so this is off the fast path. Headers are read with
bounds: what a header claims (a box size, a frame size) never sets how much is read or allocated.
"""
from __future__ import annotations

import re
import string
import subprocess
from pathlib import Path

MAX_FRAME_PIXELS = 8192 * 8192  # pixels per frame (8K video is 7680x4320); a decoded frame costs 3 bytes
#                                 per pixel in BGR, so at most ~200 MB per capture
MOOV_READ_LIMIT = 64 << 20      # bytes of an MP4's moov box read to look for a video track
_Y4M_SIZE = re.compile(rb" W(\d{1,12}) H(\d{1,12})")


def pixel_limit_reason(width: int, height: int) -> str:
    """The one-line reason for a stream whose frames are larger than MAX_FRAME_PIXELS."""
    return (f"claims {width}x{height} pixels per frame, more than the limit of {MAX_FRAME_PIXELS} "
            f"(MAX_FRAME_PIXELS)")


def _mp4_boxes(path: Path) -> dict[bytes, tuple[int, int]]:
    """Top-level ISO-BMFF boxes of `path`: type -> (offset, size); stops at the first implausible box."""
    boxes: dict[bytes, tuple[int, int]] = {}
    total = path.stat().st_size
    with path.open("rb") as f:
        pos = 0
        while pos + 8 <= total:
            f.seek(pos)
            head = f.read(16)
            size, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if size == 1 and len(head) == 16:
                size = int.from_bytes(head[8:16], "big")
            elif size == 0:                       # box runs to the end of the file
                size = total - pos
            if size < 8 or not kind.isalnum():
                break
            boxes.setdefault(kind, (pos, size))
            pos += size
    return boxes


def diagnose(path: Path) -> str:
    """Why FFmpeg/OpenCV cannot open `path`, as a short reason."""
    with path.open("rb") as f:
        head = f.read(512)
    if head[4:8] == b"ftyp":
        boxes = _mp4_boxes(path)
        if b"moov" not in boxes:
            return "truncated or incomplete MP4/MOV (no moov index; the end of the file is missing)"
        offset, size = boxes[b"moov"]
        with path.open("rb") as f:
            f.seek(offset)
            moov = f.read(min(size, MOOV_READ_LIMIT))
        if b"vide" not in moov:                   # no track with a video handler
            return "no video stream"
        return "cannot open the MP4/MOV (corrupt index)"
    if head.startswith(b"YUV4MPEG2 ") and (size := _Y4M_SIZE.search(head.split(b"\n", 1)[0])):
        width, height = int(size.group(1)), int(size.group(2))
        if width * height > MAX_FRAME_PIXELS:    # FFmpeg refuses it before saying why
            return pixel_limit_reason(width, height)
    printable = set(string.printable.encode())
    if head and all(b in printable for b in head):
        return "not a video (a text file)"
    reason = _ffmpeg_diagnosis(path)
    return reason or "cannot open (not a video, or an unsupported format)"


def _ffmpeg_diagnosis(path: Path) -> str | None:
    try:
        import imageio_ffmpeg
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # the ffmpeg binary is optional: it only refines the message
        return None
    try:
        proc = subprocess.run([exe, "-hide_banner", "-i", str(path)], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None
    err = proc.stderr.decode(errors="replace")
    if "Invalid data found" in err:
        return "not a video (unrecognised format)"
    if "Stream #" in err and "Video:" not in err:
        return "no video stream"
    return None
