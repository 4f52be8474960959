"""The run directory of a compare: metrics.json (docs/design.md schema), report.md, plots/, models/.

`summarise` turns the trained runs into the metrics dict; `write_run` writes everything, with
metrics.json last, so its presence means the run is complete. `compare_heads` has it write into a
staging folder that is then swapped into RUN_DIR whole (learn/compare.py).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from videoseq.learn import metrics as M
from videoseq.io.atomic import atomic_write_json, atomic_write_text
from videoseq.config import Config

if TYPE_CHECKING:
    from videoseq.learn.prepare import Data
    from videoseq.learn.runs import HeadRun

log = logging.getLogger(__name__)


def _head_metrics(runs: list["HeadRun"], classes: list[str]) -> dict:
    """One head over its seeds: means, interval, per-seed values, and extras the report uses."""
    c = len(classes)
    accs, mcas, frames, val_accs, top2, curves = [], [], [], [], [], []
    confusion = np.zeros((c, c), dtype=np.int64)
    per_frame = runs[0].head == "per_frame"
    for r in runs:
        y, pred = r.test.labels, r.test.logits.argmax(1)
        accs.append(M.accuracy(y, pred))
        mcas.append(M.mean_class_accuracy(y, pred, c))
        top2.append(M.top_k_accuracy(y, r.test.logits, 2))
        confusion += M.confusion_matrix(y, pred, c)
        val_accs.append(r.fit.best_val_accuracy)
        if per_frame:
            frames.append(M.frame_accuracy(y, r.test.steps, r.test.mask))
        curves.append(M.accuracy_over_frames_seen(y, r.test.steps, r.test.mask, cumulative_mean=per_frame))
    n = len(runs[0].test.labels)
    acc = float(np.mean(accs))
    best = int(np.argmax(val_accs))          # first seed wins ties
    out = {
        "accuracy": acc,
        "accuracy_ci95": list(M.wilson_interval(round(acc * n), n)),
        "mean_class_accuracy": float(np.mean(mcas)),
        "frame_accuracy": float(np.mean(frames)) if frames else None,
        "confusion": confusion.tolist(),      # summed over seeds
        "train_seconds": float(sum(r.fit.seconds for r in runs)),
        "seeds": [r.seed for r in runs],
        "accuracy_per_seed": accs,
        # extras
        "accuracy_std": M.seed_summary(accs)["std"],
        "val_accuracy": float(val_accs[best]),
        "val_accuracy_per_seed": [float(v) for v in val_accs],
        "best_seed": runs[best].seed,
        "epochs_per_seed": [len(r.fit.history) for r in runs],
        "best_epoch_per_seed": [r.fit.best_epoch for r in runs],
        "accuracy_over_frames": np.mean(curves, axis=0).tolist(),
        "bundle": f"models/{runs[0].head}",
        "coverage": _coverage(runs),
    }
    if c > 2:
        out["top2_accuracy"] = float(np.mean(top2))
    return out


def _coverage(runs: list["HeadRun"]) -> list[dict]:
    """metrics.json "coverage": abstaining below each min score, on the test predictions of every seed
    pooled (S x N videos; at min score 0 the accuracy is the mean over seeds, `accuracy`)."""
    y = np.concatenate([r.test.labels for r in runs])                        # (S * N,)
    probs = np.concatenate([M.softmax(r.test.logits) for r in runs])         # (S * N, C)
    return [{"min_score": p, "coverage": c, "accuracy": None if math.isnan(a) else a}
            for p, c, a in M.coverage_curve(y, probs)]


def summarise(data: "Data", runs: dict[str, list["HeadRun"]], config: Config, *, seconds: float) -> dict:
    """The metrics.json content (docs/design.md schema plus extra keys)."""
    index = data.index
    counts = {s: sum(index.counts().get(s, {}).values()) for s in ("train", "val", "test")}
    models = {head: _head_metrics(rs, data.classes) for head, rs in runs.items()}
    heads = list(runs)
    comparisons = []
    for i, a in enumerate(heads):
        for b in heads[i + 1:]:
            ca = np.stack([r.test.logits.argmax(1) == r.test.labels for r in runs[a]])   # (S, N)
            cb = np.stack([r.test.logits.argmax(1) == r.test.labels for r in runs[b]])
            comparisons.append(M.compare_pair(a, b, ca, cb, resamples=config.compare.bootstrap,
                                              seed=config.train.seed).to_json())
    return {
        "dataset": {"root": str(index.root), "classes": list(data.classes), "counts": counts,
                    "skipped": [{"path": e.path, "reason": e.status} for e in index.skipped()]},
        "models": models,
        "comparisons": comparisons,
        "encoder": {"name": config.model.encoder, "weights": config.model.weights,
                    "pooling": config.model.pooling, "mode": config.train.mode},
        "frames": config.sampling.frames,
        "seconds": seconds,
    }


def save_bundles(out: Path, data: "Data", runs: dict[str, list["HeadRun"]], config: Config,
                 metrics: dict) -> None:
    """models/<head>/: the seed with the best validation accuracy, as a bundle."""
    from videoseq.models.bundle import save_bundle
    from videoseq.learn.prepare import whole_model

    for head, rs in runs.items():
        m = metrics["models"][head]
        run = next(r for r in rs if r.seed == m["best_seed"])
        model = whole_model(data, config, run.model).cpu().eval()
        bundle_metrics = {"head": head, "seed": run.seed, "val_accuracy": m["val_accuracy"],
                          "test_accuracy": M.accuracy(run.test.labels, run.test.logits.argmax(1)),
                          "best_epoch": run.fit.best_epoch, "classes": data.classes}
        save_bundle(out / "models" / head, model=model, head=head, config=config, classes=data.classes,
                    metrics=bundle_metrics)


def write_plots(out: Path, runs: dict[str, list["HeadRun"]], metrics: dict) -> dict[str, str]:
    """Draw the run's plots into `out/plots/`; return plot name -> path relative to `out`."""
    from videoseq.learn import plots

    classes = metrics["dataset"]["classes"]
    files = {"learning_curves": "plots/learning_curves.png", "confusion": "plots/confusion.png",
             "frames_seen": "plots/accuracy_over_frames.png", "coverage": "plots/coverage.png"}
    plots.learning_curves({h: [r.fit.history for r in rs] for h, rs in runs.items()},
                          out / files["learning_curves"])
    plots.confusion_matrices({h: m["confusion"] for h, m in metrics["models"].items()}, classes,
                             out / files["confusion"])
    plots.accuracy_over_frames({h: m["accuracy_over_frames"] for h, m in metrics["models"].items()},
                               out / files["frames_seen"], chance=1 / len(classes))
    plots.coverage_curves({h: m["coverage"] for h, m in metrics["models"].items()}, out / files["coverage"])
    return files


def verdicts(metrics: dict) -> list[str]:
    """A plain-words sentence for each comparison against the baseline (the first head)."""
    heads = list(metrics["models"])
    out = []
    for c in metrics["comparisons"]:
        if c["a"] == heads[0]:
            out.append(M.verdict(M.PairComparison(c["a"], c["b"], c["delta"], tuple(c["delta_ci95"]),
                                                  c["mcnemar_p"], c["mcnemar_p_per_seed"])))
    return out


def table(metrics: dict) -> str:
    """The markdown comparison table (also printed by `videoseq compare`)."""
    seeds = len(next(iter(metrics["models"].values()))["seeds"])
    rows = ["| head | test accuracy [95% CI] | mean class acc. | frame acc. | "
            + ("accuracy per seed (mean ± sd) | " if seeds > 1 else "") + "val acc. | train s |",
            "|---|---|---|---|" + ("---|" if seeds > 1 else "") + "---|---|"]
    for head, m in metrics["models"].items():
        lo, hi = m["accuracy_ci95"]
        fa = "–" if m["frame_accuracy"] is None else f"{100 * m['frame_accuracy']:.1f}%"
        spread = f"{100 * m['accuracy']:.1f} ± {100 * m['accuracy_std']:.1f} | " if seeds > 1 else ""
        rows.append(f"| {head} | {100 * m['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] | "
                    f"{100 * m['mean_class_accuracy']:.1f}% | {fa} | {spread}"
                    f"{100 * m['val_accuracy']:.1f}% | {m['train_seconds']:.1f} |")
    return "\n".join(rows)


def coverage_table(metrics: dict) -> str:
    """The markdown accuracy/coverage table of abstaining below each min score, a column pair per head
    ("" for metrics without "coverage")."""
    models = {h: m["coverage"] for h, m in metrics["models"].items() if m.get("coverage")}
    if not models:
        return ""
    rows = ["| min score | " + " | ".join(f"{h}: labelled | {h}: accuracy" for h in models) + " |",
            "|---:|" + "---:|---:|" * len(models)]
    for i, first in enumerate(next(iter(models.values()))):
        cells = []
        for curve in models.values():
            c, a = curve[i]["coverage"], curve[i]["accuracy"]
            cells.append(f"{100 * c:.1f}% | " + ("–" if a is None else f"{100 * a:.1f}%"))
        rows.append(f"| {first['min_score']:g} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def render_markdown(metrics: dict, plot_files: dict[str, str]) -> str:
    """report.md of a run: the verdict, the metrics table, the comparisons and the plots."""
    ds = metrics["dataset"]
    enc = metrics["encoder"]
    counts = ", ".join(f"{k} {v}" for k, v in ds["counts"].items())
    lines = [f"# Does memory over time help? `{Path(ds['root']).name}`", "",
             " ".join(verdicts(metrics)) or "Only one head was trained: nothing to compare.", "",
             table(metrics), "",
             f"Test accuracy with a 95% Wilson interval over {ds['counts']['test']} test videos; "
             "deltas with a paired bootstrap interval and McNemar's exact test on the same test videos. "
             f"Encoder `{enc['name']}` (weights {enc['weights']}, pooling {enc['pooling']}, mode {enc['mode']}), "
             f"{metrics['frames']} frames per video; {len(ds['classes'])} classes "
             f"(chance {100 / len(ds['classes']):.1f}%); videos: {counts}. Wall time {metrics['seconds']:.0f} s.",
             ""]
    if metrics["comparisons"]:
        lines += ["| a | b | b − a (points) [95% CI] | McNemar p |", "|---|---|---|---|"]
        for c in metrics["comparisons"]:
            lo, hi = c["delta_ci95"]
            lines.append(f"| {c['a']} | {c['b']} | {100 * c['delta']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] "
                         f"| {c['mcnemar_p']:.3g} |")
        lines.append("")
    coverage = coverage_table(metrics)
    if coverage:
        lines += ["## Abstaining: accuracy against coverage", "",
                  "With `videoseq classify --min-score P` (or `model.predict(video, min_score=P)`) a video "
                  "whose top probability is below P is reported as `unknown`, its scores still given. "
                  "Labelled: the share of test videos that keep a label; accuracy: on those (test "
                  "predictions of all seeds pooled; – where none is labelled).", "", coverage, ""]
    lines += ["## Plots", "", f"![learning curves]({plot_files['learning_curves']})", "",
              f"![accuracy over frames seen]({plot_files['frames_seen']})", "",
              f"![confusion matrices]({plot_files['confusion']})", ""]
    if "coverage" in plot_files:
        lines += [f"![accuracy against coverage]({plot_files['coverage']})", ""]
    if ds["skipped"]:
        lines += [f"## Skipped files ({len(ds['skipped'])})", ""]
        lines += [f"- `{s['path']}`: {s['reason']}" for s in ds["skipped"]]
        lines.append("")
    lines += ["Models: " + ", ".join(f"`{m['bundle']}`" for m in metrics["models"].values())
              + " (the seed with the best validation accuracy)."]
    return "\n".join(lines) + "\n"


def write_run(out: Path, *, data: "Data", runs: dict[str, list["HeadRun"]], config: Config,
              seconds: float, extra: dict | None = None) -> dict:
    """Write models/, plots/, report.md and finally metrics.json (with the `extra` keys); return the
    metrics."""
    metrics = {**summarise(data, runs, config, seconds=seconds), **(extra or {})}
    save_bundles(out, data, runs, config, metrics)
    plot_files = write_plots(out, runs, metrics)
    atomic_write_text(out / "report.md", render_markdown(metrics, plot_files))
    atomic_write_json(out / "metrics.json", metrics)
    log.info("wrote %s", out / "report.md")
    return metrics
