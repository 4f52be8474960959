"""Limits that keep memory independent of what a hostile file claims: manifests (rows, line length),
video headers (frame counts, frame sizes), config files and the job timeout setting. Peak memory is
measured in a child process (VmHWM: the high-water mark of its own address space, which begins at its
exec; ru_maxrss would include the forked test process's)."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from media import write_opencv
from videoseq.config import JOB_TIMEOUT, MAX_CONFIG_BYTES, config_from_dict, load_config
from videoseq.data import layouts
from videoseq.data.dataset import scan_dataset
from videoseq.config import DataConfig
from videoseq.errors import ConfigError, DatasetError, VideoReadError
from videoseq.io import decode
from videoseq.io.diagnose import MAX_FRAME_PIXELS
from videoseq.io.video import probe, read_frames

REPO = Path(__file__).resolve().parents[1]


def run_child(code: str, *args: str, timeout: float = 300) -> dict:
    """Run `code` in a fresh Python (it fills the dict OUT); OUT as JSON, with the child's peak memory
    in MB as "rss_mb"."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc/self/status to read peak memory from")
    epilogue = ("\nimport json as _j, re as _re\n"
                "_hwm = _re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())\n"
                "OUT['rss_mb'] = int(_hwm.group(1)) / 1024\nprint(_j.dumps(OUT))\n")
    proc = subprocess.run([sys.executable, "-c", code + epilogue, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- manifests

_SCAN = """
import sys, time
from videoseq.config import DataConfig
from videoseq.data.dataset import scan_dataset
from videoseq.errors import DatasetError
OUT = {}
started = time.monotonic()
try:
    index = scan_dataset(sys.argv[1], DataConfig(), workers=2)
    OUT.update(entries=len(index.entries), ok=len(index.ok()),
               not_found=sum(e.status == "not found" for e in index.entries))
except DatasetError as e:
    OUT["error"] = str(e)
OUT["seconds"] = time.monotonic() - started
"""


def _real_videos(root: Path) -> list[str]:
    """Two classes x three splits x two tiny videos (distinct frame counts), as manifest rows."""
    rows = []
    (root / "real").mkdir(parents=True)
    for s, split in enumerate(("train", "val", "test")):
        for c, label in enumerate("ab"):
            for i in range(2):
                path = write_opencv(root / "real" / f"{split}_{label}{i}.mp4", count=4 + i + 2 * c + 4 * s,
                                    width=16, height=16)
                rows.append(f"real/{path.name},{label},{split}")
    return rows


def test_a_million_row_manifest_is_read_in_one_pass_in_bounded_memory(tmp_path):
    """10^6 rows naming missing files: each costs one failed lstat and is reported "not found" (none
    is probed); the real videos among them are indexed."""
    root = tmp_path / "ds"
    real = _real_videos(root)
    n = 1_000_000
    with open(root / "manifest.csv", "w") as f:
        f.write("path,label,split\n" + "\n".join(real) + "\n")
        f.writelines(f"gone/d{i % 997:03d}/clip_{i:07d}.mp4,{'ab'[i % 2]},{('train', 'val', 'test')[i % 3]}\n"
                     for i in range(n))
    out = run_child(_SCAN, str(root))
    assert "error" not in out, out
    assert (out["entries"], out["ok"], out["not_found"]) == (n + len(real), len(real), n)
    assert out["seconds"] < 120, out                 # ~20 s on a busy 2-core machine
    assert out["rss_mb"] < 1000, out                 # ~450 bytes per row; MAX_MANIFEST_ROWS bounds the rows


def test_a_100_mb_manifest_line_is_refused_after_reading_64_kib_of_it(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    with open(root / "manifest.csv", "w") as f:
        f.write("path,label\n")
        f.write("a" * (100 << 20) + ".mp4,x\n")
        f.write("b.mp4,y\n")
    out = run_child(_SCAN, str(root))
    assert out["error"] == (f"{root / 'manifest.csv'}:2: line longer than {layouts.MAX_MANIFEST_LINE} "
                            f"characters (MAX_MANIFEST_LINE); not a manifest of path,label[,split][,group] rows")
    assert out["rss_mb"] < 150, out                  # the 100 MB line is never held


def test_manifest_row_limit_names_the_line(tmp_path, monkeypatch):
    monkeypatch.setattr(layouts, "MAX_MANIFEST_ROWS", 3)
    (tmp_path / "manifest.csv").write_text("path,label\n" + "".join(f"v{i}.mp4,x\n\n" for i in range(5)))
    with pytest.raises(DatasetError, match=r"manifest.csv:8: more than 3 rows \(MAX_MANIFEST_ROWS\)$"):
        scan_dataset(tmp_path, DataConfig(), workers=0)


# ----------------------------------------------------------------------------- video headers

def _riff_chunks(data: bytes, start: int = 0, end: int | None = None):
    """(fourcc, data offset, size) of every chunk of a RIFF file, LIST contents included."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        kind, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if kind in (b"RIFF", b"LIST"):
            yield data[pos + 8:pos + 12], pos + 8, size
            yield from _riff_chunks(data, pos + 12, pos + 8 + size)
        else:
            yield kind, pos + 8, size
        pos += 8 + size + (size & 1)


def patch_avi(src: Path, dest: Path, *, frames: int | None = None, width: int | None = None,
              height: int | None = None, jpeg_size: tuple[int, int] | None = None) -> Path:
    """A copy of an MJPG AVI whose headers claim other figures: `frames` in avih.dwTotalFrames and
    strh.dwLength, `width`x`height` in avih and strf (BITMAPINFOHEADER); `jpeg_size` rewrites every
    frame's own JPEG SOF0 header (what the decoder would allocate for)."""
    data = bytearray(src.read_bytes())
    for kind, off, _ in list(_riff_chunks(bytes(data))):
        if kind == b"avih":
            if frames is not None:
                struct.pack_into("<I", data, off + 16, frames)
            if width is not None:
                struct.pack_into("<II", data, off + 32, width, height)
        elif kind == b"strh" and frames is not None:
            struct.pack_into("<I", data, off + 32, frames)
        elif kind == b"strf" and width is not None:
            struct.pack_into("<ii", data, off + 4, width, height)
    if jpeg_size is not None:
        i = 0
        while (i := data.find(b"\xff\xc0", i)) >= 0:           # SOF0: length, precision, height, width
            struct.pack_into(">HH", data, i + 5, jpeg_size[1], jpeg_size[0])
            i += 2
    dest.write_bytes(bytes(data))
    return dest


def patch_mp4_sample_count(src: Path, dest: Path, count: int) -> Path:
    """A copy of an MP4 whose stts box claims `count` samples (frames) in its first entry."""
    data = bytearray(src.read_bytes())

    def walk(start: int, end: int) -> None:
        pos = start
        while pos + 8 <= end:
            size, kind = struct.unpack_from(">I4s", data, pos)
            if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
                walk(pos + 8, pos + size)
            elif kind == b"stts":
                struct.pack_into(">I", data, pos + 16, count)    # version/flags, entries, then count
            pos += max(size, 8)

    walk(0, len(data))
    dest.write_bytes(bytes(data))
    return dest


def write_y4m(path: Path, width: int, height: int) -> Path:
    """A YUV4MPEG2 file whose header says `width`x`height`, with 1 KB of frame data."""
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode() + b"FRAME\n" + bytes(1000))
    return path


_READ_ALL = """
import json, sys
from videoseq.errors import VideoReadError
from videoseq.io.video import probe, read_frames
OUT = {}
for path in sys.argv[1:]:
    try:
        info = probe(path)
        clip = read_frames(path, count=4, size=16)
        OUT[path] = [info.num_frames, info.width, info.height, clip.info.num_frames, list(clip.frames.shape)]
    except VideoReadError as e:
        OUT[path] = str(e)
"""


def test_headers_that_claim_a_billion_frames_or_huge_frames_cost_no_memory(tmp_path):
    """Frame counts come from the packets actually there (a header's count is never used); a claimed
    frame size is refused before anything of that size is decoded (MAX_FRAME_PIXELS), or ignored
    where the frames themselves are small. Peak memory stays that of reading a tiny video."""
    avi = write_opencv(tmp_path / "base.avi", count=5, fourcc="MJPG", width=32, height=24)
    mp4 = write_opencv(tmp_path / "base.mp4", count=5, width=32, height=24)
    files = {
        "avi_frames": patch_avi(avi, tmp_path / "frames.avi", frames=10**9),
        "mp4_frames": patch_mp4_sample_count(mp4, tmp_path / "frames.mp4", 10**9),
        "avi_header_size": patch_avi(avi, tmp_path / "header.avi", width=100_000, height=100_000),
        "avi_jpeg_size": patch_avi(avi, tmp_path / "jpeg.avi", width=16_000, height=16_000,
                                   jpeg_size=(16_000, 16_000)),
        "avi_jpeg_only": patch_avi(avi, tmp_path / "jpeg_only.avi", jpeg_size=(16_000, 16_000)),
        "y4m_huge": write_y4m(tmp_path / "huge.y4m", 100_000, 100_000),
        "y4m_large": write_y4m(tmp_path / "large.y4m", 16_000, 16_000),
    }
    out = run_child(_READ_ALL, *map(str, files.values()))
    got = {name: out[str(path)] for name, path in files.items()}
    for name in ("avi_frames", "mp4_frames", "avi_header_size"):      # the claim is not what is read
        assert got[name] == [5, 32, 24, 5, [4, 16, 16, 3]], (name, got[name])
    # frames whose own JPEG headers claim 16000x16000 while the container says 32x24: the decoder
    # refuses the data, before touching frame-sized memory
    assert got["avi_jpeg_only"] == f"{files['avi_jpeg_only']}: cannot decode any frame (codec MJPG)"
    for name, (w, h) in {"avi_jpeg_size": (16_000, 16_000), "y4m_huge": (100_000, 100_000),
                         "y4m_large": (16_000, 16_000)}.items():
        assert got[name] == (f"{files[name]}: claims {w}x{h} pixels per frame, more than the limit of "
                             f"{MAX_FRAME_PIXELS} (MAX_FRAME_PIXELS)"), (name, got[name])
    assert out["rss_mb"] < 300, out                  # one 16000x16000 BGR frame alone would be 768 MB


def test_packet_count_limit(tmp_path, monkeypatch):
    path = write_opencv(tmp_path / "v.mp4", count=5, width=32, height=24)
    monkeypatch.setattr(decode, "MAX_VIDEO_FRAMES", 3)
    with pytest.raises(VideoReadError, match=r"v.mp4: more than 3 video packets \(MAX_VIDEO_FRAMES\)$"):
        probe(path)
    monkeypatch.setattr(decode, "MAX_VIDEO_FRAMES", 5)
    assert read_frames(path, count=2, size=8).info.num_frames == 5


# ----------------------------------------------------------------------------- configuration

def test_job_timeout_setting_and_config_file_size_limit(tmp_path):
    assert config_from_dict({}).runtime.timeout == JOB_TIMEOUT == 600
    assert config_from_dict({"runtime": {"job_timeout": 0}}).runtime.timeout is None
    assert config_from_dict({"runtime": {"job_timeout": None}}).runtime.timeout is None
    assert config_from_dict({"runtime": {"job_timeout": 2.5}}).runtime.timeout == 2.5
    with pytest.raises(ConfigError, match=r"runtime.job_timeout: expected seconds >= 0"):
        config_from_dict({"runtime": {"job_timeout": -1}})
    with pytest.raises(ConfigError, match="runtime.job_timeout: expected a number"):
        load_config(overrides=["runtime.job_timeout=soon"])
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"more than the limit of {MAX_CONFIG_BYTES} \(MAX_CONFIG_BYTES\)"):
        load_config(big)
    assert time.monotonic() - started < 5
