"""`videoseq export` and infer/export.py, infer/onnx_model.py: every head exported to ONNX and TorchScript
gives PyTorch's probabilities and per-step beliefs (masked short clips included), the ONNX runner never
imports torch, and its classify results equal PyTorch's."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from media import write_opencv
from test_bundle import make_bundle

from videoseq import cli
from videoseq.config import config_from_dict
from videoseq.errors import BundleError
from videoseq.infer.export import Preprocess, export_bundle
from videoseq.infer.onnx_model import ExportError, OnnxModel, read_export_meta
from videoseq.infer.predict import FailedInput, Prediction, classify_paths, predict_clips
from videoseq.io.video import Clip
from videoseq.models.bundle import load_bundle
from videoseq.models.heads import list_heads
from videoseq.models.transforms import frames_to_tensor

pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
T, S = 5, 32
TOL = 1e-4                   # probabilities and steps, ONNX Runtime / TorchScript vs PyTorch


def tiny_config(**model):
    """small_cnn (native 64 px: frames are resized in the graph) + the motion stream, short: mask."""
    return config_from_dict({
        "model": {"encoder": "small_cnn", "weights": None, "pooling": "grid2", "hidden": 8,
                  "dropout": 0.0, "layers": 2, "motion": "blockmatch", **model},
        "sampling": {"frames": T, "size": S, "short": "mask"},
    })


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """head -> loaded bundle (untrained, seeded), made on first use."""
    root = tmp_path_factory.mktemp("bundles")
    made: dict[str, object] = {}

    def get(head: str, **model):
        key = head + json.dumps(model, sort_keys=True)
        if key not in made:
            path = make_bundle(root / f"{head}-{len(made)}", head=head, config=tiny_config(**model),
                               seed=len(made))
            made[key] = load_bundle(path)
        return made[key]
    return get


def clips_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(4, T, S, S, 3) uint8 and prefix masks of T, 3, 1 and T valid steps: two textures moving a
    few pixels a step (so the motion stream reads real shifts) and two of noise."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (4, T, S, S, 3), dtype=np.uint8)
    for b, (dy, dx) in enumerate([(1, 2), (-2, 1)]):
        base = rng.integers(0, 256, (S // 4, S // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
        frames[b] = np.stack([np.roll(base, (t * dy, t * dx), axis=(0, 1)) for t in range(T)])
    lengths = [T, 3, 1, T]
    mask = np.arange(T)[None, :] < np.array(lengths)[:, None]
    return frames, mask


def pytorch_reference(bundle, frames: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What classify computes: infer.predict.predict_clips on the same clips."""
    clips = [Clip(f, np.arange(T), m, None) for f, m in zip(frames, mask)]
    return predict_clips(bundle, clips)


def max_diff(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("head", list_heads())
def test_onnx_gives_pytorchs_probabilities_and_steps_for_every_head(bundles, tmp_path, head) -> None:
    bundle = bundles(head)
    out = export_bundle(bundle, tmp_path / "model.onnx")
    model = OnnxModel(out)
    frames, mask = clips_batch()
    expected = pytorch_reference(bundle, frames, mask)
    got = model.predict_clips(frames, mask)                     # traced with 2 clips, run with 4
    assert got[0].shape == (4, 3) and got[1].shape == (4, T, 3)
    assert max_diff(got, expected) < TOL
    assert max_diff(model.predict_clips(frames[2:3], mask[2:3]), (expected[0][2:3], expected[1][2:3])) < TOL
    # padded steps repeat the last valid one, as PyTorch's forward_steps does
    assert np.array_equal(got[1][2, 1:], np.repeat(got[1][2, :1], T - 1, axis=0))

    meta = read_export_meta(out)
    assert meta["classes"] == bundle.classes and meta["head"] == head
    assert meta["sampling"] == {"frames": T, "size": S, "short": "mask"}
    assert meta["preprocessing"]["input_size"] == 64 and meta["export"]["opset"] == 17
    assert [(i["name"], i["dtype"], i["shape"]) for i in meta["inputs"]] == [
        ("frames", "uint8", ["batch", T, S, S, 3]), ("mask", "bool", ["batch", T])]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "steps"]


@pytest.mark.parametrize("motion", ["photometric", "speed", "tempo", "rgbdiff", "blockmatch+photometric+speed+tempo+rgbdiff"])
def test_onnx_gives_pytorchs_numbers_with_every_temporal_stream(bundles, tmp_path, motion) -> None:
    """Each temporal stream, and all of them together (the image stream read by the head's CNN),
    traced into the graph: ONNX Runtime gives PyTorch's probabilities and steps."""
    bundle = bundles("lstm", motion=motion)
    out = export_bundle(bundle, tmp_path / "model.onnx")
    frames, mask = clips_batch(seed=3)
    expected = pytorch_reference(bundle, frames, mask)
    assert max_diff(OnnxModel(out).predict_clips(frames, mask), expected) < TOL
    assert read_export_meta(out)["motion"] == motion


@pytest.mark.parametrize("head", ["lstm", "conv1d"])
def test_onnx_gives_pytorchs_numbers_with_the_streams_running_statistics(bundles, tmp_path, head) -> None:
    """model.stream_stats: the running maximum and minimum over the steps, unrolled over the fixed T
    of the graph, and the running means give PyTorch's numbers, padded clips included; so does the
    statistics' norm (model.stats_norm), given running statistics and an affine map of its own."""
    bundle = bundles(head, motion="blockmatch+photometric+speed+tempo", stream_stats=True, stats_norm=True)
    norm = bundle.model.head.embed.stats[0].norm                              # StepNorm's BatchNorm1d
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for t in (norm.running_mean, norm.weight, norm.bias):
            t.copy_(torch.randn(t.shape, generator=g))
        norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=g) + 0.5)
    out = export_bundle(bundle, tmp_path / "model.onnx")
    frames, mask = clips_batch(seed=4)
    assert max_diff(OnnxModel(out).predict_clips(frames, mask), pytorch_reference(bundle, frames, mask)) < TOL


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("head", list_heads())
def test_torchscript_gives_pytorchs_probabilities_and_steps(bundles, tmp_path, head) -> None:
    bundle = bundles(head)
    out = export_bundle(bundle, tmp_path / "model.pt", format="torchscript")
    traced = torch.jit.load(str(out))
    frames, mask = clips_batch(seed=1)
    with torch.no_grad():
        probs, steps = traced(torch.from_numpy(frames), torch.from_numpy(mask))
    expected = pytorch_reference(bundle, frames, mask)
    assert max_diff((probs.double().numpy(), steps.double().numpy()), expected) < TOL
    assert read_export_meta(out)["export"]["format"] == "torchscript"


@pytest.mark.parametrize("head", list_heads())
def test_the_head_alone_gives_the_heads_numbers_on_features(bundles, tmp_path, head) -> None:
    bundle = bundles(head)
    out = export_bundle(bundle, tmp_path / "head.onnx", part="head")
    frames, mask = clips_batch(seed=2)
    x = frames_to_tensor(torch.from_numpy(frames), size=bundle.input_size, mean=bundle.mean, std=bundle.std)
    with torch.no_grad():
        feats = bundle.model.clip_features(x, len(frames))                     # (B, T, D + M)
        logits, steps = bundle.model.head.forward_and_steps(feats, torch.from_numpy(mask))
    expected = (logits.double().softmax(1).numpy(), steps.double().exp().numpy())
    model = OnnxModel(out)
    assert max_diff(model.predict_features(feats.numpy(), mask), expected) < TOL
    meta = read_export_meta(out)
    assert meta["inputs"][0]["shape"] == ["batch", T, bundle.model.head.in_dim]
    assert meta["features"] == {"appearance": 1024, "motion": 144}
    with pytest.raises(ExportError, match="head alone"):
        model.predict_clips(frames, mask)


@pytest.mark.parametrize("input_size", [16, 32, 48])   # shrink (antialiased), none, grow
def test_preprocessing_in_the_graph_is_frames_to_tensor(input_size) -> None:
    frames = torch.from_numpy(clips_batch()[0])
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    expected = frames_to_tensor(frames, size=input_size, mean=mean, std=std)
    assert torch.allclose(Preprocess(S, input_size, mean, std)(frames), expected, atol=1e-5)


@pytest.mark.parametrize("head,model", [("gru", {"input_size": 16}), ("lstm", {"input_size": 32}),
                                        ("conv1d", {"bidirectional": True}),
                                        ("per_frame", {"bidirectional": True})])
def test_other_input_sizes_and_bidirectional_conv1d_export_exactly(bundles, tmp_path, head, model) -> None:
    bundle = bundles(head, **model)
    frames, mask = clips_batch(seed=3)
    got = OnnxModel(export_bundle(bundle, tmp_path / "model.onnx")).predict_clips(frames, mask)
    assert max_diff(got, pytorch_reference(bundle, frames, mask)) < TOL


@pytest.mark.parametrize("head", ["rnn", "lstm", "gru"])
def test_bidirectional_recurrent_heads_are_refused(bundles, tmp_path, head) -> None:
    with pytest.raises(ExportError, match=f"bidirectional {head} head cannot be exported"):
        export_bundle(bundles(head, bidirectional=True), tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())


def test_export_leaves_the_bundle_as_it_was(bundles, tmp_path) -> None:
    bundle = bundles("lstm")
    frames, mask = clips_batch(seed=4)
    before = pytorch_reference(bundle, frames, mask)
    export_bundle(bundle, tmp_path / "model.onnx")
    assert not bundle.model.training and not any(m.training for m in bundle.model.modules())
    after = pytorch_reference(bundle, frames, mask)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_bad_requests_are_one_line_errors(bundles, tmp_path) -> None:
    bundle = bundles("lstm")
    for kwargs, message in [({"format": "tflite"}, "unknown export format 'tflite'"),
                            ({"part": "encoder"}, "unknown part 'encoder'"),
                            ({"opset": 9}, "opset 9 is not available")]:
        with pytest.raises(ExportError, match=message):
            export_bundle(bundle, tmp_path / "model.onnx", **kwargs)
    with pytest.raises(ExportError, match="another name than .json"):
        export_bundle(bundle, tmp_path / "model.json")
    with pytest.raises(BundleError, match="no such model bundle"):
        export_bundle(tmp_path / "missing", tmp_path / "model.onnx")
    (tmp_path / "lonely.onnx").write_bytes(b"not onnx")
    with pytest.raises(ExportError, match="no lonely.json beside it"):
        OnnxModel(tmp_path / "lonely.onnx")
    model = OnnxModel(export_bundle(bundle, tmp_path / "model.onnx"))
    frames, mask = clips_batch()
    with pytest.raises(ValueError, match="non-empty prefix"):
        model.predict_clips(frames, ~mask)
    with pytest.raises(ValueError, match="uint8"):
        model.predict_clips(frames.astype(np.float32), mask)


# --- the runner without torch, and classify ---------------------------------------------------------

RUNNER = """
import json, sys
import numpy as np
from videoseq.infer.onnx_model import OnnxModel, classify_paths_onnx
from videoseq.infer.predict import Prediction

if __name__ == "__main__":
    model = OnnxModel(sys.argv[1])
    data = np.load(sys.argv[2])
    probs, steps = model.predict_clips(data["frames"], data["mask"])
    results = []
    for r in classify_paths_onnx(sys.argv[3:], model, batch_size=3, workers=2):
        results.append({**r.to_json(), "steps": r.steps.tolist()} if isinstance(r, Prediction) else r.to_json())
    print(json.dumps({"torch": "torch" in sys.modules, "probs": probs.tolist(), "steps": steps.tolist(),
                      "results": results}))
"""


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("videos")
    paths = [write_opencv(d / f"v{i}.mp4", count=c, width=48, height=40) for i, c in enumerate([12, 3, 20, 7])]
    (d / "broken.mp4").write_bytes(b"not a video")
    return [str(p) for p in paths[:2]] + [str(d / "broken.mp4")] + [str(p) for p in paths[2:]]


def test_the_onnx_runner_needs_no_torch_and_classifies_as_pytorch_does(bundles, tmp_path, videos) -> None:
    bundle = bundles("gru")
    out = export_bundle(bundle, tmp_path / "model.onnx")
    frames, mask = clips_batch(seed=5)
    np.savez(tmp_path / "clips.npz", frames=frames, mask=mask)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    done = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "clips.npz"), *videos],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["torch"] is False                              # never imported, not even indirectly
    assert max_diff((np.array(report["probs"]), np.array(report["steps"])),
                    pytorch_reference(bundle, frames, mask)) < TOL

    expected = list(classify_paths(videos, bundle, workers=2))
    assert [r["path"] for r in report["results"]] == videos       # input order, failures in place
    for got, want in zip(report["results"], expected):
        if isinstance(want, FailedInput):
            assert got == want.to_json()
            continue
        assert isinstance(want, Prediction) and got["label"] == want.label and got["frames"] == want.frames
        assert got["head"] == "gru" and list(got["probs"]) == bundle.classes
        assert max(abs(got["probs"][c] - want.probs[c]) for c in bundle.classes) < TOL
        assert np.abs(np.array(got["steps"]) - want.steps).max() < TOL
    assert report["results"][1]["frames"] == 3                    # the short video: 2 masked steps


# --- the command ------------------------------------------------------------------------------------

def test_the_export_command_writes_the_graph_and_its_description(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    make_bundle(run / "models" / "per_frame", head="per_frame", config=tiny_config(), val_accuracy=0.9)
    make_bundle(run / "models" / "lstm", head="lstm", config=tiny_config(), val_accuracy=0.4)
    assert cli.main(["export", str(run), "--out", str(tmp_path / "best.onnx")]) == 0
    assert "exported per_frame (the whole model, onnx, opset 17)" in capsys.readouterr().out
    assert cli.main(["export", str(run), "--head", "lstm", "--part", "head", "--json",
                     "--out", str(tmp_path / "out" / "lstm-head.onnx")]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["head"] == "lstm" and meta["export"]["part"] == "head"
    assert (tmp_path / "out" / "lstm-head.json").is_file()
    assert OnnxModel(tmp_path / "best.onnx").head == "per_frame"

    for argv, message in [([str(run), "--format", "keras"], "unknown export format 'keras'"),
                          ([str(tmp_path / "nothing")], "no such model bundle"),
                          ([str(run), "--head", "gru"], "no 'gru' model")]:
        assert cli.main(["export", *argv, "--out", str(tmp_path / "x.onnx")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("videoseq export: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("head", ["rnn", "lstm", "gru"])
def test_the_unpacked_recurrence_of_graphs_is_the_packed_one(head) -> None:
    """What a traced recurrent head runs (no packed sequences) gives the packed run's numbers."""
    from videoseq.models.heads import build_head

    torch.manual_seed(0)
    rec = build_head(head, 12, 3, hidden=6, layers=2, dropout=0.0).eval()
    x, lengths = torch.randn(4, T, 12), torch.tensor([T, 3, 1, 2])
    with torch.no_grad():
        packed_out, packed_h = rec._run(x, lengths)
        out, h = rec._run_unpacked(rec.embed(x), lengths)
    assert torch.allclose(out, packed_out, atol=1e-6) and torch.allclose(h[-1], packed_h[-1], atol=1e-6)


def test_classify_runtime_onnx_prints_what_the_torch_classify_prints(bundles, tmp_path, videos, capsys) -> None:
    """`videoseq classify --runtime onnx --json` on an exported model: the same records as the torch
    classify of the bundle (probabilities within 1e-4), the broken file reported the same way."""
    bundle = bundles("lstm")
    onnx_path = export_bundle(bundle, tmp_path / "model.onnx")

    def records(argv: list[str]) -> tuple[int, list[dict]]:
        code = cli.main(["classify", *videos, "--json", "--workers", "1", *argv])
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
        return code, lines

    code_torch, torch_lines = records(["--model", str(bundle.path)])
    code_onnx, onnx_lines = records(["--model", str(onnx_path), "--runtime", "onnx"])
    assert code_torch == code_onnx == 1                                # one broken file, reported
    assert [r["path"] for r in onnx_lines] == [r["path"] for r in torch_lines]
    for got, want in zip(onnx_lines, torch_lines):
        if "error" in want:
            assert got == want
            continue
        assert got["label"] == want["label"] and got["head"] == want["head"]
        assert max(abs(got["probs"][c] - want["probs"][c]) for c in bundle.classes) < 1e-4
    assert cli.main(["classify", videos[0], "--model", str(onnx_path), "--runtime", "onnx", "--head", "x"]) == 2
