"""Figures of a compare run (matplotlib, Agg backend, PNG files written atomically)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from videoseq.io.atomic import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _colours(names: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def learning_curves(histories: Mapping[str, Sequence[Sequence[dict]]], path: str | Path) -> Path:
    """Training/validation loss and validation accuracy per epoch; all heads on one figure.

    histories: head -> one list of epoch rows per seed (rows as in `FitResult.history`).
    """
    colours = _colours(list(histories))
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
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
    return _save(fig, Path(path))


def confusion_matrices(confusions: Mapping[str, np.ndarray], classes: Sequence[str], path: str | Path) -> Path:
    """Row-normalised test confusion matrices side by side, counts written in the cells."""
    n = len(confusions)
    side = max(3.2, 0.45 * len(classes) + 1.8)
    fig, axes = plt.subplots(1, n, figsize=(side * n, side), squeeze=False)
    for ax, (head, cm) in zip(axes[0], confusions.items()):
        cm = np.asarray(cm)
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
    return _save(fig, Path(path))


def accuracy_over_frames(curves: Mapping[str, np.ndarray], path: str | Path, *, chance: float) -> Path:
    """Test accuracy of each head's belief after it has seen 1..T frames."""
    colours = _colours(list(curves))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for head, curve in curves.items():
        curve = np.asarray(curve)
        ax.plot(np.arange(1, len(curve) + 1), 100 * curve, "o-", ms=3, color=colours[head], label=head)
    ax.axhline(100 * chance, color="grey", ls=":", lw=1, label="chance")
    ax.set(xlabel="frames seen", ylabel="test accuracy (%)", ylim=(0, 102),
           title="Accuracy as the model sees more frames")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))
