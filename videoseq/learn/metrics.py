"""Classification metrics and the statistics that compare two heads on the same test videos.

Pure numpy (no scipy import: it costs seconds): every function takes arrays of labels, predictions or per-video correctness.

    acc, (lo, hi) = accuracy(y, pred), wilson_interval(int((y == pred).sum()), len(y))
    p = mcnemar_exact(correct_a, correct_b)
    delta, (lo, hi) = paired_bootstrap(correct_a, correct_b, resamples=2000, seed=0)

Conventions: a "correct" array is `(N,)` bool per test video, or `(S, N)` for S seeds of one head on
the same N videos. A comparison's delta is accuracy(b) - accuracy(a) (b = the model with memory).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np


class PairComparison(NamedTuple):
    """Head `b` against head `a` on the same test videos: the accuracy difference, its paired bootstrap
    interval and the McNemar p-values."""

    a: str
    b: str
    delta: float                      # accuracy(b) - accuracy(a), in [−1, 1]
    delta_ci95: tuple[float, float]   # paired bootstrap over test videos
    mcnemar_p: float                  # exact two-sided; with several seeds the largest (most cautious) p
    mcnemar_p_per_seed: list[float]

    def to_json(self) -> dict:
        """A JSON-able dict of every field."""
        return {"a": self.a, "b": self.b, "delta": self.delta, "delta_ci95": list(self.delta_ci95),
                "mcnemar_p": self.mcnemar_p, "mcnemar_p_per_seed": self.mcnemar_p_per_seed}


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of videos whose predicted class equals the label; y, pred (N,) int."""
    y, pred = np.asarray(y), np.asarray(pred)
    if y.shape != pred.shape:
        raise ValueError(f"labels {y.shape} and predictions {pred.shape} differ in shape")
    return float((y == pred).mean()) if y.size else float("nan")


def wilson_interval(correct: int, n: int, *, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion `correct / n` (sane at 0% and 100%, unlike Wald)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def mean_class_accuracy(y: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Recall averaged over the classes present in y (balanced accuracy)."""
    cm = confusion_matrix(y, pred, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(cm)[present] / support[present]).mean())


def top_k_accuracy(y: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Fraction of videos whose label is among the k highest scores; scores (N, C) logits or probs."""
    y, scores = np.asarray(y), np.asarray(scores)
    k = min(k, scores.shape[1])
    topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]   # (N, k)
    return float((topk == y[:, None]).any(axis=1).mean()) if y.size else float("nan")


def confusion_matrix(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int counts: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def frame_accuracy(y: np.ndarray, step_logprobs: np.ndarray, mask: np.ndarray) -> float:
    """Accuracy of each valid frame's own prediction (per_frame head); step_logprobs (N, T, C), mask (N, T)."""
    pred = step_logprobs.argmax(axis=2)                     # (N, T)
    hits = (pred == np.asarray(y)[:, None]) & mask
    return float(hits.sum() / max(1, mask.sum()))


def accuracy_over_frames_seen(y: np.ndarray, step_logprobs: np.ndarray, mask: np.ndarray, *,
                              cumulative_mean: bool) -> np.ndarray:
    """(T,) accuracy of the belief after the model has seen t+1 frames.

    Recurrent and causal heads already give a belief per step (`cumulative_mean=False`). A per-frame
    head gives each frame's own prediction; its belief after t frames is the mean of the first t
    log-probabilities (`cumulative_mean=True`), exactly what it outputs on a video of t frames.
    Steps past a video's last valid frame keep the belief of its last valid frame.
    """
    steps = np.asarray(step_logprobs, dtype=np.float64)     # (N, T, C)
    mask = np.asarray(mask, dtype=bool)                      # (N, T)
    n, t, _ = steps.shape
    if cumulative_mean:
        m = mask[:, :, None]
        steps = np.cumsum(np.where(m, steps, 0.0), axis=1) / np.maximum(np.cumsum(m, axis=1), 1)
    last_valid = np.maximum.accumulate(np.where(mask, np.arange(t)[None, :], 0), axis=1)  # (N, T)
    belief = np.take_along_axis(steps, last_valid[:, :, None], axis=1)    # (N, T, C)
    return (belief.argmax(axis=2) == np.asarray(y)[:, None]).mean(axis=0)


COVERAGE_THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)   # min_score values of metrics.json "coverage"


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, C) logits -> (N, C) float64 probabilities (rows sum to 1), as `infer.predict` computes them."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def coverage_curve(y: np.ndarray, probs: np.ndarray, thresholds: Sequence[float] = COVERAGE_THRESHOLDS
                   ) -> list[tuple[float, float, float]]:
    """The accuracy/coverage trade-off of abstaining (`infer.predict.abstain`): for each threshold P,
    (P, coverage, accuracy on the covered videos). A video is covered when its top probability is
    >= P (below P it would be reported as "unknown"); coverage is the covered fraction, accuracy the
    fraction of covered videos whose most probable class is the label (nan when none is covered).

    y (N,) int labels, probs (N, C) probabilities; the most probable class is the first maximum."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != y.shape[0]:
        raise ValueError(f"labels {y.shape} and probabilities {probs.shape} do not match")
    top, correct = probs.max(axis=1), probs.argmax(axis=1) == y        # (N,), (N,)
    out = []
    for p in thresholds:
        covered = top >= p
        n = int(covered.sum())
        acc = float(correct[covered].sum() / n) if n else float("nan")
        out.append((float(p), float(n / y.size) if y.size else float("nan"), acc))
    return out


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value: a binomial test on the videos where exactly one model is right."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))   # exact integers
    return float(min(1.0, 2 * tail / 2 ** n))


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, *, resamples: int = 2000,
                     seed: int = 0) -> tuple[float, tuple[float, float]]:
    """accuracy(b) - accuracy(a) and its 95% percentile interval, resampling test videos in pairs.

    correct_*: (N,) or (S, N) bool. With seeds, a resample draws videos and keeps all seeds of each,
    so the interval reflects the size of the test set, not only seed noise.
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=np.float64))   # (S, N)
    b = np.atleast_2d(np.asarray(correct_b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    per_video = (b - a).mean(axis=0)                               # (N,) mean over seeds
    n = per_video.size
    delta = float(per_video.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    boots = per_video[idx].mean(axis=1)                            # (resamples,)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return delta, (float(lo), float(hi))


def compare_pair(a: str, b: str, correct_a: np.ndarray, correct_b: np.ndarray, *,
                 resamples: int = 2000, seed: int = 0) -> PairComparison:
    """Everything `metrics.json` says about one pair of heads; correct_* (S, N) bool, same videos and seeds."""
    ca = np.atleast_2d(np.asarray(correct_a, dtype=bool))
    cb = np.atleast_2d(np.asarray(correct_b, dtype=bool))
    delta, ci = paired_bootstrap(ca, cb, resamples=resamples, seed=seed)
    per_seed = [mcnemar_exact(x, y) for x, y in zip(ca, cb)]
    return PairComparison(a, b, delta, ci, max(per_seed), per_seed)


def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean and spread of one metric over seeds (std is 0.0 for a single seed)."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def verdict(comparison: PairComparison, *, alpha: float = 0.05) -> str:
    """One plain-words sentence: does b beat a, lose to it, or is there no measurable difference?"""
    pts = 100 * comparison.delta
    lo, hi = (100 * x for x in comparison.delta_ci95)
    p = comparison.mcnemar_p
    p_txt = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    ci_txt = f"[95% CI {lo:+.0f} to {hi:+.0f}]"
    if p < alpha and lo > 0:
        why = " — memory over time helps on this data" if comparison.a == "per_frame" else ""
        return f"{comparison.b} beats {comparison.a}: {pts:+.0f} points {ci_txt}, McNemar {p_txt}{why}."
    if p < alpha and hi < 0:
        why = " — the per-frame baseline is the better choice here" if comparison.a == "per_frame" else ""
        return f"{comparison.b} is worse than {comparison.a}: {pts:+.0f} points {ci_txt}, McNemar {p_txt}{why}."
    if lo > 0 or hi < 0:   # the bootstrap interval excludes 0 but the exact test does not reject
        lead = f"{comparison.b} ahead of {comparison.a}" if pts > 0 else f"{comparison.b} behind {comparison.a}"
        return (f"inconclusive: {lead} by {abs(pts):.0f} points {ci_txt}, but McNemar {p_txt}; "
                f"more test videos would settle it.")
    return (f"no measurable difference between {comparison.b} and {comparison.a}: {pts:+.0f} points "
            f"{ci_txt}, McNemar {p_txt}.")
