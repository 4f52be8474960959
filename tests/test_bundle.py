"""Model bundles: a round trip rebuilds the same model; every broken bundle is one clear BundleError."""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from videoseq.models.bundle import choose_bundle, find_bundles, load_bundle, read_bundle_meta, save_bundle
from videoseq.config import Config, config_from_dict
from videoseq.errors import BundleError

CLASSES = ["left", "right", "still"]


def tiny_config(*, frames: int = 4, size: int = 32) -> Config:
    return config_from_dict({
        "model": {"encoder": "small_cnn", "weights": None, "pooling": "avg", "hidden": 8, "dropout": 0.0},
        "sampling": {"frames": frames, "size": size},
    })


def make_bundle(dest: Path, *, head: str = "lstm", classes: list[str] = CLASSES, seed: int = 0,
                config: Config | None = None, val_accuracy: float = 0.5) -> Path:
    """A real (untrained, seeded) small_cnn + head classifier saved as a bundle."""
    from videoseq.models.classifier import build_model

    config = config or tiny_config()
    torch.manual_seed(seed)
    model = build_model(config.model, head, len(classes))
    return save_bundle(dest, model=model, head=head, config=config, classes=classes,
                       metrics={"val_accuracy": val_accuracy, "epochs": 1})


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle")


def _edit_config(bundle: Path, **changes) -> None:
    meta = json.loads((bundle / "config.json").read_text())
    for dotted, value in changes.items():
        node = meta
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    (bundle / "config.json").write_text(json.dumps(meta))


def test_round_trip_rebuilds_the_same_model(bundle_dir: Path) -> None:
    from videoseq.models.classifier import build_model, fold_batchnorm

    assert sorted(p.name for p in bundle_dir.iterdir()) == ["config.json", "metrics.json", "model.pt"]
    assert [p.name for p in bundle_dir.parent.iterdir()] == ["bundle"]  # no temp folders left
    meta = read_bundle_meta(bundle_dir)
    assert meta["head"] == "lstm" and meta["classes"] == CLASSES
    assert meta["encoder"]["name"] == "small_cnn" and meta["sampling"] == {"frames": 4, "size": 32, "short": "repeat"}
    assert len(meta["encoder"]["mean"]) == 3 and meta["config"]["model"]["hidden"] == 8

    bundle = load_bundle(bundle_dir)
    assert (bundle.head, bundle.classes, bundle.size, bundle.frames) == ("lstm", CLASSES, 32, 4)
    assert bundle.val_accuracy == 0.5 and not bundle.model.training

    torch.manual_seed(0)  # the same seed rebuilds the same weights as make_bundle
    original = build_model(tiny_config().model, "lstm", 3).eval()
    x = torch.randn(2, 4, 3, 32, 32)                            # (B, T, 3, S, S)
    mask = torch.ones(2, 4, dtype=torch.bool)
    with torch.inference_mode():
        unfolded = original(x, mask)                                # (B, C)
        assert fold_batchnorm(original) == 4                        # small_cnn: 4 conv-BN blocks
        assert torch.equal(bundle.model(x, mask), original(x, mask))
        torch.testing.assert_close(bundle.model(x, mask), unfolded, atol=1e-6, rtol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bundle.model.modules())
    state = torch.load(bundle_dir / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_saving_again_replaces_the_bundle_atomically(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", seed=0)
    make_bundle(tmp_path / "b", head="gru", seed=1, classes=["a", "b"])
    assert load_bundle(tmp_path / "b").head == "gru"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_loading_never_uses_the_configured_weights(tmp_path: Path) -> None:
    """The config names weights that do not exist here; the bundle's state dict is all that is read."""
    cfg = tiny_config()
    from videoseq.models.classifier import build_model
    model = build_model(cfg.model, "gru", 3)
    cfg.model.weights = str(tmp_path / "nowhere" / "weights.pt")
    save_bundle(tmp_path / "b", model=model, head="gru", config=cfg, classes=CLASSES, metrics={})
    assert load_bundle(tmp_path / "b").head == "gru"


def test_run_folder_picks_the_best_validation_head(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_bundle(run / "models" / "per_frame", head="per_frame", val_accuracy=0.6)
    make_bundle(run / "models" / "lstm", head="lstm", val_accuracy=0.9)
    assert set(find_bundles(run)) == {"per_frame", "lstm"}
    assert choose_bundle(run) == run / "models" / "lstm"
    assert choose_bundle(run, head="per_frame") == run / "models" / "per_frame"
    assert load_bundle(run).head == "lstm"
    with pytest.raises(BundleError, match=r"no 'gru' model; it has: lstm, per_frame"):
        choose_bundle(run, head="gru")


def _unlink(p: Path) -> None:
    p.unlink()


def _write(p: Path, text: str) -> None:
    p.write_text(text)


def _corrupt_bytes(b: Path) -> None:
    (b / "model.pt").write_bytes(b"\x00garbage" * 50)


def _truncate_zip(b: Path) -> None:
    data = (b / "model.pt").read_bytes()
    (b / "model.pt").write_bytes(data[: len(data) // 2])


def _strings_not_tensors(b: Path) -> None:
    torch.save({"weights": "not a tensor"}, b / "model.pt")


BROKEN = [
    (lambda b: b.with_name("missing"), r"missing: no such model bundle"),
    (lambda b: b / "model.pt", r"not a model bundle \(expected a folder"),
    (lambda b: _unlink(b / "config.json") or b, r"not a model bundle \(missing config.json\)"),
    (lambda b: _write(b / "config.json", "{oops") or b, r"config.json is not valid JSON"),
    (lambda b: _corrupt_bytes(b) or b, r"model.pt: corrupt or not a torch file"),
    (lambda b: _truncate_zip(b) or b, r"model.pt: corrupt or not a torch file"),
    (lambda b: _strings_not_tensors(b) or b, r"model.pt: expected a state dict of tensors"),
    (lambda b: _edit_config(b, encoder__name="vit_huge") or b,
     r"unknown encoder 'vit_huge' in config.json; this videoseq has: .*small_cnn"),
    (lambda b: _edit_config(b, head="transformer") or b,
     r"unknown head 'transformer' in config.json; this videoseq has: .*lstm"),
    (lambda b: _edit_config(b, classes=CLASSES + ["extra"]) or b,
     r"config.json lists 4 classes but model.pt's \S+ has 3 outputs"),
    (lambda b: _edit_config(b, config__model__hidden=16) or b, r"model.pt's \S+ has shape"),
    (lambda b: _edit_config(b, format_version=99, videoseq_version="3.1.0") or b,
     r"bundle format 99 \(written by videoseq 3.1.0\) is not readable by videoseq"),
    (lambda b: _edit_config(b, videoseq_version="0.9.0") or b,
     r"written by videoseq 0.9.0, incompatible with videoseq 0.1"),
    (lambda b: _edit_config(b, format="something-else") or b, r"not a videoseq bundle config"),
]


@pytest.mark.parametrize("breaks, message", BROKEN, ids=[
    "missing", "file", "no-config", "bad-json", "garbage-model", "truncated-model", "not-tensors",
    "unknown-encoder", "unknown-head", "class-count", "head-size", "format-version", "library-version",
    "not-a-bundle-config"])
def test_broken_bundles_say_what_is_wrong(bundle_dir: Path, breaks, message: str) -> None:
    target = breaks(bundle_dir)
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(target)
    assert "\n" not in str(err.value) and str(target) in str(err.value)


class _Payload:
    """Unpickling this calls open(marker, "w"), i.e. creates the marker file: code that runs on load."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(bundle_dir: Path, tmp_path: Path) -> None:
    state = torch.load(bundle_dir / "model.pt", weights_only=True)
    probe = tmp_path / "probe-ran"
    torch.save({**state, "extra": _Payload(probe)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)  # the payload is real: unsafe loading runs it
    assert probe.exists()

    marker = tmp_path / "payload-ran"
    torch.save({**state, "extra": _Payload(marker)}, bundle_dir / "model.pt")
    assert zipfile.is_zipfile(bundle_dir / "model.pt")
    with pytest.raises(BundleError, match=r"refused to load: it holds objects other than tensors \(\S*open\)"):
        load_bundle(bundle_dir)
    assert not marker.exists()


def test_a_plain_pickle_is_refused_too(bundle_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    (bundle_dir / "model.pt").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(BundleError, match=r"model.pt: refused to load: .*\(\S*open\)"):
        load_bundle(bundle_dir)
    assert not marker.exists()


def test_a_bundle_written_by_videoseq_0_1_still_loads_and_predicts_the_same() -> None:
    """tests/fixtures/bundle-0.1-lstm was saved by videoseq 0.1 (flat module layout, small_cnn + motion
    stream + lstm); expected.json holds its probabilities on a seeded input, computed then."""
    fixture = Path(__file__).parent / "fixtures" / "bundle-0.1-lstm"
    expected = json.loads((fixture / "expected.json").read_text())
    bundle = load_bundle(fixture)
    assert bundle.head == "lstm" and bundle.classes == CLASSES and bundle.meta["videoseq_version"] == "0.1.0"
    frames = torch.rand(*expected["shape"], generator=torch.Generator().manual_seed(expected["seed"]))
    with torch.no_grad():
        probs = bundle.model(frames, None).softmax(-1)
    assert torch.allclose(probs, torch.tensor(expected["probs"]), atol=1e-5)


# --- kill-safety: a swap killed between its renames is undone by the next loader -------------------

class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no except clause for Exception catches it."""


def _kill_swap_between_renames(monkeypatch, dest: Path, replace) -> None:
    """Run `replace()` with the rename protocol (no renameat2 exchange), killed right after its first
    rename (old folder moved to .NAME.old, new one not yet in place)."""
    import os
    from videoseq.io import atomic

    real = os.replace

    def killed_after_first_rename(src, dst):
        if Path(dst) == dest:
            raise Killed()
        return real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(atomic, "exchange_paths", lambda a, b: False)
        m.setattr(atomic.os, "replace", killed_after_first_rename)
        with pytest.raises(Killed):
            replace()
    assert not dest.exists() and dest.with_name(f".{dest.name}.old").is_dir()


@pytest.mark.parametrize("loader", ["load_bundle", "read_bundle_meta", "find_bundles"])
def test_a_bundle_swap_killed_between_renames_is_undone_by_the_next_load(tmp_path, monkeypatch, loader):
    dest = make_bundle(tmp_path / "b", head="lstm")
    _kill_swap_between_renames(monkeypatch, dest, lambda: make_bundle(dest, head="gru", seed=1))
    loaded = {"load_bundle": lambda: load_bundle(dest).head, "read_bundle_meta": lambda: read_bundle_meta(dest)["head"],
              "find_bundles": lambda: next(iter(find_bundles(dest)))}[loader]()
    assert loaded == "lstm"                                          # the old bundle is back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_a_run_folder_swap_killed_between_renames_is_undone_by_the_next_load(tmp_path, monkeypatch):
    from videoseq.io.atomic import replace_dir

    run = tmp_path / "run"
    make_bundle(run / "models" / "lstm", head="lstm", val_accuracy=0.9)
    new = tmp_path / ".run.work" / "run"
    make_bundle(new / "models" / "gru", head="gru", val_accuracy=0.9)
    _kill_swap_between_renames(monkeypatch, run, lambda: replace_dir(new, run))
    assert load_bundle(run).head == "lstm" and choose_bundle(run) == run / "models" / "lstm"
    # a bundle inside a run folder, killed the same way, is back when the run folder is read
    lstm = run / "models" / "lstm"
    _kill_swap_between_renames(monkeypatch, lstm, lambda: make_bundle(lstm, head="lstm", seed=3))
    assert set(find_bundles(run)) == {"lstm"}


def test_save_bundle_never_replaces_a_folder_with_other_files(tmp_path: Path) -> None:
    from videoseq.errors import OutputError

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match=r"holds 'thesis.tex', which is not part of a model bundle"):
        make_bundle(mine)
    assert (mine / "thesis.tex").read_text() == "precious"


# --- hostile bundles and run folders: size limits, malformed JSON, paths outside the folder --------

def _sparse(file: Path, size: int) -> None:
    """A file that claims `size` bytes without using the disk (reading it all would need the memory)."""
    with file.open("r+b" if file.exists() else "wb") as f:
        f.truncate(size)


def test_a_huge_config_json_is_refused_before_it_is_read(bundle_dir: Path) -> None:
    from videoseq.models.bundle import MAX_CONFIG_BYTES

    _sparse(bundle_dir / "config.json", 8 << 30)                    # 8 GiB claimed
    with pytest.raises(BundleError, match=rf"config.json is over the {MAX_CONFIG_BYTES}-byte limit") as err:
        read_bundle_meta(bundle_dir)
    assert "\n" not in str(err.value) and str(bundle_dir) in str(err.value)


@pytest.mark.parametrize("content, message", [
    (None, r"metrics.json is over the \d+-byte limit"),
    ("{oops", r"metrics.json is not valid JSON"),
    ("[" * 100_000, r"metrics.json is not valid JSON"),
    ("\udcff", r"metrics.json is not valid JSON"),
    ("fifo", r"metrics.json is not a regular file"),
], ids=["huge", "malformed", "deeply-nested", "not-utf8", "fifo"])
def test_a_bundle_metrics_json_that_is_huge_or_malformed_is_one_line(bundle_dir: Path, content, message) -> None:
    import os

    file = bundle_dir / "metrics.json"
    if content is None:
        _sparse(file, 1 << 40)                                        # 1 TiB claimed
    elif content == "fifo":
        file.unlink()
        os.mkfifo(file)                                               # reading would block forever
    else:
        file.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(bundle_dir)
    assert "\n" not in str(err.value) and str(bundle_dir) in str(err.value)


def _run_with_metrics(tmp_path: Path, models: dict) -> Path:
    run = tmp_path / "run"
    make_bundle(run / "models" / "lstm", head="lstm", val_accuracy=0.9)
    (run / "metrics.json").write_text(json.dumps({"models": models}))
    return run


@pytest.mark.parametrize("bundle", ["../../etc", "/etc", "models/../../outside"])
def test_a_run_metrics_json_naming_a_bundle_outside_the_run_is_refused(tmp_path: Path, bundle: str) -> None:
    make_bundle(tmp_path / "outside", head="gru")
    run = _run_with_metrics(tmp_path, {"lstm": {"bundle": "models/lstm"}, "gru": {"bundle": bundle}})
    for load in (find_bundles, choose_bundle, load_bundle):
        with pytest.raises(BundleError, match=r"metrics.json names bundle .* for 'gru', which is not a path "
                                              r"inside the run folder") as err:
            load(run)
        assert "\n" not in str(err.value)


def test_a_run_bundle_linked_outside_the_run_is_refused(tmp_path: Path) -> None:
    outside = make_bundle(tmp_path / "outside", head="gru")
    run = _run_with_metrics(tmp_path, {"lstm": {"bundle": "models/lstm"}, "gru": {"bundle": "models/gru"}})
    (run / "models" / "gru").symlink_to(outside)
    with pytest.raises(BundleError, match=r"the 'gru' bundle leads outside the run folder"):
        find_bundles(run)


def test_a_run_metrics_json_lists_the_bundles_and_is_size_checked(tmp_path: Path) -> None:
    from videoseq.models.bundle import read_run_metrics

    run = _run_with_metrics(tmp_path, {"lstm": {"bundle": "models/lstm", "accuracy": 0.5}})
    make_bundle(run / "models" / "stray", head="gru")                 # not in metrics.json: not a result
    assert find_bundles(run) == {"lstm": run / "models" / "lstm"}
    assert read_run_metrics(run)["models"]["lstm"]["accuracy"] == 0.5
    (run / "metrics.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match=r"metrics.json is not a JSON object"):
        read_run_metrics(run)
    _sparse(run / "metrics.json", 1 << 40)
    with pytest.raises(BundleError, match=r"run: metrics.json is over the \d+-byte limit"):
        find_bundles(run)


def test_a_bundle_config_never_points_this_machine_elsewhere(bundle_dir: Path) -> None:
    """config.json's runtime section (cache folder, dask scheduler, ...) described the training machine:
    a loaded bundle carries this machine's defaults instead, so no consumer writes where it says."""
    from videoseq.config import RuntimeConfig

    _edit_config(bundle_dir, config__runtime__cache_dir="/etc/videoseq-cache",
                 config__runtime__dask_address="tcp://203.0.113.9:8786", config__runtime__workers=64)
    bundle = load_bundle(bundle_dir)
    assert bundle.config.runtime == RuntimeConfig()
    assert bundle.meta["config"]["runtime"]["cache_dir"] == "/etc/videoseq-cache"   # as read, for the record
    assert bundle.config.model == tiny_config().model


def test_a_per_stream_head_round_trips_and_an_older_config_rebuilds_one_joint_projection(tmp_path: Path) -> None:
    """model.per_stream: the bundle rebuilds a Linear per temporal stream from its config alone (state
    loaded with weights_only=True) and predicts the same; a config.json saved before the key existed
    means the older head, one Linear over all the streams."""
    from videoseq.models.classifier import build_model, fold_batchnorm
    from videoseq.models.embed import StepNorm

    raw = {"model": {"encoder": "small_cnn", "weights": None, "pooling": "avg", "hidden": 8, "dropout": 0.0,
                     "motion": "blockmatch+photometric+speed", "per_stream": True, "stream_bottleneck": 4,
                     "stream_summary": True, "modality_dropout": 0.3, "stream_stats": True},
           "sampling": {"frames": 4, "size": 32}}
    config = config_from_dict(raw)
    torch.manual_seed(0)
    original = build_model(config.model, "lstm", 3).train()
    with torch.no_grad():
        original(torch.randn(3, 4, 3, 32, 32), None)          # the norms learn running means and variances
    original.eval()
    path = save_bundle(tmp_path / "per-stream", model=original, head="lstm", config=config, classes=CLASSES,
                       metrics={"val_accuracy": 0.5, "epochs": 1})
    bundle = load_bundle(path)
    streams = bundle.model.head.embed.streams
    assert [s[1].in_features for s in streams] == [144, 20, 48] and bundle.model.head.embed.motion is None
    assert [tuple(p.weight.shape) for p in bundle.model.head.embed.pools] == [(9, 144), (4, 20), (12, 48)]
    stats = bundle.model.head.embed.stats
    assert isinstance(stats[0], StepNorm) and stats[2].in_features == 5 * 25    # model.stats_norm: true
    assert stats[0].norm.num_batches_tracked > 0                              # trained running statistics, kept
    fold_batchnorm(original)
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(bundle.model(x, None), original(x, None))

    raw["model"] = {k: v for k, v in raw["model"].items()
                    if k not in ("stream_bottleneck", "stream_summary", "stream_stats")}
    old = make_bundle(tmp_path / "old", config=config_from_dict(
        {**raw, "model": {**raw["model"], "per_stream": False, "modality_dropout": 0.0}}))   # the older head
    meta = json.loads((old / "config.json").read_text())
    for key in ("per_stream", "stream_bottleneck", "stream_summary", "modality_dropout", "stream_stats"):
        del meta["config"]["model"][key]
    (old / "config.json").write_text(json.dumps(meta))
    embed = load_bundle(old).model.head.embed
    assert embed.streams is None and embed.pools is None and embed.motion[1].in_features == 212
    assert embed.stats is None

    # saved before model.stats_norm: the statistics are read without the norm
    older = make_bundle(tmp_path / "no-norm", config=config_from_dict(
        {**raw, "model": {**raw["model"], "stream_summary": True, "stream_stats": True, "stats_norm": False}}))
    meta = json.loads((older / "config.json").read_text())
    del meta["config"]["model"]["stats_norm"]
    (older / "config.json").write_text(json.dumps(meta))
    stats = load_bundle(older).model.head.embed.stats
    assert isinstance(stats[0], torch.nn.Dropout) and stats[1].in_features == 5 * 25
