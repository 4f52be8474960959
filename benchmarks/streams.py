"""Which temporal streams the temporal heads need: every real-footage task x every stream set x 3 seeds.

    .venv/bin/python benchmarks/streams.py [--data DIR] [--tasks real_cut,...] [--sets none,blockmatch,...]
        [--set model.stream_summary=false ...] [--out FILE]

For each task it generates the dataset once (`videoseq generate --task T`, seed 0 unless listed
below), then runs `compare` (per_frame vs lstm, configs/default.yaml, `--seeds 3`) once per stream set
(`--set model.motion=SET`), features encoded by PyTorch (`runtime.engine=torch`). The encoder's features are computed once per task and each stream once
(data/features.py caches them apart), so a stream set costs its streams and the heads' training.
Runs are kept under DATA/runs: a rerun with the same config finds them up to date and trains nothing;
after a change of configs/default.yaml only what the change touches is trained again.

Prints, and writes to docs/benchmarks/streams-figures.md: per task and stream set, the test accuracy
of per_frame and lstm per seed, their mean over seeds and the 95% interval of the seeds' pooled
predictions (metrics.json `accuracy_ci95` is the best-validation seed's; the pooled one is below).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# task -> (videos per class, generate seed): the five change tasks at 100 (60 train, 20 val and 20 test
# videos per class); the sizes of docs/benchmarks/train.md for the older tasks
TASKS = {
    "real_fade_partial": (100, 0), "real_light": (100, 0), "real_speed": (100, 0), "real_cut": (100, 0),
    "real_camspeed": (100, 0), "real_scene": (20, 0), "real_pan": (60, 0), "real_zoom": (40, 3),
    "real_fade": (40, 0),
}
SETS = ["none", "blockmatch", "photometric", "speed", "tempo", "rgbdiff", "blockmatch+photometric",
        "blockmatch+photometric+speed", "blockmatch+photometric+speed+tempo",
        "blockmatch+photometric+speed+tempo+rgbdiff"]
FIGURES = ROOT / "docs" / "benchmarks" / "streams-figures.md"


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of k successes in n trials, in percent."""
    if n == 0:
        return (0.0, 100.0)
    z, p = 1.959964, k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5 / d
    return (100 * max(0.0, c - h), 100 * min(1.0, c + h))


def task_size(task: str, videos_per_class: int | None, generate_seed: int | None = None) -> tuple[int, int]:
    """(videos per class, generate seed) of a task: its TASKS entry, each replaced when given."""
    vpc, seed = TASKS[task]
    return (videos_per_class or vpc), (seed if generate_seed is None else generate_seed)


def run_one(data: Path, run: Path, motion: str, seeds: int, sets: list[str]) -> dict:
    """The metrics of one compare: a run folder built from the same config and videos is returned as
    it is, finished (head, seed) runs in it are reused (learn/reuse.py), anything else is trained.
    `sets`: more `section.key=value` overrides, after the stream set."""
    from videoseq.commands.common import check_config
    from videoseq.config import load_config
    from videoseq.learn.compare import compare_heads

    config = load_config("configs/default.yaml", overrides=[f"model.motion={motion}", f"train.seeds={seeds}",
                                                            "runtime.progress=false", "runtime.engine=torch",
                                                            *sets])
    check_config(config)
    return compare_heads(data, run, config, progress=False)


def variant_name(sets: list[str]) -> str:
    """The run folder suffix of the extra overrides: "" for none, else "@key=value,..."."""
    return "@" + ",".join(s.replace("/", "_") for s in sets) if sets else ""


def summary(metrics: dict, head: str) -> dict:
    m = metrics["models"][head]
    per_seed = [round(100 * a, 1) for a in m["accuracy_per_seed"]]
    n = int(metrics["dataset"]["counts"]["test"])
    k = round(sum(m["accuracy_per_seed"]) * n)          # correct predictions over all seeds
    lo, hi = wilson(k, n * len(per_seed))
    return {"per_seed": per_seed, "mean": round(sum(per_seed) / len(per_seed), 1),
            "pooled_ci95": [round(lo, 1), round(hi, 1)], "test_videos": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "videoseq-streams")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--videos-per-class", type=int, default=None, metavar="N",
                    help="generate every task with N videos per class instead of its size in TASKS")
    ap.add_argument("--generate-seed", type=int, default=None, metavar="S",
                    help="generate every task with seed S instead of its seed in TASKS (new videos: a held-out "
                         "check of what was developed on the usual ones)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="another config override for every run (repeatable), e.g. model.per_stream=false; "
                         "runs go to folders named after them")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--no-write", action="store_true", help="do not write the figures file")
    ap.add_argument("--out", type=Path, default=FIGURES,
                    help=f"figures file to (over)write (default {FIGURES.relative_to(ROOT)})")
    args = ap.parse_args()
    os.chdir(ROOT)
    import videoseq
    from videoseq.synthetic.generate import generate_dataset

    tasks = [t for t in args.tasks.split(",") if t]
    sets = [s for s in args.sets.split(",") if s]
    results: dict[str, dict[str, dict]] = {}
    for task in tasks:
        vpc, seed = task_size(task, args.videos_per_class, args.generate_seed)
        data = args.data / "data" / f"{task}-{vpc}-s{seed}"
        generate_dataset(data, task=task, videos_per_class=vpc, seed=seed, progress=False)
        for motion in sets:
            t0 = time.time()
            run = args.data / "runs" / f"{task}-{vpc}-s{seed}" / (motion + variant_name(args.overrides))
            metrics = run_one(data, run, motion, args.seeds, args.overrides)
            row = {h: summary(metrics, h) for h in ("per_frame", "lstm")}
            row["seconds"] = round(time.time() - t0, 1)
            results.setdefault(task, {})[motion] = row
            print(f"{task:18s} {motion:38s} per_frame {row['per_frame']['per_seed']} "
                  f"lstm {row['lstm']['per_seed']} ({row['seconds']} s)", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    if not args.no_write:
        write_figures(results, tasks, sets, args)
    del videoseq
    return 0


def _shown(path: Path) -> str:
    """`path` relative to the repository root when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def write_figures(results: dict, tasks: list[str], sets: list[str], args) -> None:
    """The ablation as markdown: one table per task, a row per stream set."""
    from videoseq.io.atomic import atomic_write_text

    load = os.getloadavg()[0]
    lines = ["# Temporal streams: ablation on the real-footage tasks (written by benchmarks/streams.py)", "",
             f"`.venv/bin/python benchmarks/streams.py --tasks {','.join(tasks)} --sets {','.join(sets)}"
             + "".join(f" --set {o}" for o in args.overrides)
             + (f" --videos-per-class {args.videos_per_class}" if args.videos_per_class else "")
             + (f" --generate-seed {args.generate_seed}" if args.generate_seed is not None else "")
             + (f" --out {_shown(args.out)}`" if args.out != FIGURES else "`"), "",
             f"{datetime.now(timezone.utc):%Y-%m-%d}, {os.cpu_count()} cores, load {load:.1f} at the end "
             "(runs already finished under DATA/runs are reused). configs/default.yaml, "
             f"`--seeds {args.seeds}`, `--set model.motion=SET runtime.engine=torch`"
             + "".join(f" `{o}`" for o in args.overrides) + "; test accuracy (%) per "
             "seed, the mean, and the 95% Wilson interval "
             "of all seeds' test predictions pooled. per_frame never reads a stream: its rows differ only "
             "by training noise.", ""]
    for task in tasks:
        vpc, seed = task_size(task, args.videos_per_class, args.generate_seed)
        n = next(iter(results[task].values()))["lstm"]["test_videos"]
        lines += [f"## {task} ({vpc} videos per class, generate seed {seed}, {n} test videos)", "",
                  "| model.motion | per_frame per seed | mean [95% CI] | lstm per seed | mean [95% CI] |",
                  "|---|---|---|---|---|"]
        for motion in sets:
            r = results[task].get(motion)
            if r is None:
                continue
            pf, ls = r["per_frame"], r["lstm"]
            lines.append(f"| {motion} | {' / '.join(map(str, pf['per_seed']))} | {pf['mean']} "
                         f"[{pf['pooled_ci95'][0]}, {pf['pooled_ci95'][1]}] | "
                         f"{' / '.join(map(str, ls['per_seed']))} | **{ls['mean']}** "
                         f"[{ls['pooled_ci95'][0]}, {ls['pooled_ci95'][1]}] |")
        lines.append("")
    atomic_write_text(args.out, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
