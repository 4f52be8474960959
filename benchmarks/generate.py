"""How fast `generate_dataset` writes videos: 1,000 clips of 32 frames at 96x96 (target < 60 s, 2 workers).

    .venv/bin/python benchmarks/generate.py [--task direction] [--videos 1000] [--workers 2] [--codecs mp4v,MJPG]

Prints one JSON line (task, videos, seconds, videos_per_second, bytes, cpu_seconds, load_average); figures go to docs/benchmarks/generate.md.
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

from videoseq.synthetic import generate_dataset, get_task  # noqa: E402


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool workers)."""
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
    args = p.parse_args(argv)
    classes = len(get_task(args.task).classes) or 3
    per_class = max(3, round(args.videos / classes))
    with tempfile.TemporaryDirectory(prefix="videoseq-bench-") as tmp:
        start = time.perf_counter()
        cpu0 = _cpu_seconds()
        dest = generate_dataset(Path(tmp) / "ds", task=args.task, videos_per_class=per_class,
                                frames=(args.frames, args.frames), size=(args.size, args.size),
                                codecs=args.codecs.split(","), workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu0
        files = [f for f in dest.rglob("*") if f.is_file() and f.suffix in (".mp4", ".avi", ".mkv", ".webm", ".mpg")]
        size = sum(f.stat().st_size for f in files)
    print(json.dumps({"task": args.task, "videos": len(files), "frames": args.frames, "size": args.size,
                      "workers": args.workers, "codecs": args.codecs, "seconds": round(seconds, 2),
                      "videos_per_second": round(len(files) / seconds, 1), "bytes": size,
                      "cpu_seconds": round(cpu, 2), "cpus": os.cpu_count(),
                      "load_average": round(os.getloadavg()[0], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
