"""Frame extraction speed: videoseq.read_frames against ffmpeg's own full decode, a naive OpenCV loop
and torchcodec. Generates its test files with the ffmpeg CLI (testsrc2) into a temporary directory.

    .venv/bin/python benchmarks/extract.py [--repeats 3] [--count 16] [--size 112] [--keep DIR]

Prints a markdown table. Times are the best of `repeats` runs (wall seconds) and, in brackets, the
CPU seconds of that run (all threads; child process for ffmpeg), which shared machines disturb less.
Targets: videoseq <= 1.1x ffmpeg's full decode on long GOP, <= 0.5x on GOP 30 and MJPEG, >= 2x
faster than the naive loop everywhere.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import imageio_ffmpeg
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from videoseq.io import decode, video  # noqa: E402

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

FILES = {  # name -> (ffmpeg encoding arguments, target ratio videoseq / ffmpeg full decode)
    "720p H.264 GOP 250, 20 s": (["-s", "1280x720", "-t", "20", "-c:v", "libx264", "-preset", "veryfast",
                                  "-g", "250", "-pix_fmt", "yuv420p", "gop250.mp4"], 1.1),
    "720p H.264 GOP 30, 60 s": (["-s", "1280x720", "-t", "60", "-c:v", "libx264", "-preset", "veryfast",
                                 "-g", "30", "-pix_fmt", "yuv420p", "gop30.mp4"], 0.5),
    "720p MJPEG AVI, 20 s": (["-s", "1280x720", "-t", "20", "-c:v", "mjpeg", "-q:v", "5",
                              "-pix_fmt", "yuvj420p", "mjpeg.avi"], 0.5),
    "320x240 H.264, 20 s": (["-s", "320x240", "-t", "20", "-c:v", "libx264", "-preset", "veryfast",
                             "-pix_fmt", "yuv420p", "small.mp4"], None),
}


def make_file(dest: Path, args: list[str]) -> Path:
    size, rest, name = args[1], args[2:-1], args[-1]
    path = dest / name
    if not path.exists():
        subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", f"testsrc2=size={size}:rate=25", *rest, str(path)], check=True)
    return path


def timed(fn: Callable[[], object], repeats: int, *, child: bool = False) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that run)."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        who = resource.RUSAGE_CHILDREN if child else resource.RUSAGE_SELF
        r0, t0 = resource.getrusage(who), time.perf_counter()
        fn()
        wall, r1 = time.perf_counter() - t0, resource.getrusage(who)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        best = min(best, (wall, cpu))
    return best


def ffmpeg_decode(path: Path) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-threads", "2", "-i", str(path),
                    "-f", "null", "-"], check=True)


def naive(path: Path, count: int, size: int) -> np.ndarray:
    """What one writes first: read() every frame, resize it, keep all, then sample."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            h, w = frame.shape[:2]
            scale = size / min(h, w)
            small = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
            y0, x0 = (small.shape[0] - size) // 2, (small.shape[1] - size) // 2
            frames.append(cv2.cvtColor(small[y0:y0 + size, x0:x0 + size], cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return np.stack(frames)[video.sample_indices(len(frames), count=count)]


def torchcodec_read(path: Path, count: int):
    from torchcodec.decoders import VideoDecoder
    dec = VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=2)
    n = dec.metadata.num_frames
    return dec.get_frames_at(video.sample_indices(n, count=count).tolist())   # (T, 3, H, W) uint8


def torchcodec_status(path: Path) -> str:
    """"ok", or why torchcodec cannot run here (its import and its FFmpeg libraries load lazily)."""
    try:
        torchcodec_read(path, 1)
    except Exception as exc:  # report why, do not fail the benchmark
        text = str(exc)
        missing = sorted({w.rstrip(":") for w in text.split() if w.startswith("libavutil.so")})
        if missing:
            return f"cannot load libtorchcodec: FFmpeg shared libraries missing ({', '.join(missing)})"
        return f"{type(exc).__name__}: {text.splitlines()[0][:120]}"
    return "ok"


def strategy(path: Path, count: int) -> str:
    index = decode.index_packets(path)
    wanted = video.sample_indices(index.count, count=count)
    if index.jpeg_packets:
        return f"JPEG packets ({len(np.unique(wanted)) + 1} of {index.count} decoded)"
    if index.seekable and decode.seek_cost(index, wanted) < decode.SEEK_WORTH * index.count:
        return f"seek ({decode.seek_cost(index, wanted)}/{index.count} frames decoded)"
    return f"grab all ({index.count} frames)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--keep", type=Path, help="generate/reuse the files here instead of a temp dir")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        dest = args.keep or Path(tmp)
        dest.mkdir(parents=True, exist_ok=True)
        tc_status = torchcodec_status(make_file(dest, FILES["320x240 H.264, 20 s"][0]))
        print(f"cv2 {cv2.__version__}, cv2.setNumThreads={cv2.getNumThreads()}, FFmpeg decode threads "
              f"{decode.DECODE_THREADS}, {os.cpu_count()} CPUs; torchcodec: {tc_status}\n")
        print("| file | frames | ffmpeg full decode s | naive OpenCV s | videoseq s | torchcodec s "
              "| videoseq/ffmpeg wall (cpu) | naive/videoseq wall (cpu) | strategy |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, (enc, target) in FILES.items():
            path = make_file(dest, enc)
            ff = timed(lambda: ffmpeg_decode(path), args.repeats, child=True)
            nv = timed(lambda: naive(path, args.count, args.size), args.repeats)
            vs = timed(lambda: video.read_frames(path, count=args.count, size=args.size), args.repeats)
            tc = timed(lambda: torchcodec_read(path, args.count), args.repeats) if tc_status == "ok" else None
            clip = video.read_frames(path, count=args.count, size=args.size)
            ratio, cpu_ratio = vs[0] / ff[0], vs[1] / ff[1]
            mark = "" if target is None else f" (target <= {target})"
            tc_cell = f"{tc[0]:.2f} ({tc[1]:.2f})" if tc else "n/a"
            print(f"| {label} | {clip.info.num_frames} | {ff[0]:.2f} ({ff[1]:.2f}) | {nv[0]:.2f} ({nv[1]:.2f}) "
                  f"| {vs[0]:.2f} ({vs[1]:.2f}) | {tc_cell} | {ratio:.2f} ({cpu_ratio:.2f}){mark} "
                  f"| {nv[0] / vs[0]:.1f}x ({nv[1] / vs[1]:.1f}x) | {strategy(path, args.count)} |", flush=True)
    print(f"\nload average during the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
