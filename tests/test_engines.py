"""Frame engines (videoseq/models/engines.py): ONNX Runtime gives the torch engine's features within its
tolerance for any batch size, the torch engine is the eager folded encoder exactly, "auto" picks ONNX
Runtime on a CPU, and an engine that cannot be trusted falls back to PyTorch with a warning."""
from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from torch import nn

from videoseq.models.classifier import fold_batchnorm
from videoseq.models.encoders import FrameEncoder, build_encoder
from videoseq.models.engines import (ENGINES, EngineError, OnnxEngine, build_engine, onnx_engine_available,
                                     resolve_engine)
from videoseq.models.transforms import frames_to_tensor

needs_ort = pytest.mark.skipif(not onnx_engine_available(), reason="onnx or onnxruntime is not installed")


def eager_folded(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference: a BatchNorm-folded copy in eval and inference mode, as FeatureStore encodes."""
    enc = copy.deepcopy(encoder).eval()
    fold_batchnorm(enc)
    with torch.inference_mode():
        return enc(x)                                                   # (n, D)


def frames(n: int, size: int, mean, std, seed: int = 0) -> torch.Tensor:
    """(n, 3, S, S) normalised frames as the feature store makes them (channels-last memory)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)     # (n, S, S, 3)
    return frames_to_tensor(raw, size=size, mean=mean, std=std)


@pytest.fixture(scope="module")
def small_cnn() -> FrameEncoder:
    torch.manual_seed(0)
    enc = build_encoder("small_cnn", pooling="grid2")
    with torch.no_grad():      # BatchNorm statistics that are not the identity, so folding matters
        for m in enc.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return enc.freeze()


def check_matches_torch(encoder: FrameEncoder) -> None:
    engine = build_engine(encoder, engine="onnx", device="cpu")
    assert (engine.name, engine.cache_tag, engine.tolerance) == ("onnx", "ort", 1e-4)
    for n in (1, 7):
        x = frames(n, encoder.input_size, encoder.mean, encoder.std, seed=n)
        got = engine(x)
        assert got.shape == (n, encoder.out_dim) and got.dtype == torch.float32
        diff = float((got - eager_folded(encoder, x)).abs().max())
        assert diff <= engine.tolerance, f"n={n}: max abs diff {diff:.2e}"
    assert engine(x[:0]).shape == (0, encoder.out_dim)


@needs_ort
def test_onnx_engine_matches_torch_small_cnn(small_cnn):
    check_matches_torch(small_cnn)


@needs_ort
@pytest.mark.parametrize("size", [112, 97])     # TF "SAME" padding: asymmetric at 112, symmetric at 97
def test_onnx_engine_matches_torch_lite0(size):
    encoder = build_encoder("efficientnet_lite0", weights="DEFAULT", pooling="grid2", input_size=size).freeze()
    check_matches_torch(encoder)


def test_torch_engine_is_the_eager_folded_encoder(small_cnn):
    engine = build_engine(small_cnn, engine="torch", device="cpu")
    assert (engine.name, engine.cache_tag, engine.tolerance) == ("torch", "", 0.0)
    for n in (1, 7):
        x = frames(n, small_cnn.input_size, small_cnn.mean, small_cnn.std, seed=n)
        assert torch.equal(engine(x), eager_folded(small_cnn, x))
    assert any(isinstance(m, nn.BatchNorm2d) for m in small_cnn.modules())   # the encoder is left as it was


@needs_ort
def test_auto_is_onnx_on_cpu_and_torch_on_gpu(small_cnn):
    assert build_engine(small_cnn, engine="auto", device="cpu").name == "onnx"
    assert resolve_engine("auto", "cuda") == "torch"
    with pytest.raises(EngineError, match="runs on the CPU"):
        resolve_engine("onnx", "cuda")


def test_unknown_engine_is_a_one_line_value_error(small_cnn):
    with pytest.raises(ValueError) as err:
        build_engine(small_cnn, engine="tensorrt")
    message = str(err.value)
    assert "\n" not in message and "'tensorrt'" in message
    assert all(name in message for name in ENGINES)


@needs_ort
def test_onnx_engine_refuses_frames_of_another_size(small_cnn):
    engine = build_engine(small_cnn, engine="onnx")
    with pytest.raises(ValueError, match="expected"):
        engine(torch.zeros(2, 3, 32, 32))


@needs_ort
def test_disagreeing_onnx_engine_falls_back_to_torch(small_cnn, monkeypatch, caplog):
    monkeypatch.setattr(OnnxEngine, "tolerance", -1.0)      # no difference is small enough
    with caplog.at_level(logging.WARNING, logger="videoseq.models.engines"):
        engine = build_engine(small_cnn, engine="onnx")
    assert engine.name == "torch" and engine.cache_tag == ""
    assert "differ from PyTorch" in caplog.text


class FFTTrunk(nn.Module):
    """A trunk the ONNX exporter cannot write (no rfft2 in opset 17): (N, 3, S, S) -> (N, 3, S, S//2+1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft2(x).abs()


@needs_ort
def test_failed_export_falls_back_to_torch(caplog):
    encoder = FrameEncoder(FFTTrunk(), name="fft", channels=3, input_size=16, mean=(0.5,) * 3,
                           std=(0.25,) * 3).freeze()
    with caplog.at_level(logging.WARNING, logger="videoseq.models.engines"):
        engine = build_engine(encoder, engine="onnx")
    assert engine.name == "torch"
    assert "fft@16: ONNX Runtime engine unavailable" in caplog.text
    x = frames(3, 16, encoder.mean, encoder.std)
    assert torch.equal(engine(x), eager_folded(encoder, x))


@needs_ort
def test_the_feature_store_keys_features_by_engine(small_cnn, tmp_path):
    """Features of the ONNX engine live in their own cache folder (never mixed with PyTorch's), agree
    with PyTorch's within the engine's tolerance, and a second store reads them without encoding."""
    from media import write_opencv
    from videoseq.config import SamplingConfig
    from videoseq.data.cache import FrameCache
    from videoseq.data.features import ClipRef, FeatureStore

    video = str(write_opencv(tmp_path / "clip.mp4", count=12))
    cache, sampling = FrameCache(tmp_path / "frames"), SamplingConfig(frames=6)
    refs = [ClipRef(video, 0)]
    stores = {e: FeatureStore(tmp_path / "features", small_cnn, engine=e) for e in ("torch", "onnx")}
    assert stores["onnx"].dir.name == stores["torch"].dir.name + "+ort"
    feats = {e: s.features(refs, cache, sampling, size=64)[0][0] for e, s in stores.items()}   # (T, D)
    assert np.abs(feats["onnx"] - feats["torch"]).max() <= stores["onnx"].engine.tolerance
    again = FeatureStore(tmp_path / "features", small_cnn, engine="onnx")
    assert np.array_equal(again.features(refs, cache, sampling, size=64)[0][0], feats["onnx"])
    assert again.encoded_frames == 0
