"""Figures of a compare run, built on `matplotlib.figure.Figure` and returned; PNGs written atomically.

    fig = learning_curves(histories, "runs/x/plots/learning_curves.png")   # saved, and returned
    fig = learning_curves(histories)                                       # returned only (notebooks)

No pyplot and no backend switch: a figure renders through its own Agg canvas when saved, so importing
this module or drawing with it leaves matplotlib's global backend (a notebook's inline one) untouched,
and no figure is left registered with pyplot.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from videoseq.io.atomic import atomic_write_bytes

DPI = 110                          # of the saved PNGs


def save_png(fig: Figure, path: str | Path, *, dpi: float | None = DPI) -> Path:
    """Write `fig` as a PNG to `path`, atomically (a tight bounding box); return the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")   # Agg canvas for this call only
    return atomic_write_bytes(Path(path), buf.getvalue())


def _colours(names: Sequence[str]) -> dict[str, tuple]:
    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def learning_curves(histories: Mapping[str, Sequence[Sequence[dict]]],
                    path: str | Path | None = None) -> Figure:
    """Training/validation loss and validation accuracy per epoch, all heads on one figure; saved to
    `path` as a PNG when given. Returns the figure.

    histories: head -> one list of epoch rows per seed (rows as in `FitResult.history`).
    """
    colours = _colours(list(histories))
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for head, seeds in histories.items():
        for k, rows in enumerate(seeds):
            epochs = [r["epoch"] for r in rows]
            label = head if k == 0 else None
            ax_loss.plot(epochs, [r["train_loss"] for r in rows], "--", color=colours[head], alpha=0.6, lw=1)
            ax_loss.plot(epochs, [r["val_loss"] for r in rows], "-", color=colours[head], label=label, lw=1.5)
            ax_acc.plot(epochs, [100 * r["val_accuracy"] for r in rows], "-", color=colours[head],
                        label=label, lw=1.5)
    ax_loss.set(xlabel="epoch", ylabel="loss (dashed: train, solid: validation)", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", ylim=(0, 102), title="Validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if path is not None:
        save_png(fig, path)
    return fig


def confusion_matrices(confusions: Mapping[str, np.ndarray], classes: Sequence[str],
                       path: str | Path | None = None) -> Figure:
    """Row-normalised test confusion matrices side by side, counts written in the cells; saved to
    `path` as a PNG when given. Returns the figure.

    confusions: head -> (C, C) counts, rows true classes, columns predicted ones.
    """
    n = len(confusions)
    side = max(3.2, 0.45 * len(classes) + 1.8)
    fig = Figure(figsize=(side * n, side), layout="constrained")   # long class names never overlap
    axes = fig.subplots(1, n, squeeze=False)
    for ax, (head, cm) in zip(axes[0], confusions.items()):
        cm = np.asarray(cm)                                    # (C, C) counts
        rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, classes, fontsize=8)
        ax.set(xlabel="predicted", ylabel="true", title=head)
        if len(classes) <= 12:
            for i in ticks:
                for j in ticks:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    if path is not None:
        save_png(fig, path)
    return fig


def accuracy_over_frames(curves: Mapping[str, np.ndarray], path: str | Path | None = None, *,
                         chance: float) -> Figure:
    """Test accuracy of each head's belief after it has seen 1..T frames; saved to `path` as a PNG
    when given. Returns the figure.

    curves: head -> (T,) accuracies in [0, 1].
    """
    colours = _colours(list(curves))
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for head, curve in curves.items():
        curve = np.asarray(curve)                              # (T,)
        ax.plot(np.arange(1, len(curve) + 1), 100 * curve, "o-", ms=3, color=colours[head], label=head)
    ax.axhline(100 * chance, color="grey", ls=":", lw=1, label="chance")
    ax.set(xlabel="frames seen", ylabel="test accuracy (%)", ylim=(0, 102),
           title="Accuracy as the model sees more frames")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if path is not None:
        save_png(fig, path)
    return fig


def coverage_curves(curves: Mapping[str, Sequence[Mapping[str, float | None]]],
                    path: str | Path | None = None) -> Figure:
    """Test accuracy on the videos a head still labels against the share it labels (coverage), one
    point per `--min-score` threshold (written beside it); saved to `path` as a PNG when given.
    Returns the figure.

    curves: head -> rows {"min_score", "coverage", "accuracy"} as in metrics.json's "coverage"
    (accuracy None where no video is covered: no point).
    """
    colours = _colours(list(curves))
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for head, rows in curves.items():
        pts = [(100 * r["coverage"], 100 * r["accuracy"], r["min_score"]) for r in rows
               if r["accuracy"] is not None]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, color=colours[head], label=head)
        for x, y, p in pts:
            ax.annotate(f"{p:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6,
                        color=colours[head])
    ax.set(xlabel="coverage: test videos labelled (%)", ylabel="accuracy on them (%)",
           xlim=(-2, 107), ylim=(0, 106), title="Abstaining below a min score (points: min score)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if path is not None:
        save_png(fig, path)
    return fig
