"""The timeline plot: what a model believed after each frame it read, over thumbnails of those frames.

    fig = plot_timeline("a.timeline.png", prediction, per_frame=per_frame_prediction)  # saved and returned
    fig = plot_timeline(None, prediction)                 # returned only (a notebook shows it)
    fig = plot_segment_timeline("a.segments.png", list(classify_segments("a.mp4", bundle, window=4, stride=2)))

Top: the sampled frames as thumbnails. Below: one line per class, the head's probability after each
step (a recurrent head's belief as it reads; per_frame: each frame's own prediction). When a per_frame
prediction of the same video is given too, its per-frame probabilities are drawn as dots in the same
colours, so one sees where memory over time changes the answer.

The figure is a plain `matplotlib.figure.Figure` (no pyplot, no backend switch: a notebook's inline
backend stays as it is), written through its own Agg canvas.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from videoseq.learn.plots import save_png

if TYPE_CHECKING:
    from videoseq.infer.predict import Prediction
    from videoseq.infer.segments import Segment

MAX_LINES = 8  # classes drawn: the most probable at any step, so 400-class models stay readable


def plot_timeline(dest: str | Path | None, prediction: "Prediction", *,
                  per_frame: "Prediction | None" = None) -> Figure:
    """The timeline figure of `prediction` (made with thumbnails=True for the strip of frames), written
    as a PNG to `dest` unless it is None. Returns the figure."""
    steps = np.asarray(prediction.steps)                 # (T, C) probabilities after each step
    classes = list(prediction.probs)
    t = steps.shape[0]
    shown = _classes_to_show(steps, per_frame)
    colours = colormaps["tab10"]

    plot_w = max(4.0, 0.5 * t)                            # inches for the plot area
    strip_h = min(1.2, plot_w / t)                         # square-ish thumbnails, one per step
    fig = Figure(figsize=(plot_w + 2.6, strip_h + 3.4), dpi=100)
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
    if dest is not None:
        save_png(fig, dest, dpi=None)                     # None: the figure's own dpi
    return fig


def _classes_to_show(steps: np.ndarray, per_frame: "Prediction | None") -> list[int]:
    """Indices of the classes that ever rank high, most probable at the last step first."""
    peak = steps.max(axis=0)
    if per_frame is not None:
        peak = np.maximum(peak, np.asarray(per_frame.steps).max(axis=0))
    order = sorted(np.argsort(-peak, kind="stable")[:MAX_LINES], key=lambda c: -steps[-1, c])
    return [int(c) for c in order]


def plot_segment_timeline(dest: str | Path | None, segments: "Sequence[Segment]", *,
                          title: str = "") -> Figure:
    """The timeline of a long video classified in segments (`infer.segments`), over its whole length:
    top, one bar per segment from its start to its end (overlapping segments on staggered rows) in
    its label's colour, with the label written on it; below, each class's probability per segment, a
    step over the segment's central stride. Written as a PNG to `dest` unless it is None; returned."""
    if not segments:
        raise ValueError("plot_segment_timeline: no segments to draw")
    classes = list(segments[0].probs)
    probs = np.array([[s.probs[c] for c in classes] for s in segments])   # (K, C)
    peak = probs.max(axis=0)                                                # (C,)
    shown = [int(c) for c in np.argsort(-peak, kind="stable")[:MAX_LINES]]
    colour_of = {c: colormaps["tab10"](n % 10) for n, c in enumerate(shown)}
    grey = (0.6, 0.6, 0.6, 1.0)
    starts = np.array([s.start for s in segments])                          # (K,) seconds
    ends = np.array([s.end for s in segments])                              # (K,)
    centres = (starts + ends) / 2
    step = float(np.median(np.diff(starts))) if len(segments) > 1 else float(ends[0] - starts[0])
    rows = max(1, min(6, int(np.ceil(np.median(ends - starts) / step - 1e-9)) if step > 0 else 1))

    total = float(ends.max())
    fig = Figure(figsize=(min(24.0, max(6.0, 0.25 * len(segments) + 4.0)), 2.0 + 0.3 * rows + 3.0), dpi=100)
    grid = fig.add_gridspec(2, 1, height_ratios=(0.3 * rows + 0.4, 3.0), hspace=0.08)
    ax = fig.add_subplot(grid[1])
    bars = fig.add_subplot(grid[0], sharex=ax)
    for n, s in enumerate(segments):
        c = classes.index(s.label)
        row = rows - 1 - n % rows
        bars.barh(row, s.end - s.start, left=s.start, height=0.8, color=colour_of.get(c, grey),
                  edgecolor="white", linewidth=0.5)
        bars.text((s.start + s.end) / 2, row, s.label, ha="center", va="center", fontsize=6, clip_on=True)
    bars.set_ylim(-0.5, rows - 0.5)
    bars.set_axis_off()
    bars.set_title(title or f"{len(segments)} segments", fontsize=10)

    half = step / 2
    for c in shown:                                   # each segment owns [centre - stride/2, centre + stride/2]
        xs = np.concatenate([[centres[0] - half], centres + half])
        ys = np.concatenate([probs[:, c], probs[-1:, c]])
        ax.step(xs, ys, where="post", color=colour_of[c], lw=2, label=classes[c])
    ax.set_xlim(0, total)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("probability")
    ax.set_xlabel("time (s): each segment's probabilities around its centre")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if dest is not None:
        save_png(fig, dest, dpi=None)
    return fig
