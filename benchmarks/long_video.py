"""A long video classified segment by segment: `videoseq classify --window W --stride S` against
ffmpeg's own decode of the same file, and the peak memory of both.

    .venv/bin/python benchmarks/long_video.py [--minutes 60] [--fps 25] [--size 1280x720]
                                              [--window 4] [--stride 2] [--json]

The video is made once (ffmpeg's testsrc2 pattern with moving noise, H.264) under
`<cache>/long-video/` and reused. The model is the demo's (frozen EfficientNet-Lite0 at 112 px + the
motion stream + an lstm head, untrained: its cost is what is measured). Both commands run as
subprocesses, the baseline first, each timed by wall clock; peak memory is the child's max RSS. The
segment pass's memory must not grow with the length (compare `--minutes 1` with `--minutes 60`); its
time is set against the decode alone (`ratio`). The figures go to
docs/benchmarks/long-video-figures.md (and stdout; `--json`: one JSON object).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "benchmarks" / "long-video-figures.md"


def make_video(dest: Path, *, minutes: float, fps: float, size: str) -> Path:
    """An H.264 video of `minutes` at `size`, made once with ffmpeg's test pattern (reused)."""
    from videoseq.synthetic.render import ffmpeg_exe

    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial.mp4")
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi",
           "-i", f"testsrc2=size={size}:rate={fps:g},noise=alls=12:allf=t",
           "-t", f"{minutes * 60:g}", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "28",
           "-g", str(int(fps * 10)), "-pix_fmt", "yuv420p", str(tmp)]
    subprocess.run(cmd, check=True)
    os.replace(tmp, dest)
    return dest


def make_bundle(dest: Path) -> Path:
    """The demo model (configs/demo.yaml: frozen Lite0 at 112 px, motion stream) with an lstm head."""
    import torch

    from videoseq.config import load_config
    from videoseq.configs import config_file
    from videoseq.models.bundle import save_bundle
    from videoseq.models.classifier import build_model

    config = load_config(config_file("demo.yaml"), overrides=["sampling.frames=16"])
    torch.manual_seed(0)
    model = build_model(config.model, "lstm", 2).eval()
    return save_bundle(dest, model=model, head="lstm", config=config, classes=["a", "b"], metrics={})


def timed(cmd: list[str], *, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of a command run to completion (its output discarded)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ...: exit {proc.returncode}: {err.decode()[-500:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)   # the only child of this (helper) process
    return seconds, usage.ru_maxrss / 1024


def peak_of(cmd: list[str], *, env: dict[str, str] | None = None) -> tuple[float, float]:
    """`timed` in a fresh, small helper process: a child forked from this process (torch loaded)
    would start its max RSS at this process's size, so the figure would not be the command's alone."""
    code = ("import json,sys;sys.path.insert(0,%r);from benchmarks.long_video import timed;"
            "print(json.dumps(timed(json.loads(sys.argv[1]))))" % str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cmd)], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-800:])
    seconds, mib = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, mib


def main(argv: list[str] | None = None) -> int:
    """Make the video and the model, time ffmpeg's decode and the segment pass, write the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--size", default="1280x720")
    p.add_argument("--window", type=float, default=4.0)
    p.add_argument("--stride", type=float, default=2.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-write", action="store_true", help="print only; leave the figures file as it is")
    args = p.parse_args(argv)

    from videoseq.data.plan import default_cache_dir
    from videoseq.config import RuntimeConfig
    from videoseq.synthetic.render import ffmpeg_exe

    work = default_cache_dir(RuntimeConfig()) / "long-video"
    video = make_video(work / f"testsrc2-{args.size}-{args.fps:g}fps-{args.minutes:g}min.mp4",
                       minutes=args.minutes, fps=args.fps, size=args.size)
    threads = os.environ.get("VIDEOSEQ_DECODE_THREADS", "2")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(Path(tmp) / "bundle")
        decode_s, decode_mib = peak_of([ffmpeg_exe(), "-v", "error", "-threads", threads, "-i", str(video),
                                        "-f", "null", "-"])
        ours_s, ours_mib = peak_of([sys.executable, "-m", "videoseq", "classify", str(video), "--model",
                                    str(bundle), "--window", f"{args.window:g}", "--stride", f"{args.stride:g}",
                                    "--json"])
    segments = int(max(0.0, args.minutes * 60 - args.window) // args.stride) + 1
    figures = {"video": f"{args.minutes:g} min, {args.size}, {args.fps:g} fps, H.264 ({video.stat().st_size >> 20} MiB)",
               "window_s": args.window, "stride_s": args.stride, "segments": segments,
               "decode_threads": int(threads), "ffmpeg_decode_s": round(decode_s, 1),
               "ffmpeg_peak_mib": round(decode_mib), "segments_s": round(ours_s, 1),
               "segments_peak_mib": round(ours_mib), "ratio": round(ours_s / decode_s, 2),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load": round(os.getloadavg()[0], 2),
               "date": time.strftime("%Y-%m-%d")}
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>18}: {value}")
    if not args.no_write:
        command = "python benchmarks/long_video.py " + " ".join(argv if argv is not None else sys.argv[1:])
        rows = "\n".join(f"| {k} | {v} |" for k, v in figures.items())
        FIGURES.write_text(f"# Long video, segment by segment: figures\n\nWritten by `{command.strip()}`"
                           f" (docs/benchmarks/classify.md explains them).\n\n| figure | value |\n|---|---|\n"
                           f"{rows}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
