"""Benchmark `videoseq classify` end to end; writes the figures to docs/benchmarks/classify-figures.md.

1. One long video: a 60 s 1280x720 H.264 file. The whole `videoseq classify` process (start-up, model
   load, decode, inference, output) against the floor any such tool pays: ffmpeg's full decode of the
   file plus a bare `python -c "import torch, cv2"`. Target: <= 1.3x.
2. Many short clips: 200 clips of 3 s in one `videoseq classify DIR` call against the sum of their
   extraction times (`read_frames` of each clip, one after another, in a warm process). Target: <= 1.2x.
   Peak memory of the call is recorded for 50 and 200 clips (it should not grow with the count).
3. With `--onnx`: the benchmark bundle exported (`infer.export.export_bundle`) and the same two
   inputs classified by ONNX Runtime (`classify --runtime onnx --model model.onnx`), each such call
   right after the PyTorch call on the same input: the ratio of the two, per pair and best of each.

    python benchmarks/classify.py [--encoder small_cnn efficientnet_lite0] [--repeats 3] [--work DIR] [--onnx]
    python benchmarks/classify.py --encoder small_cnn --clips-only --before /tmp/old-tree  # before/after

Each timing is the best of `--repeats` runs (the machine may be shared; the minimum is the least noisy).
The output file holds the measured figures, the command and the machine only; what they mean is
explained in docs/benchmarks/classify.md, which this script never writes.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLIPS = 200
CLIP_SECONDS = 3


def ffmpeg() -> str:
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def make_long_video(path: Path) -> Path:
    if not path.exists():
        subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=1280x720:rate=25:duration=60", "-c:v", "libx264", "-preset", "veryfast",
                        "-pix_fmt", "yuv420p", "-g", "250", str(path)], check=True)
    return path


def make_clips(folder: Path) -> list[Path]:
    """200 H.264 clips of 3 s at 320x240, cut from one synthetic stream in one ffmpeg call."""
    if len(list(folder.glob("*.mp4"))) != CLIPS:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size=320x240:rate=25:duration={CLIPS * CLIP_SECONDS}", "-c:v", "libx264",
                        "-preset", "veryfast", "-pix_fmt", "yuv420p",
                        "-force_key_frames", f"expr:gte(t,n_forced*{CLIP_SECONDS})",
                        "-f", "segment", "-segment_time", str(CLIP_SECONDS), "-reset_timestamps", "1",
                        str(folder / "clip%03d.mp4")], check=True)
    return sorted(folder.glob("*.mp4"))


def make_bundle(dest: Path, encoder: str) -> Path:
    import torch

    from videoseq.models.bundle import save_bundle
    from videoseq.config import config_from_dict
    from videoseq.models.classifier import build_model

    weights = None if encoder == "small_cnn" else "DEFAULT"
    cfg = config_from_dict({"model": {"encoder": encoder, "weights": weights}})
    torch.manual_seed(0)
    model = build_model(cfg.model, "lstm", 5)
    return save_bundle(dest, model=model, head="lstm", config=cfg,
                       classes=["a", "b", "c", "d", "e"], metrics={"val_accuracy": None})


def onnx_command(bundle: Path, dest: Path, workers: int) -> list[str]:
    """Export `bundle` to `dest` (ONNX, the whole model) and return the `classify --runtime onnx` call
    on it (inputs to be appended)."""
    from videoseq.infer.export import export_bundle

    export_bundle(bundle, dest)
    return [sys.executable, "-m", "videoseq", "classify", "--model", str(dest), "--runtime", "onnx",
            "--json", "--workers", str(workers)]


class Run(NamedTuple):
    wall: float      # seconds
    cpu: float       # user + sys seconds, all threads (and child processes of the command)
    rss: int         # peak RSS, KiB
    load: float      # 1-minute load average just before the run


def run_once(cmd: list[str], *, pythonpath: Path | None = None) -> Run:
    """One run of `cmd` in a child process: wall, CPU, peak RSS, and the load it met.
    `pythonpath`: import videoseq from that checkout instead (before/after comparisons)."""
    # a child subreaper: the decode workers (children of the call's fork server, which outlives the
    # call by a moment) are reaped here too, so their CPU counts; ru_maxrss is the largest process
    probe = ("import ctypes, os, resource, subprocess, sys, time; "
             "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); t = time.perf_counter(); "
             "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
             "exec('while True:\\n try: os.wait()\\n except ChildProcessError: break'); "
             "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
             "print(time.perf_counter() - t, u.ru_maxrss, rc, u.ru_utime + u.ru_stime)")
    load = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath else None
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True,
                         check=True, env=env, cwd=pythonpath).stdout.split()
    if int(out[2]) not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {out[2]}")
    return Run(float(out[0]), float(out[3]), int(out[1]), load)


def median_ratio(pairs: list[tuple[Run, Run]]) -> float:
    """The median over (extraction, classify) pairs of classify / extraction: each pair met the same load."""
    ratios = sorted(c.wall / e.wall for e, c in pairs)
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


def best(runs: list[Run]) -> Run:
    """The fastest run (the least disturbed on a shared machine), with the largest peak RSS seen."""
    fastest = min(runs, key=lambda r: r.wall)
    return fastest._replace(rss=max(r.rss for r in runs))


def timed(cmd: list[str], repeats: int) -> Run:
    return best([run_once(cmd) for _ in range(repeats)])


class Extraction:
    """The clip baseline: read_frames of each clip with the bundle's sampling, one after another, in
    this (warm) process, with the library's default decoder threads."""

    def __init__(self, clips: list[Path], bundle: Path):
        from videoseq.models.bundle import read_bundle_meta
        from videoseq.io.video import read_frames

        self.clips, self.read = clips, read_frames
        self.sampling = read_bundle_meta(bundle)["sampling"]
        read_frames(clips[0], count=self.sampling["frames"], size=self.sampling["size"])  # warm-up

    def run(self) -> Run:
        """Sum of the per-clip wall times; CPU time of this process over the loop."""
        load, total, cpu_start = os.getloadavg()[0], 0.0, time.process_time()
        for clip in self.clips:
            start = time.perf_counter()
            self.read(clip, count=self.sampling["frames"], size=self.sampling["size"],
                      short=self.sampling["short"])
            total += time.perf_counter() - start
        return Run(total, time.process_time() - cpu_start, 0, load)


def measure(encoder: str, work: Path, clips: list[Path], long_video: Path, repeats: int,
            workers: int, *, long_only: bool = False, clips_only: bool = False,
            before: Path | None = None, onnx: bool = False) -> dict:
    bundle = make_bundle(work / f"bundle-{encoder}", encoder)
    videoseq = [sys.executable, "-m", "videoseq", "classify", "--model", str(bundle), "--json",
                "--workers", str(workers), "--device", "cpu"]
    m = {"encoder": encoder, "workers": workers}
    onnx_call = onnx_command(bundle, work / f"model-{encoder}.onnx", workers) if onnx else None
    if not clips_only:  # 1. one long video (and 3. its ONNX Runtime call right after each PyTorch one)
        if onnx_call:
            runs = [(run_once([*videoseq, str(long_video)]), run_once([*onnx_call, str(long_video)]))
                    for _ in range(repeats)]
            m["classify"], m["onnx_long"] = best([t for t, _ in runs]), best([o for _, o in runs])
            m["onnx_long_pairs"] = runs
            print(f"[{encoder}] long video: onnx {m['onnx_long'].wall:.2f}s vs torch "
                  f"{m['classify'].wall:.2f}s -> {m['onnx_long'].wall / m['classify'].wall:.2f}x", flush=True)
        else:
            m["classify"] = timed([*videoseq, str(long_video)], repeats)
        m["decode"] = timed([ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", str(long_video),
                             "-f", "null", "-"], repeats)
        m["import"] = timed([sys.executable, "-c", "import torch, cv2"], repeats)
        floor = m["decode"].wall + m["import"].wall
        print(f"[{encoder}] long video: classify {m['classify'].wall:.2f}s vs ffmpeg decode "
              f"{m['decode'].wall:.2f}s + import {m['import'].wall:.2f}s = {floor:.2f}s -> "
              f"{m['classify'].wall / floor:.2f}x (load {m['classify'].load:.1f})", flush=True)
    if long_only:
        return m
    # 2. many short clips: the baseline and the call alternate, so both meet the same load
    extraction = Extraction(clips, bundle)
    pairs, onnx_pairs = [], []
    for _ in range(repeats):
        pairs.append((extraction.run(), run_once([*videoseq, str(clips[0].parent)])))
        if onnx_call:  # 3. the same clips through ONNX Runtime, right after the PyTorch call
            onnx_pairs.append((pairs[-1][1], run_once([*onnx_call, str(clips[0].parent)])))
            print(f"[{encoder}] {len(clips)} clips: onnx {onnx_pairs[-1][1].wall:.2f}s vs torch "
                  f"{pairs[-1][1].wall:.2f}s -> {onnx_pairs[-1][1].wall / pairs[-1][1].wall:.2f}x", flush=True)
        if before:  # the same call from the other checkout, right after: a before/after pair
            old = run_once([*videoseq, str(clips[0].parent)], pythonpath=before)
            print(f"[{encoder}] {len(clips)} clips: before {old.wall:.2f}s (CPU {old.cpu:.1f}, load "
                  f"{old.load:.1f}) -> {old.wall / pairs[-1][0].wall:.2f}x; after {pairs[-1][1].wall:.2f}s "
                  f"(CPU {pairs[-1][1].cpu:.1f}, load {pairs[-1][1].load:.1f}) -> "
                  f"{pairs[-1][1].wall / pairs[-1][0].wall:.2f}x", flush=True)
    m["extract"], m["many"] = best([e for e, _ in pairs]), best([c for _, c in pairs])
    m["pairs"] = pairs
    if onnx_pairs:
        m["onnx_many"], m["onnx_many_pairs"] = best([o for _, o in onnx_pairs]), onnx_pairs
    subset = work / "clips50"
    subset.mkdir(exist_ok=True)
    for clip in clips[:50]:
        if not (subset / clip.name).exists():
            (subset / clip.name).symlink_to(clip)
    m["few"] = timed([*videoseq, str(subset)], 1)
    for e, c in pairs:
        print(f"[{encoder}] {len(clips)} clips: classify {c.wall:.2f}s (CPU {c.cpu:.1f}, load {c.load:.1f}) "
              f"vs extraction sum {e.wall:.2f}s (CPU {e.cpu:.1f}, load {e.load:.1f}) -> "
              f"{c.wall / e.wall:.2f}x", flush=True)
    print(f"[{encoder}] median of the pairs {median_ratio(pairs):.2f}x, best of each "
          f"{m['many'].wall / m['extract'].wall:.2f}x; peak RSS 50 clips "
          f"{m['few'].rss / 1024:.0f} MiB, {len(clips)} clips {m['many'].rss / 1024:.0f} MiB", flush=True)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", nargs="+", default=["small_cnn", "efficientnet_lite0"],
                    help="encoders of the benchmark bundles (one section each)")
    ap.add_argument("--long-only", nargs="*", default=[], metavar="ENCODER",
                    help="encoders measured on the long video only (e.g. a heavy one on a small CPU)")
    ap.add_argument("--clips-only", action="store_true",
                    help="measure the 200 clips only and print the figures (nothing is written)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="classify --workers (decode threads)")
    ap.add_argument("--before", type=Path, metavar="CHECKOUT",
                    help="also time each classify call with videoseq imported from this checkout, "
                         "right after the current one (printed, not written)")
    ap.add_argument("--onnx", action="store_true",
                    help="also export each bundle to ONNX and time `classify --runtime onnx` on the same "
                         "inputs, right after each PyTorch call")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "videoseq-bench-classify")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "classify-figures.md",
                    help="figures file to (over)write (default: docs/benchmarks/classify-figures.md)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VIDEOSEQ_CACHE", str(args.work / "cache"))

    long_video = make_long_video(args.work / "long_720p_60s.mp4")
    clips = make_clips(args.work / "clips")
    results = [measure(e, args.work, clips, long_video, args.repeats, args.workers,
                       long_only=e in args.long_only, clips_only=args.clips_only, before=args.before,
                       onnx=args.onnx)
               for e in args.encoder]
    if not args.clips_only:
        write_figures(args.out, results, repeats=args.repeats, clips=len(clips))


def command_line() -> str:
    """How this run was started, as a command to paste from the repository root."""
    python = Path(sys.executable)
    try:
        python_text = str(python.relative_to(REPO))
    except ValueError:
        python_text = "python"
    script = Path(__file__).resolve().relative_to(REPO)
    return shlex.join([python_text, str(script), *sys.argv[1:]])


def priority() -> str:
    """This process's scheduling weight against the machine's other processes (Linux autogroup)."""
    try:
        nice = Path("/proc/self/autogroup").read_text().split("nice")[-1].strip()
    except OSError:
        return "scheduling priority unknown"
    if nice == "0":
        return "autogroup nice 0 (normal priority: other processes share the cores)"
    return f"autogroup nice {nice} (the call and the baseline both ran at it)"


def write_figures(out: Path, results: list[dict], *, repeats: int, clips: int) -> None:
    """The measured figures, the command and the machine: no explanation (that is classify.md)."""
    from videoseq.io.atomic import atomic_write_text

    def verdict(ratio: float, target: float) -> str:
        return "meets" if ratio <= target else "MISSES"

    long_rows, many_rows, pair_rows = [], [], []
    onnx_rows, onnx_pair_rows = [], []
    for m in results:
        for key, what in (("onnx_long", "long video"), ("onnx_many", f"{clips} clips")):
            if key not in m:
                continue
            t, o = (m["classify"], m["onnx_long"]) if key == "onnx_long" else (m["many"], m["onnx_many"])
            med = median_ratio(m[f"{key}_pairs"])
            onnx_rows.append(f"| {m['encoder']} | {what} | {t.wall:.2f} | {o.wall:.2f} | {o.wall / t.wall:.2f}x "
                             f"| **{med:.2f}x** | {o.cpu:.1f} / {t.cpu:.1f} = {o.cpu / t.cpu:.2f}x "
                             f"| {o.load:.1f} / {t.load:.1f} | {o.rss / 1024:.0f} / {t.rss / 1024:.0f} |")
            onnx_pair_rows += [f"| {m['encoder']} | {what} | {i} | {tp.wall:.2f} | {tp.cpu:.1f} | {op.wall:.2f} "
                               f"| {op.cpu:.1f} | {op.wall / tp.wall:.2f}x |"
                               for i, (tp, op) in enumerate(m[f"{key}_pairs"], start=1)]
        if "many" in m:
            e, c = m["extract"], m["many"]
            med = median_ratio(m["pairs"])
            many_rows.append(f"| {m['encoder']} | {c.wall:.2f} | {e.wall:.2f} | {c.wall / e.wall:.2f}x "
                             f"| **{med:.2f}x** ({verdict(med, 1.2)}) "
                             f"| {c.cpu:.1f} / {e.cpu:.1f} = {c.cpu / e.cpu:.2f}x | {c.load:.1f} / {e.load:.1f} "
                             f"| {m['few'].rss / 1024:.0f} | {c.rss / 1024:.0f} |")
            pair_rows += [f"| {m['encoder']} | {i} | {c.wall:.2f} | {c.cpu:.1f} | {c.load:.1f} | {e.wall:.2f} "
                          f"| {e.cpu:.1f} | {e.load:.1f} | {c.wall / e.wall:.2f}x |"
                          for i, (e, c) in enumerate(m["pairs"], start=1)]
        if "classify" in m:
            c, d, i = m["classify"], m["decode"], m["import"]
            floor, cpu_floor = d.wall + i.wall, d.cpu + i.cpu
            long_rows.append(f"| {m['encoder']} | {c.wall:.2f} | {d.wall:.2f} | {i.wall:.2f} "
                             f"| {floor:.2f} | **{c.wall / floor:.2f}x** ({verdict(c.wall / floor, 1.3)}) "
                             f"| {c.cpu:.1f} / {cpu_floor:.1f} = {c.cpu / cpu_floor:.2f}x | {c.load:.1f} "
                             f"| {c.rss / 1024:.0f} |")
    nl = "\n"
    text = f"""# Figures: `videoseq classify` benchmark

Generated by `benchmarks/classify.py`; rerun the command instead of editing this file. What is
measured, the targets and where the time goes: [classify.md](classify.md).

- command: `{command_line()}`
- date: {datetime.now(timezone.utc):%Y-%m-%d} (UTC)
- machine: {platform.machine()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}; \
{priority()}; load average at the end {os.getloadavg()[0]:.1f}
- timings: best of {repeats} runs each; CPU inference, `--workers {results[0]['workers']}`; load = the
  1-minute load average just before the run

## One long video (60 s, 1280x720, H.264, 25 fps): classify vs ffmpeg decode + imports (target <= 1.3x)

| encoder | classify s | ffmpeg decode s | import s | floor s | wall ratio | CPU s: classify / floor | load | peak RSS MiB |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{nl.join(long_rows) or "| (not measured) |"}

## {clips} clips of {CLIP_SECONDS} s (320x240, H.264): one classify call vs the sum of the extractions (target <= 1.2x)

| encoder | best classify s | best extraction sum s | best / best | median pair ratio | CPU s: classify / extraction | load | RSS 50 clips MiB | RSS {clips} clips MiB |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{nl.join(many_rows) or "| (not measured) |"}

Every pair (the extraction sum, then the call right after it):

| encoder | run | classify s | CPU s | load | extraction s | CPU s | load | ratio |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{nl.join(pair_rows) or "| (not measured) |"}

## ONNX Runtime vs PyTorch: `classify --runtime onnx` of the exported bundle vs `classify` of the bundle (`--onnx`)

| encoder | input | PyTorch s | ONNX Runtime s | best / best | median pair ratio | CPU s: ONNX / PyTorch | load: ONNX / PyTorch | peak RSS MiB: ONNX / PyTorch |
|---|---|---:|---:|---:|---:|---:|---:|---:|
{nl.join(onnx_rows) or "| (not measured: run with --onnx) |"}

Every pair (the PyTorch call, then the ONNX Runtime call right after it, on the same input):

| encoder | input | run | PyTorch s | CPU s | ONNX Runtime s | CPU s | ratio |
|---|---|---:|---:|---:|---:|---:|---:|
{nl.join(onnx_pair_rows) or "| (not measured: run with --onnx) |"}
"""
    atomic_write_text(out, text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
