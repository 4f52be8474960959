"""The timeline plot: what a model believed after each frame it read, over thumbnails of those frames.

    plot_timeline("a.timeline.png", prediction, per_frame=per_frame_prediction)

Top: the sampled frames as thumbnails. Below: one line per class, the head's probability after each
step (a recurrent head's belief as it reads; per_frame: each frame's own prediction). When a per_frame
prediction of the same video is given too, its per-frame probabilities are drawn as dots in the same
colours, so one sees where memory over time changes the answer.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from videoseq.io.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from videoseq.infer.predict import Prediction

MAX_LINES = 8  # classes drawn: the most probable at any step, so 400-class models stay readable


def plot_timeline(dest: str | Path, prediction: "Prediction", *,
                  per_frame: "Prediction | None" = None) -> Path:
    """Write the timeline PNG of `prediction` (made with thumbnails=True) to `dest`; returns the path."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.asarray(prediction.steps)                 # (T, C) probabilities after each step
    classes = list(prediction.probs)
    t = steps.shape[0]
    shown = _classes_to_show(steps, per_frame)
    colours = plt.get_cmap("tab10")

    plot_w = max(4.0, 0.5 * t)                            # inches for the plot area
    strip_h = min(1.2, plot_w / t)                         # square-ish thumbnails, one per step
    fig = plt.figure(figsize=(plot_w + 2.6, strip_h + 3.4), dpi=100)
    grid = fig.add_gridspec(2, 1, height_ratios=(strip_h, 3.0), hspace=0.05)
    ax = fig.add_subplot(grid[1])
    strip = fig.add_subplot(grid[0], sharex=ax)
    if prediction.thumbnails is not None:                 # (T, s, s, 3) -> one image, step k over x = k
        strip.imshow(np.concatenate(list(prediction.thumbnails), axis=1),
                     extent=(-0.5, t - 0.5, 0, 1), aspect="auto")
    strip.set_axis_off()
    strip.set_title(f"{Path(prediction.path).name}: {prediction.label} ({prediction.score:.2f}) "
                    f"by {prediction.head}", fontsize=10)

    x = np.arange(t)
    for n, c in enumerate(shown):
        colour = colours(n % 10)
        ax.plot(x, steps[:, c], "-", color=colour, lw=2, label=f"{classes[c]} ({prediction.head})")
        if per_frame is not None:
            ax.plot(x, np.asarray(per_frame.steps)[:, c], "o", color=colour, ms=4, alpha=0.6,
                    label=f"{classes[c]} (this frame alone)")
    ax.set_xlim(-0.5, t - 0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("probability")
    ax.set_xlabel("frame read (frame number in the video)")
    ax.set_xticks(x, [str(int(i)) for i in prediction.indices], fontsize=7,
                  rotation=90 if t > 24 else 0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(dest, buf.getvalue())


def _classes_to_show(steps: np.ndarray, per_frame: "Prediction | None") -> list[int]:
    """Indices of the classes that ever rank high, most probable at the last step first."""
    peak = steps.max(axis=0)
    if per_frame is not None:
        peak = np.maximum(peak, np.asarray(per_frame.steps).max(axis=0))
    order = sorted(np.argsort(-peak, kind="stable")[:MAX_LINES], key=lambda c: -steps[-1, c])
    return [int(c) for c in order]
