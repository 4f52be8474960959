"""`videoseq classify VIDEO|DIR|GLOB... --model BUNDLE_DIR|RUN_DIR`: label video files.

Prints a table (or `--json` lines) as each video finishes; failures are one line each on stderr and
the rest still run. Exit 0: all classified; 1: some inputs failed; 2: usage error or unusable model.
Imports of torch/cv2 happen inside `run`, so `--help` is instant; prefect is never imported.
"""
from __future__ import annotations

import argparse
import gc
import glob
import json
import sys
from pathlib import Path
from typing import Iterator

from videoseq.config import INFERENCE_BATCH_SIZE, JOB_TIMEOUT
from videoseq.io.files import walk_videos

HELP = "classify video files with a trained model (a bundle, or a run folder's best head)"
FAST_EXIT = True   # the console script skips interpreter teardown once the results are out (cli.py)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of `videoseq classify` to `p`."""
    p.add_argument("inputs", nargs="+", metavar="VIDEO|DIR|GLOB",
                   help="video files, folders (walked for video files) or glob patterns")
    p.add_argument("--model", required=True, metavar="BUNDLE_DIR|RUN_DIR",
                   help="a model bundle, or a run folder (uses the head with the best validation accuracy)")
    p.add_argument("--head", help="with a run folder: the head to use (e.g. per_frame, lstm)")
    p.add_argument("--compare", action="store_true",
                   help="with a run folder: every head of the run side by side for each video")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="classes shown per video (table)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per video per line: {"path","label","score","probs","head",...}')
    p.add_argument("--timeline", metavar="PNG|DIR",
                   help="write a timeline plot per video (a .png path for one video, else a folder)")
    p.add_argument("--batch-size", type=int, default=INFERENCE_BATCH_SIZE, metavar="B",
                   help="videos per motion-stream and head pass (padded to B: a result never depends on "
                        "its neighbours; another B may change the last digits)")
    p.add_argument("--workers", type=int, default=2,
                   help="decoding threads running ahead of inference, and as many inference threads")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    p.add_argument("--timeout", type=float, default=JOB_TIMEOUT, metavar="SECONDS",
                   help="seconds a video may take to decode before it is reported as timed out (a "
                        "stalled mount, a hung decoder) and the others go on; 0 = no limit "
                        f"(default: {JOB_TIMEOUT:g})")
    p.add_argument("--min-score", type=float, default=0.0, metavar="P",
                   help="label a video (or segment) whose top probability is below P as 'unknown' (its "
                        "scores still given); 0 = never abstain (default)")
    p.add_argument("--runtime", default="torch", choices=("torch", "onnx"),
                   help="torch: a bundle or run folder; onnx: a model.onnx from `videoseq export`, run by "
                        "ONNX Runtime without PyTorch (pip install 'videoseq[onnx]')")
    p.add_argument("--window", type=float, metavar="SECONDS",
                   help="long videos: classify overlapping segments of this many seconds, one result per "
                        "segment (one streaming decode; --json: one line per segment)")
    p.add_argument("--stride", type=float, metavar="SECONDS",
                   help="with --window: seconds from one segment's start to the next (default: window / 2)")


def run(args: argparse.Namespace) -> int:
    """Run `videoseq classify`; return 0 when every input was classified, 1 when some failed, 2 on bad usage."""
    from videoseq.models.bundle import choose_bundle, find_bundles, read_bundle_meta
    from videoseq.config import VIDEO_EXTENSIONS
    from videoseq.infer.predict import FailedInput, abstain, classify_paths_multi, load_bundles_async

    if args.compare and args.head:
        return _usage("--compare runs every head; leave out --head")
    if args.batch_size < 1 or args.top_k < 1 or args.workers < 1:
        return _usage("--batch-size, --top-k and --workers must be at least 1")
    if not args.timeout >= 0:
        return _usage("--timeout must be at least 0 (0: no limit)")
    if not 0 <= args.min_score <= 1:
        return _usage("--min-score must be between 0 and 1 (0: never abstain)")
    if args.window is not None or args.stride is not None:
        return _run_segments(args)
    if args.runtime == "onnx":
        return _run_onnx(args)

    # config.json only (no torch yet): the models load in the background while the first videos decode
    chosen = list(_ordered(find_bundles(args.model)).values()) if args.compare \
        else [choose_bundle(args.model, head=args.head)]
    metas = [read_bundle_meta(p) for p in chosen]
    shown = len(chosen)
    if args.timeline and not any(m["head"] == "per_frame" for m in metas):
        extra = _per_frame_companion(args.model, metas[0])
        if extra is not None:  # the run's per_frame head adds each frame's own prediction to the timeline
            chosen.append(extra)

    extensions = {e.lower() for e in (metas[0]["config"].get("data", {}).get("extensions") or VIDEO_EXTENSIONS)}
    paths, failed = _collect_inputs(args, extensions)
    if args.timeline and args.timeline.lower().endswith(".png") and len(paths) > 1:
        return _usage(f"--timeline {args.timeline}: one file for {len(paths)} videos; give a folder")
    sampling, bundles = load_bundles_async(chosen, device=args.device)
    # torch and the models stay for the whole process: keep their ~10^6 objects out of the cyclic
    # garbage collector's full passes (during the run and at exit)
    bundles.add_done_callback(lambda _: gc.freeze())

    header_done = args.json
    timelines: dict[str, int] = {}
    for results in classify_paths_multi(paths, bundles, sampling=sampling, batch_size=args.batch_size,
                                        workers=args.workers, thumbnails=bool(args.timeline),
                                        timeout=args.timeout or None):
        results = [abstain(r, args.min_score) for r in results]
        if isinstance(results[0], FailedInput):
            _report_failure(results[0].path, results[0].error, as_json=args.json)
            failed += 1
            continue
        if not header_done:
            _print_header(results[:shown], chosen)
            header_done = True
        if args.json:
            for r in results[:shown]:
                print(json.dumps(r.to_json()), flush=True)
        else:
            _print_row(results[:shown], args.top_k)
        if args.timeline:
            _write_timeline(args.timeline, results, timelines)
    return 1 if failed else 0



def _per_frame_companion(model: str, meta: dict) -> Path | None:
    from videoseq.models.bundle import find_bundles, read_bundle_meta
    from videoseq.errors import BundleError

    try:
        path = find_bundles(model).get("per_frame")
        if path is None:
            return None
        extra = read_bundle_meta(path)
    except BundleError:
        return None
    return path if extra["sampling"] == meta["sampling"] else None


def _collect_inputs(args: argparse.Namespace, extensions: set[str]) -> tuple[list[str], int]:
    """The video paths of the command line, and how many inputs failed (each reported as it is found)."""
    failed = 0
    paths: list[str] = []
    for item in expand_inputs(args.inputs, extensions):
        if isinstance(item, tuple):
            _report_failure(*item, as_json=args.json)
            failed += 1
        else:
            paths.append(item)
    return paths, failed


def expand_inputs(inputs: list[str], extensions: set[str]) -> Iterator[str | tuple[str, str]]:
    """Video paths from files, folders (walked, sorted) and globs; (input, reason) for each that fails."""
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(str(p) for p in walk_videos(path, extensions))
            if not found:
                yield raw, f"no video files in this folder (looked for {', '.join(sorted(extensions)[:6])}, ...)"
            yield from found
        elif path.is_file():
            yield raw
        elif glob.has_magic(raw):
            found = sorted(p for p in glob.glob(raw, recursive=True) if Path(p).is_file())
            if not found:
                yield raw, "pattern matches no files"
            yield from found
        elif path.exists():
            yield raw, "not a file (a pipe, a device or a socket)"
        else:
            yield raw, "no such file or directory"


def _run_onnx(args: argparse.Namespace) -> int:
    """`classify --runtime onnx`: an exported model.onnx (+ model.json beside it) run by ONNX Runtime;
    torch is never imported. The same output as the torch runtime (probabilities equal to ~1e-5)."""
    from videoseq.config import VIDEO_EXTENSIONS
    from videoseq.infer.onnx_model import OnnxModel, classify_paths_onnx
    from videoseq.infer.predict import FailedInput, abstain

    if args.compare or args.head:
        return _usage("--runtime onnx runs one exported model; leave out --compare and --head")
    model = OnnxModel(args.model)
    extensions = {e.lower() for e in (model.meta.get("extensions") or VIDEO_EXTENSIONS)}
    paths, failed = _collect_inputs(args, extensions)
    if args.timeline and args.timeline.lower().endswith(".png") and len(paths) > 1:
        return _usage(f"--timeline {args.timeline}: one file for {len(paths)} videos; give a folder")
    header_done = args.json
    timelines: dict[str, int] = {}
    for result in classify_paths_onnx(paths, model, batch_size=args.batch_size, workers=args.workers,
                                      thumbnails=bool(args.timeline), timeout=args.timeout or None):
        result = abstain(result, args.min_score)
        if isinstance(result, FailedInput):
            _report_failure(result.path, result.error, as_json=args.json)
            failed += 1
            continue
        if not header_done:
            _print_header([result], [model.path])
            header_done = True
        if args.json:
            print(json.dumps(result.to_json()), flush=True)
        else:
            _print_row([result], args.top_k)
        if args.timeline:
            _write_timeline(args.timeline, [result], timelines)
    return 1 if failed else 0


def _run_segments(args: argparse.Namespace) -> int:
    """`classify --window W [--stride S]`: each video in overlapping segments, decoded once, streaming."""
    from videoseq.config import VIDEO_EXTENSIONS
    from videoseq.errors import VideoseqError
    from videoseq.infer.predict import abstain
    from videoseq.infer.segments import classify_segments
    from videoseq.models.bundle import choose_bundle, load_bundle

    if args.window is None:
        return _usage("--stride needs --window")
    stride = args.stride if args.stride is not None else args.window / 2
    if not (0 < args.window < float("inf") and 0 < stride < float("inf")):
        return _usage(f"--window and --stride must be positive seconds, got {args.window:g} and {stride:g}")
    if args.runtime == "onnx" or args.compare:
        return _usage("--window runs one torch model; leave out --runtime onnx and --compare")
    bundle = load_bundle(choose_bundle(args.model, head=args.head), device=args.device)
    extensions = {e.lower() for e in (bundle.config.data.extensions or VIDEO_EXTENSIONS)}
    paths, failed = _collect_inputs(args, extensions)
    if args.timeline and args.timeline.lower().endswith(".png") and len(paths) > 1:
        return _usage(f"--timeline {args.timeline}: one file for {len(paths)} videos; give a folder")
    if not args.json:
        print(f"{'segment (s)':<17} {'label':<16} {'score':>6}  top-k   (model: {bundle.head}, {bundle.path})")
    used: dict[str, int] = {}
    for path in paths:
        segments = []
        try:
            for seg in classify_segments(path, bundle, window=args.window, stride=stride,
                                         batch_size=args.batch_size, workers=args.workers):
                seg = abstain(seg, args.min_score)
                segments.append(seg)
                if args.json:
                    print(json.dumps({"path": path, **seg.to_json()}), flush=True)
                else:
                    if len(segments) == 1:
                        print(path, flush=True)
                    top = ", ".join(f"{c} {p:.2f}" for c, p in seg.top(args.top_k))
                    print(f"  {seg.start:7.2f}-{seg.end:<7.2f} {seg.label:<16} {seg.score:>6.3f}  {top}", flush=True)
        except (VideoseqError, ValueError) as e:
            _report_failure(path, getattr(e, "reason", None) or str(e), as_json=args.json)
            failed += 1
            continue
        if args.timeline and segments:
            from videoseq.infer.timeline import plot_segment_timeline

            plot_segment_timeline(_timeline_dest(args.timeline, path, used), segments,
                                  title=f"{Path(path).name}: {len(segments)} segments of {args.window:g} s "
                                        f"every {stride:g} s, by {bundle.head}")
    return 1 if failed else 0


# --- output --------------------------------------------------------------------------------------

def _print_header(results, paths: list[Path]) -> None:
    if len(results) == 1:
        print(f"{'label':<16} {'score':>6}  top-k{'':<30} path   (model: {results[0].head}, {paths[0]})")
    else:
        print("  ".join(f"{r.head:<24}" for r in results) + "  path")
    sys.stdout.flush()


def _print_row(results, top_k: int) -> None:
    if len(results) == 1:
        r = results[0]
        top = ", ".join(f"{c} {p:.2f}" for c, p in r.top(top_k))
        print(f"{r.label:<16} {r.score:>6.3f}  {top:<35} {r.path}", flush=True)
    else:
        cells = [f"{r.label} ({r.score:.2f})" for r in results]
        print("  ".join(f"{c:<24}" for c in cells) + f"  {results[0].path}", flush=True)


def _report_failure(path: str, reason: str, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"path": path, "error": reason}), flush=True)
    print(f"videoseq classify: {path}: {reason}", file=sys.stderr, flush=True)


def _write_timeline(target: str, results, used: dict[str, int]) -> None:
    from videoseq.infer.timeline import plot_timeline

    # the head with memory draws the lines; the per_frame baseline (if any) each frame's own dots
    main = next((r for r in results if r.head != "per_frame"), results[0])
    per_frame = next((r for r in results if r.head == "per_frame" and r is not main), None)
    plot_timeline(_timeline_dest(target, main.path, used), main, per_frame=per_frame)


def _timeline_dest(target: str, path: str, used: dict[str, int]) -> Path:
    """`target` when it names a .png, else `target/<stem>.timeline.png` (-2, -3, ... for repeated stems)."""
    if target.lower().endswith(".png"):
        return Path(target)
    stem = Path(path).stem
    used[stem] = used.get(stem, 0) + 1
    name = stem if used[stem] == 1 else f"{stem}-{used[stem]}"
    return Path(target) / f"{name}.timeline.png"


def _ordered(bundles: dict[str, Path]) -> dict[str, Path]:
    """per_frame (the baseline) first, then the others alphabetically."""
    return dict(sorted(bundles.items(), key=lambda kv: (kv[0] != "per_frame", kv[0])))


def _usage(message: str) -> int:
    print(f"videoseq classify: error: {message}", file=sys.stderr)
    return 2
