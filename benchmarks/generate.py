"""How fast `generate_dataset` writes videos: 1,000 clips of 32 frames at 96x96 (target < 60 s, 2 workers).

    .venv/bin/python benchmarks/generate.py [--task direction] [--videos 1000] [--workers 2] [--codecs mp4v,MJPG]

Prints one JSON line: wall seconds for the pooled run, CPU ms per video (from an in-process run of
--serial videos), the wall time that CPU cost projects to on an idle machine, and the load average.
The figures are recorded in docs/benchmarks/generate.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from videoseq.synthetic.generate import generate_dataset, get_task  # noqa: E402


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (ffmpeg encoders)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="direction")
    p.add_argument("--videos", type=int, default=1000, help="total videos (rounded to whole classes)")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--codecs", default="mp4v,MJPG")
    p.add_argument("--serial", type=int, default=100, help="videos rendered in-process to measure CPU per video")
    args = p.parse_args(argv)
    classes = len(get_task(args.task).classes) or 3
    per_class = max(3, round(args.videos / classes))
    with tempfile.TemporaryDirectory(prefix="videoseq-bench-") as tmp:
        start = time.perf_counter()
        dest = generate_dataset(Path(tmp) / "ds", task=args.task, videos_per_class=per_class,
                                frames=(args.frames, args.frames), size=(args.size, args.size),
                                codecs=args.codecs.split(","), workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        files = [f for f in dest.rglob("*") if f.is_file() and f.suffix in (".mp4", ".avi", ".mkv", ".webm", ".mpg")]
        size = sum(f.stat().st_size for f in files)
        # CPU cost per video, measured in this process (workers=0), is what a busy machine cannot distort
        serial = max(3, round(args.serial / classes))
        cpu0 = _cpu_seconds()
        generate_dataset(Path(tmp) / "serial", task=args.task, videos_per_class=serial,
                         frames=(args.frames, args.frames), size=(args.size, args.size),
                         codecs=args.codecs.split(","), workers=0, progress=False)
        cpu_per_video = (_cpu_seconds() - cpu0) / (serial * classes)
    print(json.dumps({"task": args.task, "videos": len(files), "frames": args.frames, "size": args.size,
                      "workers": args.workers, "codecs": args.codecs, "seconds": round(seconds, 2),
                      "videos_per_second": round(len(files) / seconds, 1), "bytes": size,
                      "cpu_ms_per_video": round(1000 * cpu_per_video, 1),
                      "projected_idle_seconds": round(len(files) * cpu_per_video / args.workers, 1),
                      "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
