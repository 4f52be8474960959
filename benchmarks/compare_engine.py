"""`videoseq compare` on a 300-video real task, frame encoder in eager PyTorch vs ONNX Runtime, each from
empty caches; writes docs/benchmarks/compare-engine-figures.md.

    .venv/bin/python benchmarks/compare_engine.py [--task real_pan] [--videos-per-class 150] [--json]

The dataset (`videoseq generate --task TASK --videos-per-class N`, seed 0) is generated once under
`--data` and reused. Then `videoseq compare DATA --out RUN --config configs/default.yaml` runs in a
child process twice, `--set runtime.engine=torch` and `--set runtime.engine=onnx`, each with a cache
folder and fingerprint store of its own, created empty: its wall time includes the imports, the
scan, decoding, the frozen features (encoder + temporal streams), training and the report. The two
runs alternate in order over `--rounds` rounds (load from other processes hits both alike); the
least wall time of each engine counts. Printed: each run's wall time, the ratio torch / onnx, and
each run's test accuracies (the engines' features differ by less than 1e-4, so the heads may differ
by a test video at most).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIGURES = ROOT / "docs" / "benchmarks" / "compare-engine-figures.md"
ENGINES = ("torch", "onnx")


def one_compare(data: Path, work: Path, engine: str) -> dict:
    """One `videoseq compare` in a child process from empty caches: wall seconds and accuracies."""
    cache, run = work / f"cache-{engine}", work / f"run-{engine}"
    env = dict(os.environ, VIDEOSEQ_CACHE=str(cache), VIDEOSEQ_FINGERPRINTS=str(cache / "fingerprints"))
    cmd = [sys.executable, "-m", "videoseq", "compare", str(data), "--out", str(run), "--config",
           str(ROOT / "configs" / "default.yaml"), "--set", f"runtime.engine={engine}",
           "--set", f"runtime.cache_dir={cache}", "--quiet", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"compare with engine {engine} failed (exit {proc.returncode})")
    metrics = json.loads(proc.stdout)
    return {"engine": engine, "seconds": seconds,
            "accuracy": {h: m["accuracy"] for h, m in metrics["models"].items()},
            "test_videos": metrics["dataset"]["counts"]["test"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="real_pan")
    ap.add_argument("--videos-per-class", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=1, help="runs per engine, alternating (default 1)")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "videoseq-compare-engine")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--no-write", action="store_true", help="do not write the figures file")
    ap.add_argument("--out", type=Path, default=FIGURES)
    args = ap.parse_args()
    from videoseq.models.engines import onnx_engine_available
    from videoseq.synthetic.generate import generate_dataset

    if not onnx_engine_available():
        print("ONNX Runtime is not installed (pip install 'videoseq[onnx]'): nothing to compare", file=sys.stderr)
        return 2
    data = generate_dataset(args.data / f"{args.task}-{args.videos_per_class}", task=args.task,
                            videos_per_class=args.videos_per_class, seed=0, progress=False)
    load_start = os.getloadavg()[0]
    runs: list[dict] = []
    for k in range(args.rounds):
        for engine in (ENGINES if k % 2 == 0 else ENGINES[::-1]):
            with tempfile.TemporaryDirectory(prefix="videoseq-compare-engine-") as tmp:
                run = one_compare(data, Path(tmp), engine)
            runs.append(run)
            print(f"round {k + 1}: {engine:5s} {run['seconds']:.1f} s, accuracy {run['accuracy']}", flush=True)
    best = {e: min(r["seconds"] for r in runs if r["engine"] == e) for e in ENGINES}
    result = {"task": args.task, "videos_per_class": args.videos_per_class,
              "runs": runs, "best_seconds": best, "ratio": best["torch"] / best["onnx"],
              "load_start": load_start, "load_end": os.getloadavg()[0],
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    print(f"compare wall time: torch {best['torch']:.1f} s, onnx {best['onnx']:.1f} s: "
          f"{result['ratio']:.2f}x faster with ONNX Runtime")
    if args.json:
        print(json.dumps(result, indent=2))
    if not args.no_write:
        write_figures(args, result)
    return 0


def write_figures(args, result: dict) -> None:
    """The figures, the command and the machine, atomically (what they mean: docs/benchmarks/scale.md)."""
    from videoseq.io.atomic import atomic_write_text

    rows = "\n".join(f"| {r['engine']} | {r['seconds']:.1f} | "
                     + ", ".join(f"{h} {100 * a:.1f}%" for h, a in r["accuracy"].items()) + " |"
                     for r in result["runs"])
    text = f"""# compare wall time by frame engine (written by benchmarks/compare_engine.py)

- command: `{shlex.join(['.venv/bin/python', 'benchmarks/compare_engine.py', *sys.argv[1:]])}`
- date: {result['date']}; machine: {platform.machine()}, {os.cpu_count()} CPUs, Python \
{platform.python_version()}; load average {result['load_start']:.1f} at the start, {result['load_end']:.1f} at the end
- task `{result['task']}`, {args.videos_per_class} videos per class, configs/default.yaml, empty caches per run

| engine | wall s | test accuracy |
|---|---|---|
{rows}

Least wall time: torch {result['best_seconds']['torch']:.1f} s, onnx {result['best_seconds']['onnx']:.1f} s; \
torch / onnx = **{result['ratio']:.2f}x**.
"""
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    sys.exit(main())
