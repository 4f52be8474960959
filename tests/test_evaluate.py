"""`videoseq evaluate`: a bundle scored on a real tiny dataset, through the same path as classify."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from media import write_empty, write_opencv
from test_bundle import CLASSES, make_bundle

from videoseq.models.bundle import load_bundle
from videoseq.data.cache import FrameCache
from videoseq.data.plan import default_cache_dir
from videoseq.cli import main
from videoseq.infer.evaluation import evaluate_paths
from videoseq.infer.predict import classify_paths


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """root/{train,val,test}/<class>/*.mp4 with 2 test videos per class."""
    root = tmp_path_factory.mktemp("data")
    for split, n in (("train", 1), ("val", 1), ("test", 2)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                write_opencv(root / split / name / f"{name}{i}.mp4", count=8 + 4 * c + i,
                             width=40, height=40)
    return root


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "lstm", head="lstm", seed=3)


def test_evaluate_json_agrees_with_classify_exactly(dataset, bundle_dir, capsys) -> None:
    assert main(["evaluate", str(bundle_dir), str(dataset), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["n"] == 6 and result["classes"] == CLASSES
    confusion = np.array(result["confusion"])
    assert confusion.shape == (3, 3) and confusion.sum() == 6 and (confusion.sum(axis=1) == 2).all()
    assert result["accuracy"] == pytest.approx(np.trace(confusion) / 6)
    lo, hi = result["accuracy_ci95"]
    assert 0 <= lo <= result["accuracy"] <= hi <= 1 and hi - lo > 0.3       # 6 videos: a wide interval

    bundle = load_bundle(bundle_dir)
    paths = sorted(str(p) for p in (dataset / "test").rglob("*.mp4"))
    labels = [Path(p).parent.name for p in paths]
    cache = FrameCache(default_cache_dir(bundle.config.runtime) / "frames")   # filled by the CLI run
    assert all(cache.entry_path(p, bundle.config.sampling, size=bundle.size).exists() for p in paths)
    evaluated = evaluate_paths(bundle, paths, labels, cache=cache)
    alone = {p: next(classify_paths([p], bundle)) for p in paths}
    for pred in evaluated.predictions:
        assert pred.probs == alone[pred.path].probs          # bit-identical to classifying it alone
    hits = sum(alone[p].label == label for p, label in zip(paths, labels))
    assert result["accuracy"] == hits / 6


def test_evaluate_prints_accuracy_ci_and_confusion(dataset, bundle_dir, capsys) -> None:
    assert main(["evaluate", str(bundle_dir), str(dataset), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "val: 3 videos" in out and "95% CI" in out and "mean class accuracy" in out
    rows = out.splitlines()[-3:]
    assert [r.split()[0] for r in rows] == CLASSES and all(sum(map(int, r.split()[1:])) == 1 for r in rows)


def test_skipped_videos_are_reported(dataset, bundle_dir, tmp_path, capsys) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    write_empty(root / "test" / "left" / "broken.mp4")
    assert main(["evaluate", str(bundle_dir), str(root), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 6
    assert "broken.mp4" in captured.err and "skipped" in captured.err


def test_a_class_the_model_does_not_know_is_exit_2(dataset, tmp_path, capsys) -> None:
    other = make_bundle(tmp_path / "b", classes=["cat", "dog", "bird"])
    assert main(["evaluate", str(other), str(dataset)]) == 2
    err = capsys.readouterr().err
    assert "does not know class 'left'" in err and err.count("\n") == 1
