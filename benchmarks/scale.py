"""Scale of the `pipeline` flow in the number of videos and Dask workers; writes docs/benchmarks/scale-figures.md.

    .venv/bin/python benchmarks/scale.py --sizes 200,2000,20000 --workers 1,2 [--json]
    .venv/bin/python benchmarks/scale.py --quick --no-write     # sizes 40,160, workers 1,2; prints only

For each size N a dataset of N short synthetic videos (task `direction`, 4 classes, 12-16 frames of
64x64) is generated once under `--data` and reused by later invocations. For each N and each worker
count W, a helper process starts a `dask.distributed.LocalCluster` of W single-threaded worker
processes and runs the `pipeline` flow (flows/pipeline.py) on it (`runtime.task_runner=dask`) with a
tiny frozen config (small_cnn, random weights, 32 px, 6 frames, 3 epochs, no temporal streams) and a cache, fingerprint
store and Prefect home of its own; a second helper process then runs the flow again into the same run
directory with the same caches (the nightly rerun on an unchanged dataset). Prefect runs against a
test harness (a temporary SQLite database behind a local API server) in each helper; the server's
start is outside every timed figure.

Per run:
- wall time of the flow and of its stages: scan (`scan_dataset`), prepare (the `prepare-videos`
  subflow: the `prepare-chunk` tasks, extraction + frozen-feature encoding, on the Dask workers),
  compare (`compare_heads`: training and report); the sum of the chunks' own `seconds`;
- Prefect overhead per video: (flow wall - scan - compare - chunk seconds / W) / N, i.e. all time
  that is not library work, with the chunk work taken as perfectly spread over the W workers (uneven
  chunks count as overhead), and the narrower (flow wall - scan - prepare - compare) / N;
- peak RSS per stage: the flow process's high-water mark reset before each stage
  (/proc/self/clear_refs), and for prepare also the largest Dask worker's high-water mark (read from
  /proc/self/status on every worker before the cluster closes);
- for the rerun: its wall time as a share of the first run's (target <= 15%), the bytes of video read
  to hash files in the flow process and on every worker (`videoseq.data.fingerprints.bytes_hashed`,
  target 0), whether its metrics equal the first run's (wall-clock fields aside), its compare time, and
  whether compare found the run directory up to date (metrics.json not rewritten: nothing trained,
  no feature loaded; learn/reuse.py).

Printed: time per video per stage, the growth exponent k of time ~ N^k between consecutive sizes
(k = log(t2/t1) / log(N2/N1)) per stage, peak memory per stage, and the rerun figures. Targets and
what the figures mean: docs/benchmarks/scale.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUICK_SIZES = [40, 160]
QUICK_WORKERS = [1, 2]
STAGES = ("scan", "prepare", "compare")
# the tiny frozen config of tests/test_compare.py (TINY): small_cnn with random weights, 32 px, 6 frames
TINY = ["model.encoder=small_cnn", "model.weights=null", "model.pooling=grid2", "model.hidden=32",
        "sampling.frames=6", "sampling.size=32", "model.input_size=32", "sampling.train_views=2",
        "train.mode=frozen", "train.epochs=3", "train.batch_size=8", "train.patience=3", "train.seeds=1",
        "compare.heads=[per_frame,lstm]", "compare.bootstrap=50", "runtime.workers=0",
        "model.motion=none",   # the temporal streams' cost is per video (benchmarks/streams.py); off here
        "runtime.progress=false", "runtime.device=cpu", "runtime.engine=torch"]
TARGET_K = 1.1                 # growth exponent of every stage between 2,000 and 20,000 videos
TARGET_RERUN = 0.15            # rerun wall time / first run's
TARGET_OVERHEAD_MS = 10.0      # Prefect overhead per video at 2,000 videos
PROGRESS = {"file": sys.stdout}


# ---------------------------------------------------------------------------------------- helper side

def _vm_hwm_mib() -> float:
    """This process's peak resident set (VmHWM, MiB) since start or the last `_reset_hwm`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _vm_rss_mib() -> float:
    """This process's resident set (VmRSS, MiB) at this moment; 0 where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _reset_hwm() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux clear_refs 5); False where unsupported
    (the mark then keeps growing over the stages: later stages show the peak so far)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _worker_probe() -> dict[str, Any]:
    """Run on each Dask worker: its pid, peak RSS (MiB) and bytes read to hash files."""
    from videoseq.data.fingerprints import bytes_hashed

    return {"pid": os.getpid(), "hwm_mib": _vm_hwm_mib(), "rss_mib": _vm_rss_mib(),
            "bytes_hashed": bytes_hashed()}


class _Timings:
    """Wall time and flow-process peak RSS of each stage, recorded by wrappers around the library
    calls the flow's tasks make (they import them at call time, so patched attributes are seen)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_mib: dict[str, float] = {}
        self.entry_mib: dict[str, float] = {}

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn`, timed and memory-marked as `stage`."""
        def timed(*args: Any, **kwargs: Any) -> Any:
            """`fn(*args, **kwargs)`, adding its wall time and peak RSS to the stage's figures."""
            self.entry_mib.setdefault(stage, _vm_rss_mib())
            _reset_hwm()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0
                self.peak_mib[stage] = max(self.peak_mib.get(stage, 0.0), _vm_hwm_mib())
        return timed


class _TimedSubflow:
    """Stands in for `flows.pipeline.prepare_videos`: `with_options(...)` returns the real subflow with
    those options, timed as the prepare stage."""

    def __init__(self, flow: Any, timings: _Timings) -> None:
        self.flow, self.timings = flow, timings

    def with_options(self, **options: Any) -> Callable[..., Any]:
        """The configured subflow, wrapped by `_Timings.wrap("prepare", ...)`."""
        return self.timings.wrap("prepare", self.flow.with_options(**options))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The subflow with its own options, timed."""
        return self.timings.wrap("prepare", self.flow)(*args, **kwargs)


def helper(spec: dict[str, Any]) -> dict[str, Any]:
    """One flow run in this process (started by `run_helper`): a LocalCluster of spec["workers"]
    workers, the pipeline flow on spec["root"] into spec["run_dir"]; returns the run's figures."""
    import prefect  # noqa: F401  (after PREFECT_HOME is set by the parent)
    from dask.distributed import Client, LocalCluster
    from prefect.testing.utilities import prefect_test_harness

    import flows.pipeline as pipeline_module
    import videoseq.data.dataset as dataset_module
    import videoseq.learn.compare as compare_module
    from videoseq.data.fingerprints import bytes_hashed

    timings = _Timings()
    dataset_module.scan_dataset = timings.wrap("scan", dataset_module.scan_dataset)
    compare_module.compare_heads = timings.wrap("compare", compare_module.compare_heads)
    pipeline_module.prepare_videos = _TimedSubflow(pipeline_module.prepare_videos, timings)
    overrides = TINY + [f"runtime.cache_dir={spec['cache']}", "runtime.task_runner=dask"]
    with prefect_test_harness(server_startup_timeout=300):
        with LocalCluster(n_workers=spec["workers"], threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            hashed0 = bytes_hashed()
            t0 = time.perf_counter()
            state = pipeline_module.pipeline(
                root=spec["root"], run_dir=spec["run_dir"], chunk_size=spec["chunk_size"], return_state=True,
                overrides=overrides + [f"runtime.dask_address={cluster.scheduler_address}"])
            flow_s = time.perf_counter() - t0
            hashed_here = bytes_hashed() - hashed0
            workers = list(client.run(_worker_probe).values())
    if not state.is_completed():
        raise RuntimeError(f"pipeline flow ended {state.name}: {state.message}")
    summary = state.result()
    metrics = json.loads(Path(summary["metrics"]).read_text())
    metrics_mtime_ns = Path(summary["metrics"]).stat().st_mtime_ns
    chunks = summary["chunks"]
    return {"flow_s": flow_s, "stage_s": timings.seconds, "stage_peak_mib": timings.peak_mib,
            "stage_entry_mib": timings.entry_mib,
            "chunk_s": sum(r["seconds"] for r in chunks if not r.get("cached_run")),
            "chunks": len(chunks), "chunks_cached": sum(bool(r.get("cached_run")) for r in chunks),
            "extracted": summary["extracted"], "cached": summary["cached"], "failed": len(summary["failed"]),
            "failed_chunks": len(summary["failed_chunks"]),
            "frames_encoded": sum(r["frames_encoded"] for r in chunks if not r.get("cached_run")),
            "compare_bytes_hashed": summary["compare_bytes_hashed"],
            "bytes_hashed": hashed_here + sum(w["bytes_hashed"] for w in workers),
            "worker_peak_mib": max((w["hwm_mib"] for w in workers), default=0.0),
            "worker_end_mib": max((w["rss_mib"] for w in workers), default=0.0),
            "workers_used": len({(r["host"], r["pid"]) for r in chunks if not r.get("cached_run")}),
            "accuracy": summary["accuracy"], "metrics": metrics, "metrics_mtime_ns": metrics_mtime_ns}


# ---------------------------------------------------------------------------------------- parent side

def run_helper(spec: dict[str, Any], prefect_home: Path, fingerprints: Path) -> dict[str, Any]:
    """`helper(spec)` in a fresh Python process with its own Prefect home and fingerprint store;
    returns its figures (its stderr is shown only when it fails)."""
    env = dict(os.environ, PREFECT_HOME=str(prefect_home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_LEVEL="WARNING", PREFECT_LOGGING_TO_API_ENABLED="false",
               VIDEOSEQ_FINGERPRINTS=str(fingerprints), OMP_WAIT_POLICY="PASSIVE",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--helper", json.dumps(spec)],
                          env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-6000:])
        raise RuntimeError(f"helper run failed (exit {proc.returncode}): {spec}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dataset(data: Path, n: int, workers: int) -> tuple[Path, float]:
    """The dataset of `n` videos under `data` (generated on first use); returns (root, seconds spent)."""
    from videoseq.synthetic.generate import generate_dataset

    t0 = time.perf_counter()
    root = generate_dataset(data / f"direction-{n}", task="direction", videos_per_class=max(1, n // 4),
                            frames=(12, 16), size=(64, 64), workers=workers, progress=False)
    return root, time.perf_counter() - t0


def _strip(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics without wall-clock fields (the only values allowed to differ between runs)."""
    m = json.loads(json.dumps(metrics))
    m.pop("seconds", None)
    for v in m.get("models", {}).values():
        v.pop("train_seconds", None)
    return m


def train_seconds(metrics: dict[str, Any]) -> float:
    """Seconds spent training all heads of a run (its metrics' `train_seconds`, summed)."""
    return sum(float(m.get("train_seconds") or 0.0) for m in metrics.get("models", {}).values())


def summarise(first: dict[str, Any], rerun: dict[str, Any], n: int, w: int) -> dict[str, Any]:
    """The figures of one (N, W) pair from its two helper runs."""
    stage = {s: first["stage_s"].get(s, 0.0) for s in STAGES}
    work = stage["scan"] + stage["compare"] + first["chunk_s"] / w
    return {
        "videos": n, "workers": w, "flow_s": first["flow_s"], "stage_s": stage, "chunk_s": first["chunk_s"],
        "chunks": first["chunks"], "workers_used": first["workers_used"], "failed": first["failed"],
        "failed_chunks": first["failed_chunks"], "frames_encoded": first["frames_encoded"],
        "per_video_ms": {**{s: 1000 * stage[s] / n for s in STAGES}, "chunk_work": 1000 * first["chunk_s"] / n,
                         "flow": 1000 * first["flow_s"] / n},
        "overhead_ms_per_video": 1000 * (first["flow_s"] - work) / n,
        "outside_stages_ms_per_video": 1000 * (first["flow_s"] - sum(stage.values())) / n,
        "peak_mib": {**{s: first["stage_peak_mib"].get(s, 0.0) for s in STAGES},
                     "prepare_worker": first["worker_peak_mib"]},
        "entry_mib": {**{s: first["stage_entry_mib"].get(s, 0.0) for s in STAGES},
                      "prepare_worker_end": first["worker_end_mib"]},
        "first_bytes_hashed": first["bytes_hashed"],
        "accuracy": first["accuracy"], "train_s": train_seconds(first["metrics"]),
        "rerun": {"flow_s": rerun["flow_s"], "share": rerun["flow_s"] / first["flow_s"],
                  "stage_s": {s: rerun["stage_s"].get(s, 0.0) for s in STAGES},
                  "bytes_hashed": rerun["bytes_hashed"], "compare_bytes_hashed": rerun["compare_bytes_hashed"],
                  "chunks_cached": rerun["chunks_cached"], "chunks": rerun["chunks"],
                  "frames_encoded": rerun["frames_encoded"], "extracted": rerun["extracted"],
                  "train_s": train_seconds(rerun["metrics"]),
                  "up_to_date": rerun["metrics_mtime_ns"] == first["metrics_mtime_ns"],
                  "metrics_equal": _strip(rerun["metrics"]) == _strip(first["metrics"])},
    }


def exponents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Growth exponent k of time ~ N^k per stage between consecutive sizes, per worker count."""
    out = []
    for w in sorted({r["workers"] for r in rows}):
        mine = sorted((r for r in rows if r["workers"] == w), key=lambda r: r["videos"])
        for a, b in zip(mine, mine[1:]):
            ratio = math.log(b["videos"] / a["videos"])
            k = {}
            for name, ta, tb in [*((s, a["stage_s"][s], b["stage_s"][s]) for s in STAGES),
                                 ("chunk_work", a["chunk_s"], b["chunk_s"]), ("flow", a["flow_s"], b["flow_s"])]:
                k[name] = math.log(tb / ta) / ratio if ta > 0 and tb > 0 else float("nan")
            out.append({"workers": w, "from": a["videos"], "to": b["videos"], "k": k})
    return out


def _k_columns() -> list[str]:
    """The time columns of the k and per-video tables."""
    return [*STAGES, "chunk_work", "flow"]


def tables(result: dict[str, Any]) -> str:
    """The result as markdown tables."""
    rows, ks = result["rows"], result["exponents"]
    cols = _k_columns()
    lines = ["Time per video (ms) in the first run; chunk_work = sum of the chunks' own seconds; overhead = "
             "(flow - scan - compare - chunk_work / W) / N; outside = (flow - scan - prepare - compare) / N:", "",
             "| N | W | chunks | flow s | " + " | ".join(cols) + " | overhead | outside |",
             "|---|---|---|---|" + "---|" * len(cols) + "---|---|"]
    for r in rows:
        lines.append(f"| {r['videos']} | {r['workers']} | {r['chunks']} | {r['flow_s']:.1f} | "
                     + " | ".join(f"{r['per_video_ms'][c]:.1f}" for c in cols)
                     + f" | {r['overhead_ms_per_video']:.1f} | {r['outside_stages_ms_per_video']:.1f} |")
    lines += ["", "Growth exponent k of time ~ N^k between consecutive sizes (target <= "
              f"{TARGET_K} between 2,000 and 20,000):", "",
              "| W | N1 -> N2 | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for e in ks:
        lines.append(f"| {e['workers']} | {e['from']} -> {e['to']} | "
                     + " | ".join(f"{e['k'][c]:.2f}" for c in cols) + " |")
    lines += ["", "Peak RSS per stage (MiB), with the RSS when the stage began in brackets: flow process per "
              "stage (high-water mark reset before each), and the largest Dask worker's peak over the run "
              "(its RSS after the run in brackets):", "",
              "| N | W | scan | prepare (flow process) | prepare (largest worker) | compare |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        p, e = r["peak_mib"], r["entry_mib"]
        lines.append(f"| {r['videos']} | {r['workers']} | {p['scan']:.0f} ({e['scan']:.0f}) | "
                     f"{p['prepare']:.0f} ({e['prepare']:.0f}) | {p['prepare_worker']:.0f} "
                     f"({e['prepare_worker_end']:.0f}) | {p['compare']:.0f} ({e['compare']:.0f}) |")
    lines += ["", f"Rerun into the same run directory with the same caches (target: share <= "
              f"{TARGET_RERUN:.0%}, 0 bytes hashed, same metrics):", "",
              "| N | W | first s | rerun s | share | scan s | prepare s | compare s | chunks cached | "
              "frames encoded | bytes hashed (first -> rerun) | run directory | metrics equal |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        q = r["rerun"]
        lines.append(f"| {r['videos']} | {r['workers']} | {r['flow_s']:.1f} | {q['flow_s']:.1f} | "
                     f"{q['share']:.0%} | {q['stage_s']['scan']:.2f} | {q['stage_s']['prepare']:.2f} | "
                     f"{q['stage_s']['compare']:.2f} | {q['chunks_cached']}/{q['chunks']} | "
                     f"{q['frames_encoded']} | {r['first_bytes_hashed']} -> {q['bytes_hashed']} | "
                     f"{'kept (up to date)' if q['up_to_date'] else 'rebuilt'} | "
                     f"{'yes' if q['metrics_equal'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def command_line() -> str:
    """How this run was started, as a command to paste from the repository root."""
    try:
        python = str(Path(sys.executable).relative_to(REPO))
    except ValueError:
        python = "python"
    return shlex.join([python, str(Path(__file__).resolve().relative_to(REPO)), *sys.argv[1:]])


def write_figures(out: Path, result: dict[str, Any]) -> None:
    """The measured figures, the command and the machine (no explanation: that is scale.md), atomically."""
    from videoseq.io.atomic import atomic_write_text

    text = f"""# Scale figures

Written by `benchmarks/scale.py`; overwritten by each run. What the figures mean and the targets:
[scale.md](scale.md).

- command: `{result['command']}`
- date: {result['date']}
- machine: {platform.machine()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}; \
load average {result['load_start']:.1f} at the start, {result['load_end']:.1f} at the end
- chunk size {result['chunk_size']}; dataset generation (when not reused): \
{', '.join(f"{n}: {s:.1f} s" for n, s in result['generate_s'].items())}

{tables(result)}"""
    atomic_write_text(out, text)


def main() -> None:
    """Parse the options, run every (N, W) pair twice, print and (unless --no-write) write the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="200,2000,20000", help="comma-separated video counts (default 200,2000,20000)")
    ap.add_argument("--workers", default="1,2", help="comma-separated Dask worker counts (default 1,2)")
    ap.add_argument("--quick", action="store_true",
                    help=f"sizes {','.join(map(str, QUICK_SIZES))} and workers {','.join(map(str, QUICK_WORKERS))}")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "videoseq-scale",
                    help="where the datasets are generated and reused (default $TMPDIR/videoseq-scale)")
    ap.add_argument("--work", type=Path, default=None,
                    help="where run directories, caches and Prefect homes go (default: a temporary folder, removed)")
    ap.add_argument("--chunk-size", type=int, default=None, help="videos per prepare-chunk task (default: the flow's)")
    ap.add_argument("--gen-workers", type=int, default=os.cpu_count() or 1,
                    help="processes generating the datasets (default: all CPUs)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON on stdout (progress on stderr)")
    ap.add_argument("--no-write", action="store_true", help="do not write the figures file")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "scale-figures.md",
                    help="figures file to (over)write (default: docs/benchmarks/scale-figures.md)")
    ap.add_argument("--helper", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.helper:
        print(json.dumps(helper(json.loads(args.helper))))
        return
    if args.json:
        PROGRESS["file"] = sys.stderr
    sizes = QUICK_SIZES if args.quick else [int(s) for s in args.sizes.split(",")]
    worker_counts = QUICK_WORKERS if args.quick else [int(w) for w in args.workers.split(",")]
    from flows.pipeline import CHUNK_SIZE
    chunk_size = args.chunk_size or CHUNK_SIZE
    result: dict[str, Any] = {"command": command_line(),
                              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                              "load_start": os.getloadavg()[0], "chunk_size": chunk_size,
                              "generate_s": {}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="videoseq-scale-work-") as tmp:
        work = args.work or Path(tmp)
        for n in sizes:
            root, gen_s = dataset(args.data, n, args.gen_workers)
            result["generate_s"][n] = gen_s
            print(f"N={n}: dataset {root} ({gen_s:.1f} s)", file=PROGRESS["file"], flush=True)
            for w in worker_counts:
                base = work / f"n{n}-w{w}"
                spec = {"root": str(root), "run_dir": str(base / "run"), "cache": str(base / "cache"),
                        "workers": w, "chunk_size": chunk_size}
                first = run_helper(spec, base / "prefect", base / "cache" / "fingerprints")
                rerun = run_helper(spec, base / "prefect", base / "cache" / "fingerprints")
                row = summarise(first, rerun, n, w)
                result["rows"].append(row)
                print(f"N={n} W={w}: flow {row['flow_s']:.1f} s ("
                      + ", ".join(f"{s} {row['stage_s'][s]:.1f}" for s in STAGES)
                      + f", chunk work {row['chunk_s']:.1f}), overhead {row['overhead_ms_per_video']:.1f} ms/video; "
                      f"rerun {row['rerun']['flow_s']:.1f} s ({row['rerun']['share']:.0%}), "
                      f"{row['rerun']['bytes_hashed']} bytes hashed, metrics equal: {row['rerun']['metrics_equal']}",
                      file=PROGRESS["file"], flush=True)
    result["exponents"] = exponents(result["rows"])
    result["load_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print()
        print(tables(result))
    if not args.no_write:
        write_figures(args.out, result)
        print(f"wrote {args.out}", file=PROGRESS["file"])


if __name__ == "__main__":
    main()
