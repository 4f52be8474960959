"""metrics.py against hand-computed values and against scipy/statsmodels-style reference formulas."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from videoseq.learn import metrics


def test_accuracy_and_confusion_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    assert metrics.accuracy(y, pred) == pytest.approx(4 / 6)
    cm = metrics.confusion_matrix(y, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # recalls 1/2, 1, 1/2
    assert metrics.mean_class_accuracy(y, pred, 3) == pytest.approx((0.5 + 1 + 0.5) / 3)


def test_mean_class_accuracy_differs_from_accuracy_on_imbalance():
    y = np.array([0] * 9 + [1])
    pred = np.zeros(10, dtype=int)           # always class 0
    assert metrics.accuracy(y, pred) == pytest.approx(0.9)
    assert metrics.mean_class_accuracy(y, pred, 2) == pytest.approx(0.5)


def test_top_k():
    y = np.array([2, 0, 1])
    scores = np.array([[0.1, 0.5, 0.4],    # label 2 is 2nd
                       [0.9, 0.05, 0.05],  # label 0 is 1st
                       [0.6, 0.1, 0.3]])   # label 1 is 3rd
    assert metrics.top_k_accuracy(y, scores, 1) == pytest.approx(1 / 3)
    assert metrics.top_k_accuracy(y, scores, 2) == pytest.approx(2 / 3)
    assert metrics.top_k_accuracy(y, scores, 5) == pytest.approx(1.0)


def test_wilson_matches_reference_values():
    # Reference: Wilson (1927); e.g. 8/10 -> [0.4902, 0.9433], 0/10 -> [0, 0.2775], 10/10 -> [0.7225, 1]
    assert metrics.wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert metrics.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert metrics.wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    lo, hi = metrics.wilson_interval(500, 1000)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 1000), abs=2e-3)


def test_mcnemar_exact_matches_binomial_test():
    rng = np.random.default_rng(0)
    a = rng.random(60) < 0.5
    b = rng.random(60) < 0.8
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    ref = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert metrics.mcnemar_exact(a, b) == pytest.approx(ref)
    assert metrics.mcnemar_exact(a, a) == 1.0                       # no discordant pairs
    strong = metrics.mcnemar_exact(np.zeros(30, bool), np.ones(30, bool))
    assert strong == pytest.approx(2 * 0.5 ** 30)


def test_paired_bootstrap_interval_covers_delta_and_is_seeded():
    rng = np.random.default_rng(1)
    a = rng.random(200) < 0.3
    b = rng.random(200) < 0.9
    delta, (lo, hi) = metrics.paired_bootstrap(a, b, resamples=1000, seed=0)
    assert delta == pytest.approx(b.mean() - a.mean())
    assert lo < delta < hi and lo > 0.4
    assert metrics.paired_bootstrap(a, b, resamples=1000, seed=0) == (delta, (lo, hi))
    # identical models: a degenerate interval at zero
    d0, ci0 = metrics.paired_bootstrap(a, a, resamples=200)
    assert d0 == 0.0 and ci0 == (0.0, 0.0)


def test_paired_bootstrap_with_seeds_averages_seeds_per_video():
    a = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=bool)   # (S=2, N=4): 25%, 50%
    b = np.ones((2, 4), dtype=bool)
    delta, _ = metrics.paired_bootstrap(a, b, resamples=100)
    assert delta == pytest.approx(1 - 0.375)


def test_compare_pair_and_verdicts():
    n = 80
    a = np.zeros((1, n), bool)
    a[0, : n // 4] = True                      # 25%
    b = np.ones((1, n), bool)                  # 100%
    cmp_ = metrics.compare_pair("per_frame", "lstm", a, b, resamples=500)
    assert cmp_.delta == pytest.approx(0.75) and cmp_.mcnemar_p < 1e-6
    text = metrics.verdict(cmp_)
    assert text.startswith("lstm beats per_frame: +75 points") and "p < 0.001" in text
    assert "memory over time helps" in text
    same = metrics.compare_pair("per_frame", "lstm", b, b, resamples=100)
    assert metrics.verdict(same).startswith("no measurable difference")
    worse = metrics.compare_pair("per_frame", "lstm", b, a, resamples=500)
    assert "is worse than" in metrics.verdict(worse)
    assert cmp_.to_json()["delta_ci95"][0] > 0.6
    # 5 discordant pairs, all for b: the bootstrap interval excludes 0, McNemar p = 0.0625
    a5 = np.ones((1, 40), bool)
    a5[0, :5] = False
    close = metrics.compare_pair("per_frame", "lstm", a5, np.ones((1, 40), bool), resamples=2000)
    assert close.mcnemar_p == pytest.approx(0.0625) and close.delta_ci95[0] > 0
    assert metrics.verdict(close).startswith("inconclusive: lstm ahead of per_frame by 12 points")


def test_frame_accuracy_and_frames_seen_curve():
    y = np.array([0, 1])
    # (N=2, T=3, C=2) log-probs; video 1 has only 2 valid frames
    steps = np.log(np.array([
        [[0.9, 0.1], [0.4, 0.6], [0.8, 0.2]],
        [[0.3, 0.7], [0.2, 0.8], [0.9, 0.1]],
    ]))
    mask = np.array([[True, True, True], [True, True, False]])
    # valid frames right: v0: f0, f2; v1: f0, f1 -> 4/5
    assert metrics.frame_accuracy(y, steps, mask) == pytest.approx(4 / 5)
    causal = metrics.accuracy_over_frames_seen(y, steps, mask, cumulative_mean=False)
    assert causal.tolist() == [1.0, 0.5, 1.0]          # v1's padded step keeps its step-2 belief
    pooled = metrics.accuracy_over_frames_seen(y, steps, mask, cumulative_mean=True)
    assert pooled.tolist() == [1.0, 1.0, 1.0]          # mean of the first t frames
    assert metrics.seed_summary([0.5, 0.7])["mean"] == pytest.approx(0.6)
    assert metrics.seed_summary([0.5])["std"] == 0.0
