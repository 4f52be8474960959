"""Frame encoding throughput: eager PyTorch vs the ONNX Runtime engine; writes docs/benchmarks/encode-figures.md.

    .venv/bin/python benchmarks/encode.py [--sizes 224 112] [--batches 4 32] [--threads 2] [--json]
    .venv/bin/python benchmarks/encode.py --quick        # fewer, shorter rounds; prints only

1. CPU: frames/s of the default encoder (efficientnet_lite0, DEFAULT weights, grid2 pooling: 5120-d)
   through the two engines of videoseq/models/engines.py (`build_engine`): `torch` (eager, BatchNorm
   folded, inference mode) and `onnx` (ONNX Runtime), per input size and batch size, with `--threads`
   threads for both. Rounds alternate the engines so that load from other processes hits both alike;
   the best round of each counts, and the least CPU time per frame (which load distorts less). Target:
   ONNX / eager >= 1.8x. Also the max abs difference and the least cosine similarity of the two
   engines' features on the benchmark frames, and the time to build the ONNX engine.
2. CUDA, when `torch.cuda.is_available()` (or `--variants-device`): the folded encoder in eager fp32
   (NCHW; TF32 as torch's defaults leave it), fp32 channels-last, autocast fp16 and bf16 (channels-last),
   frames/s with the input already on the device and with CPU tensors in and out (what feature caching
   does), and each variant's max abs difference and least cosine similarity to strict fp32 (TF32 off);
   batch sizes `--batches` and 128 (what feature caching takes per call on a GPU), half the rounds.

Frames are synthetic (gradients, bars, noise: the value range of real footage) prepared as the feature
store prepares them (`frames_to_tensor`, channels-last memory). The figures file holds the measured
figures, the command and the machine only; what they mean is in docs/benchmarks/encode.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

# as the `videoseq` command runs torch (cli.prepare_process): idle OpenMP threads sleep, not spin
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from videoseq.models.encoders import build_encoder  # noqa: E402
from videoseq.models.engines import build_engine, folded_copy  # noqa: E402
from videoseq.models.transforms import frames_to_tensor  # noqa: E402

ENCODER = "efficientnet_lite0"
TARGET = 1.8          # ONNX / eager frames/s
VARIANTS = ("fp32", "fp32 channels_last", "fp16 autocast", "bf16 autocast")
PROGRESS = {"file": sys.stdout}    # where the per-configuration lines go (stderr under --json)


def synthetic_frames(n: int, size: int) -> np.ndarray:
    """(n, S, S, 3) uint8 RGB: moving colour gradients and bars with noise, seeded."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size               # (S, S) each
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        r = 0.5 + 0.5 * np.sin(6.0 * xx + 0.3 * i)
        g = 0.5 + 0.5 * np.cos(4.0 * yy - 0.2 * i)
        b = ((xx * 8 + i * 0.1) % 1.0 > 0.5).astype(np.float32)
        img = np.stack([r, g, b], axis=-1) * 255 + rng.normal(0, 12, (size, size, 3))
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def timed_round(fn, x: torch.Tensor, seconds: float) -> tuple[float, float]:
    """(frames/s, CPU ms per frame) of calling fn(x) repeatedly for about `seconds` (after one warm-up)."""
    fn(x)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while n < 2 * len(x) or time.perf_counter() - t0 < seconds:
        fn(x)
        n += len(x)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n / wall, 1000.0 * cpu / n


def cpu_figures(size: int, batches: list[int], *, rounds: int, seconds: float, threads: int) -> dict:
    """Eager vs ONNX Runtime frames/s at one input size, per batch size, and their feature difference."""
    enc = build_encoder(ENCODER, weights="DEFAULT", pooling="grid2", input_size=size).freeze()
    t0 = time.perf_counter()
    onnx = build_engine(enc, engine="onnx", threads=threads)
    build_s = time.perf_counter() - t0
    if onnx.name != "onnx":
        raise SystemExit(f"{ENCODER}@{size}: the ONNX engine fell back to PyTorch (see the warning above)")
    eager = build_engine(enc, engine="torch")
    x_all = frames_to_tensor(synthetic_frames(max(batches), size), size=size, mean=enc.mean,
                             std=enc.std)                                   # (B, 3, S, S) channels-last
    a, b = eager(x_all), onnx(x_all)                                         # (B, D) each
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)
    out = {"size": size, "onnx_build_s": round(build_s, 2), "max_abs_diff": float((a - b).abs().max()),
           "min_cosine": float(cos.min()), "feature_max_abs": float(a.abs().max()), "rows": []}
    for batch in batches:
        x = x_all[:batch]
        best = {"eager": (0.0, float("inf")), "onnx": (0.0, float("inf"))}
        load = os.getloadavg()[0]
        for _ in range(rounds):
            for name, engine in (("eager", eager), ("onnx", onnx)):
                fps, cpu_ms = timed_round(engine, x, seconds)
                best[name] = (max(best[name][0], fps), min(best[name][1], cpu_ms))
        row = {"batch": batch, "eager_fps": round(best["eager"][0], 1), "onnx_fps": round(best["onnx"][0], 1),
               "ratio": round(best["onnx"][0] / best["eager"][0], 2),
               "eager_cpu_ms": round(best["eager"][1], 2), "onnx_cpu_ms": round(best["onnx"][1], 2),
               "cpu_ratio": round(best["eager"][1] / best["onnx"][1], 2), "load": round(load, 1)}
        out["rows"].append(row)
        print(f"cpu  {ENCODER}@{size} batch {batch:3d}: eager {row['eager_fps']:7.1f} frames/s, onnx "
              f"{row['onnx_fps']:7.1f} frames/s -> {row['ratio']:.2f}x (target >= {TARGET}x: "
              f"{'meets' if row['ratio'] >= TARGET else 'MISSES'}); CPU time per frame {row['cpu_ratio']:.2f}x "
              f"less; max abs diff {out['max_abs_diff']:.1e}; load {row['load']}", flush=True, **PROGRESS)
    return out


def variant_figures(device: str, size: int, batches: list[int], *, rounds: int, seconds: float) -> dict:
    """Eager variants on `device` (cuda: fp32, channels-last, autocast fp16/bf16): frames/s with the input
    on the device and with CPU tensors in and out, and each one's feature difference to strict fp32."""
    dev = torch.device(device)
    enc = build_encoder(ENCODER, weights="DEFAULT", pooling="grid2", input_size=size).freeze()
    nchw = folded_copy(enc).to(dev).to(memory_format=torch.contiguous_format)
    nhwc = folded_copy(enc).to(dev).to(memory_format=torch.channels_last)
    x_cpu = frames_to_tensor(synthetic_frames(max(batches), size), size=size, mean=enc.mean,
                             std=enc.std)                                   # (B, 3, S, S) channels-last

    def runner(variant: str):
        model = nchw if variant == "fp32" else nhwc
        fmt = torch.contiguous_format if variant == "fp32" else torch.channels_last
        dtype = {"fp16 autocast": torch.float16, "bf16 autocast": torch.bfloat16}.get(variant)

        def call(x: torch.Tensor) -> torch.Tensor:                          # (n, 3, S, S) -> (n, D)
            ctx = torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext()
            with torch.inference_mode(), ctx:
                y = model(x.to(dev, non_blocking=False).contiguous(memory_format=fmt)).float()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return y
        return call

    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    ref = runner("fp32")(x_cpu).cpu()                                        # (B, D) strict fp32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    out = {"device": str(dev), "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.machine(),
           "size": size, "tf32": {"cudnn": tf32[0], "matmul": tf32[1]}, "rows": []}
    for variant in VARIANTS:
        call = runner(variant)
        y = call(x_cpu).cpu()
        cos = torch.nn.functional.cosine_similarity(y.double(), ref.double(), dim=1)
        row = {"variant": variant, "max_abs_diff": float((y - ref).abs().max()), "min_cosine": float(cos.min()),
               "batches": []}
        for batch in batches:
            x_dev = x_cpu[:batch].to(dev)
            on_dev = max(timed_round(call, x_dev, seconds)[0] for _ in range(rounds))
            host = max(timed_round(lambda x: call(x).cpu(), x_cpu[:batch], seconds)[0] for _ in range(rounds))
            row["batches"].append({"batch": batch, "device_fps": round(on_dev, 1), "host_fps": round(host, 1)})
            print(f"{dev.type:4s} {ENCODER}@{size} {variant:18s} batch {batch:3d}: {on_dev:8.1f} frames/s on "
                  f"device, {host:8.1f} CPU in/out; max abs diff {row['max_abs_diff']:.1e}, min cosine "
                  f"{row['min_cosine']:.6f}", flush=True, **PROGRESS)
        out["rows"].append(row)
    return out


def command_line() -> str:
    """How this run was started, as a command to paste from the repository root."""
    try:
        python = str(Path(sys.executable).relative_to(REPO))
    except ValueError:
        python = "python"
    return shlex.join([python, str(Path(__file__).resolve().relative_to(REPO)), *sys.argv[1:]])


def write_figures(out: Path, result: dict) -> None:
    """The measured figures, the command and the machine: no explanation (that is encode.md)."""
    from videoseq.io.atomic import atomic_write_text

    rows, diffs, gpu_rows = [], [], []
    for fig in result["cpu"]:
        diffs.append(f"| {fig['size']} | {fig['max_abs_diff']:.1e} | {fig['min_cosine']:.7f} "
                     f"| {fig['feature_max_abs']:.2f} | {fig['onnx_build_s']:.2f} |")
        for r in fig["rows"]:
            verdict = "meets" if r["ratio"] >= TARGET else "MISSES"
            rows.append(f"| {fig['size']} | {r['batch']} | {r['eager_fps']:.1f} | {r['onnx_fps']:.1f} "
                        f"| **{r['ratio']:.2f}x** ({verdict}) | {r['eager_cpu_ms']:.1f} / {r['onnx_cpu_ms']:.1f} "
                        f"= {r['cpu_ratio']:.2f}x | {r['load']:.1f} |")
    for fig in result["variants"]:
        for r in fig["rows"]:
            for b in r["batches"]:
                gpu_rows.append(f"| {fig['device']} ({fig['name']}) | {fig['size']} | {r['variant']} | {b['batch']} "
                                f"| {b['device_fps']:.1f} | {b['host_fps']:.1f} | {r['max_abs_diff']:.1e} "
                                f"| {r['min_cosine']:.6f} |")
    nl = "\n"
    gpu = (f"""
## Per device: {result['variants'][0]['device']} variants of the folded encoder (vs strict fp32, TF32 off)

TF32 when timed (torch's defaults): cudnn {result['variants'][0]['tf32']['cudnn']}, matmul \
{result['variants'][0]['tf32']['matmul']}.

| device | size | variant | batch | frames/s, input on device | frames/s, CPU in and out | max abs diff | min cosine |
|---|---:|---|---:|---:|---:|---:|---:|
{nl.join(gpu_rows)}
""" if gpu_rows else f"""
## Per device

cpu only (above): `torch.cuda.is_available()` was {torch.cuda.is_available()} on this machine.
""")
    text = f"""# Figures: frame encoding benchmark

Generated by `benchmarks/encode.py`; rerun the command instead of editing this file. What is
measured and what it means: [encode.md](encode.md).

- command: `{command_line()}`
- date: {result['date']} (UTC)
- machine: {platform.machine()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}, torch \
{torch.__version__}, onnxruntime {result['onnxruntime']}; load average {result['load_start']:.1f} at the start, \
{result['load_end']:.1f} at the end
- timings: {ENCODER} (DEFAULT weights, grid2 pooling, 5120-d), {result['threads']} threads for both engines; \
best of {result['rounds']} alternating rounds of ~{result['seconds']:g} s; load = the 1-minute load average \
before a configuration's rounds

## CPU: eager PyTorch (BatchNorm folded) vs the ONNX Runtime engine (target >= {TARGET}x)

| size | batch | eager frames/s | ONNX frames/s | ONNX / eager | CPU ms/frame: eager / ONNX | load |
|---:|---:|---:|---:|---:|---:|---:|
{nl.join(rows)}

Feature difference, ONNX vs eager, on the {max(result['batches'])} benchmark frames, and the ONNX engine's build
time (export, session, check):

| size | max abs diff | min cosine | max abs feature | build s |
|---:|---:|---:|---:|---:|
{nl.join(diffs)}
{gpu}"""
    atomic_write_text(out, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 112], help="encoder input sizes")
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 32], help="frames per call")
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per configuration")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one timed round")
    ap.add_argument("--quick", action="store_true",
                    help="2 rounds of 0.6 s (about 30 s on 2 cores); prints, writes nothing")
    ap.add_argument("--variants-device", choices=["cuda", "cpu", "none"], default=None,
                    help="where to time the fp32/channels-last/autocast variants (default: cuda when "
                         "available, else none)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the text lines")
    ap.add_argument("--no-write", action="store_true", help="do not write the figures file")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "encode-figures.md",
                    help="figures file to (over)write (default: docs/benchmarks/encode-figures.md)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.no_write = 2, 0.6, True
    if args.json:
        PROGRESS["file"] = sys.stderr
    variants = args.variants_device or ("cuda" if torch.cuda.is_available() else "none")
    torch.set_num_threads(args.threads)
    import onnxruntime

    result = {"date": f"{datetime.now(timezone.utc):%Y-%m-%d}", "threads": args.threads, "rounds": args.rounds,
              "seconds": args.seconds, "batches": args.batches, "onnxruntime": onnxruntime.__version__,
              "cuda_available": torch.cuda.is_available(), "load_start": os.getloadavg()[0]}
    result["cpu"] = [cpu_figures(s, args.batches, rounds=args.rounds, seconds=args.seconds, threads=args.threads)
                     for s in args.sizes]
    result["variants"] = [] if variants == "none" else [
        variant_figures(variants, s, sorted({*args.batches, 128}) if variants == "cuda" else args.batches,
                        rounds=max(1, args.rounds // 2), seconds=args.seconds / 2) for s in args.sizes]
    result["load_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=2))
    if not args.no_write:
        write_figures(args.out, result)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
