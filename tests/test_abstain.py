"""Abstaining below a min score: `infer.predict.abstain` on hand-made predictions, `metrics.coverage_curve`
on hand-made arrays (exact numbers), and a compare run's accuracy/coverage table, plot and metrics key."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from videoseq.infer.predict import UNKNOWN, FailedInput, Prediction, abstain
from videoseq.learn.metrics import COVERAGE_THRESHOLDS, coverage_curve, softmax

from test_compare import TINY, tiny_root  # noqa: F401  (fixture: a tiny generated direction dataset)


def prediction(probs: dict[str, float]) -> Prediction:
    label = max(probs, key=probs.get)
    return Prediction(path="v.mp4", label=label, score=probs[label], probs=probs, head="lstm", frames=4,
                      seconds=0.1, steps=np.full((4, len(probs)), 1 / len(probs)),
                      indices=np.arange(4), thumbnails=None)


def test_abstain_relabels_only_below_the_min_score() -> None:
    pred = prediction({"left": 0.6, "right": 0.3, "up": 0.1})
    unsure = abstain(pred, 0.7)
    assert unsure.label == UNKNOWN == "unknown"
    assert unsure.score == 0.6 and unsure.probs == pred.probs and unsure.top(2) == pred.top(2)
    assert unsure.steps is pred.steps and unsure.head == "lstm"
    assert unsure.to_json() == {**pred.to_json(), "label": "unknown"}
    assert pred.label == "left"                                  # the original is left as it was
    for kept in (0.0, 0.5, 0.6):                                 # a score equal to the min score is kept
        assert abstain(pred, kept) == pred
    failed = FailedInput("broken.mp4", "cannot open")
    assert abstain(failed, 0.9) is failed
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="min_score"):
            abstain(pred, bad)


def test_coverage_curve_exact_numbers() -> None:
    y = np.array([0, 1, 2, 0, 1])
    probs = np.array([[0.9, 0.05, 0.05],       # top 0.9, right
                      [0.6, 0.3, 0.1],         # top 0.6, wrong (says 0)
                      [0.2, 0.2, 0.6],         # top 0.6, right
                      [0.4, 0.35, 0.25],       # top 0.4, right
                      [0.1, 0.85, 0.05]])      # top 0.85, right
    curve = coverage_curve(y, probs, [0.0, 0.5, 0.6, 0.7, 0.9, 0.95])
    assert curve[:5] == [(0.0, 1.0, 0.8), (0.5, 0.8, 0.75), (0.6, 0.8, 0.75), (0.7, 0.4, 1.0),
                         (0.9, 0.2, 1.0)]
    p, c, a = curve[5]
    assert (p, c) == (0.95, 0.0) and math.isnan(a)               # nothing covered: no accuracy
    # a tie is the first class, as infer.predict's argmax
    assert coverage_curve(np.array([1]), np.array([[0.5, 0.5]]), [0.0]) == [(0.0, 1.0, 0.0)]
    assert [t for t, _, _ in coverage_curve(y, probs)] == list(COVERAGE_THRESHOLDS)
    with pytest.raises(ValueError):
        coverage_curve(y, probs[:3])
    assert np.allclose(softmax(np.array([[0.0, math.log(3.0)]])), [[0.25, 0.75]])


def test_compare_writes_the_coverage_table_plot_and_metrics(tiny_root, tmp_path) -> None:  # noqa: F811
    from videoseq.config import load_config
    from videoseq.learn.compare import compare_heads

    cfg = load_config(overrides=TINY + ["train.seeds=2", "compare.heads=[per_frame,lstm]",
                                        f"runtime.cache_dir={tmp_path / 'cache'}"])
    metrics = compare_heads(tiny_root, tmp_path / "run", cfg, progress=False)
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for head, m in on_disk["models"].items():
        rows = m["coverage"]
        assert [r["min_score"] for r in rows] == list(COVERAGE_THRESHOLDS)
        assert set(rows[0]) == {"min_score", "coverage", "accuracy"}
        assert rows[0]["coverage"] == 1.0
        assert rows[0]["accuracy"] == pytest.approx(m["accuracy"])   # seeds pooled = mean over seeds
        covered = [r["coverage"] for r in rows]
        assert covered == sorted(covered, reverse=True), head
        for r in rows:
            assert 0 <= r["coverage"] <= 1
            assert (r["accuracy"] is None) == (r["coverage"] == 0)
            assert r["accuracy"] is None or 0 <= r["accuracy"] <= 1
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Abstaining: accuracy against coverage" in report
    assert "| min score | per_frame: labelled | per_frame: accuracy | lstm: labelled | lstm: accuracy |" in report
    assert "| 0.95 | " in report and "![accuracy against coverage](plots/coverage.png)" in report
    assert (tmp_path / "run" / "plots" / "coverage.png").stat().st_size > 1000


def test_classify_min_score_and_the_api_report_unknown_with_the_scores(tmp_path, capsys) -> None:
    """`classify --min-score 1` (an untrained model is never that sure): every label "unknown", the
    probabilities the same as without it; `Model.predict(min_score=...)` alike; a bad P is exit 2."""
    import videoseq
    from media import write_opencv
    from test_bundle import make_bundle
    from videoseq.cli import main

    bundle = make_bundle(tmp_path / "bundle")
    video = str(write_opencv(tmp_path / "v.mp4", count=8, width=48, height=40))

    def record(*extra: str) -> dict:
        assert main(["classify", video, "--model", str(bundle), "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    sure, unsure = record(), record("--min-score", "1")
    assert unsure["label"] == "unknown" and sure["label"] != "unknown"
    assert unsure["probs"] == sure["probs"] and unsure["score"] == sure["score"]
    model = videoseq.load(bundle)
    assert model.predict(video, min_score=1.0).label == "unknown"
    assert model.predict(video).label == sure["label"]
    assert main(["classify", video, "--model", str(bundle), "--min-score", "1.5"]) == 2
