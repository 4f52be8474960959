"""Scoring a bundle on labelled videos: `videoseq evaluate`, through the one prediction path.

    result = evaluate_paths(bundle, paths, labels)
    result.accuracy, result.accuracy_ci95, result.confusion     # failures are listed, not scored

Every video goes through `predict.classify_paths`, so a video's result here is bit-identical to what
`videoseq classify` prints for it (same batch size).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np

from videoseq.config import INFERENCE_BATCH_SIZE
from videoseq.errors import VideoseqError
from videoseq.infer.predict import FailedInput, Prediction, classify_paths

if TYPE_CHECKING:
    from videoseq.models.bundle import Bundle
    from videoseq.data.cache import FrameCache


class Evaluation(NamedTuple):
    """The score of one bundle on labelled videos: accuracy with its Wilson interval, balanced accuracy,
    the confusion matrix, and every prediction and failure."""

    head: str
    classes: list[str]
    n: int                                 # videos predicted (failures excluded)
    accuracy: float
    accuracy_ci95: tuple[float, float]     # Wilson interval
    mean_class_accuracy: float
    confusion: np.ndarray                  # (C, C) int: row = true class, column = predicted
    predictions: list[Prediction]
    failed: list[FailedInput]

    def to_json(self) -> dict:
        """A JSON-able dict of the scores and the failures (the per-video predictions left out)."""
        return {"head": self.head, "classes": self.classes, "n": self.n, "accuracy": self.accuracy,
                "accuracy_ci95": list(self.accuracy_ci95),
                "mean_class_accuracy": self.mean_class_accuracy, "confusion": self.confusion.tolist(),
                "failed": [f.to_json() for f in self.failed]}


def evaluate_paths(bundle: "Bundle", paths: Sequence[str], labels: Sequence[str], *,
                   batch_size: int = INFERENCE_BATCH_SIZE, workers: int = 2,
                   cache: "FrameCache | None" = None) -> Evaluation:
    """Predict labelled videos through `classify_paths` and score them (metrics.py)."""
    from videoseq.learn.metrics import confusion_matrix, mean_class_accuracy, wilson_interval

    unknown = sorted(set(labels) - set(bundle.classes))
    if unknown:
        raise VideoseqError(f"{bundle.path}: the model does not know class {unknown[0]!r} "
                            f"(it has: {', '.join(bundle.classes)})")
    label_of = dict(zip(map(str, paths), labels))
    predictions, failed = [], []
    for result in classify_paths(paths, bundle, batch_size=batch_size, workers=workers, cache=cache):
        (predictions if isinstance(result, Prediction) else failed).append(result)
    index = {c: i for i, c in enumerate(bundle.classes)}
    y = np.array([index[label_of[p.path]] for p in predictions], dtype=np.int64)     # (N,)
    pred = np.array([index[p.label] for p in predictions], dtype=np.int64)           # (N,)
    correct = int((y == pred).sum())
    n = len(predictions)
    return Evaluation(head=bundle.head, classes=list(bundle.classes), n=n,
                      accuracy=correct / n if n else float("nan"),
                      accuracy_ci95=wilson_interval(correct, n),
                      mean_class_accuracy=mean_class_accuracy(y, pred, len(bundle.classes)),
                      confusion=confusion_matrix(y, pred, len(bundle.classes)),
                      predictions=predictions, failed=failed)
