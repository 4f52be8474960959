"""VideoClassifier: encoder + head end to end, on real tiny videos."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from media import write_opencv
from videoseq.config import ModelConfig
from videoseq.models.encoders import build_encoder
from videoseq.models.heads import build_head, list_heads
from videoseq.models.classifier import VideoClassifier, build_model
from videoseq.models.streams import build_motion
from videoseq.models.transforms import frames_to_tensor
from videoseq.io.video import read_frames

SMALL = ModelConfig(encoder="small_cnn", weights=None, pooling="grid2", hidden=16, dropout=0.1)


def model_for(head: str, **kw) -> VideoClassifier:
    torch.manual_seed(0)
    return build_model(SMALL, head, 3, **kw)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real decoded videos as a padded batch: 6 frames, and 3 frames masked to length 6."""
    root = tmp_path_factory.mktemp("videos")
    long = read_frames(write_opencv(root / "long.mp4", count=12), count=6, size=32)
    short = read_frames(write_opencv(root / "short.avi", count=3, fourcc="MJPG"), count=6, size=32,
                        short="mask")
    assert short.mask.sum() == 3 and long.mask.all()
    frames = np.stack([long.frames, short.frames])                          # (2, 6, 32, 32, 3) uint8
    enc = build_encoder("small_cnn")
    x = frames_to_tensor(frames, size=32, mean=enc.mean, std=enc.std)      # (2, 6, 3, 32, 32)
    return x, torch.from_numpy(np.stack([long.mask, short.mask]))


@pytest.mark.parametrize("head", list_heads())
def test_forward_is_features_then_head_on_real_video(head, clips):
    x, mask = clips
    model = model_for(head).eval()
    with torch.no_grad():
        logits = model(x, mask)
        feats = model.forward_features(x)
        assert feats.shape == (2, 6, model.encoder.out_dim + model.motion.out_dim)
        torch.testing.assert_close(logits, model.forward_head(feats, mask))
        assert logits.shape == (2, 3) and torch.isfinite(logits).all()
        steps = model.forward_steps(x, mask)
    assert steps.shape == (2, 6, 3)
    # the short video, padded, classifies exactly as it does alone
    with torch.no_grad():
        alone = model(x[1:, :3], mask[1:, :3])
    torch.testing.assert_close(logits[1:], alone, atol=1e-5, rtol=1e-4)


def test_clip_features_are_each_clips_own_whatever_the_batch(clips):
    """classify's path: each clip encoded alone, padding clips skip the encoder (zero appearance)."""
    x, mask = clips
    model = model_for("lstm").eval()
    d = model.encoder.out_dim
    with torch.no_grad():
        padded = torch.cat([x, torch.zeros_like(x)])                        # 2 real clips + 2 blank
        feats = model.clip_features(padded, 2)                              # (4, 6, D + M)
        assert feats.shape == (4, 6, d + model.motion.out_dim)
        assert torch.equal(feats[2:, :, :d], torch.zeros_like(feats[2:, :, :d]))   # blank: no encoder pass
        for i in range(2):   # the same clip alone (padded the other way) gives the same appearance bits
            alone = model.clip_features(torch.cat([x[i:i + 1], torch.zeros_like(x)[:3]]), 1)
            assert torch.equal(alone[0, :, :d], feats[i, :, :d])
        torch.testing.assert_close(feats[:2], model.forward_features(x), atol=1e-5, rtol=1e-5)
    baseline = model_for("per_frame").eval()   # never reads the motion stream: not computed for it
    with torch.no_grad():
        feats = baseline.clip_features(x, 2)
        assert torch.equal(feats[..., d:], torch.zeros_like(feats[..., d:]))
        full = torch.cat([feats[..., :d], baseline.motion(x)], dim=2)        # what it would have been given
        assert torch.equal(baseline.forward_head(feats, mask), baseline.forward_head(full, mask))


def test_encoder_chunks_do_not_change_features(clips):
    x, _ = clips
    model = model_for("gru").eval()
    with torch.no_grad():
        whole = model.forward_features(x)
        model.chunk_size = 5                                                # 12 frames in 3 chunks
        torch.testing.assert_close(model.forward_features(x), whole, atol=1e-5, rtol=1e-5)
        # frame order within the batch is kept: features of one frame computed alone agree
        torch.testing.assert_close(whole[1, 2, :model.encoder.out_dim], model.encoder(x[1, 2:3])[0],
                                   atol=1e-5, rtol=1e-5)


def test_finetune_gradients_reach_encoder_and_head(clips):
    x, mask = clips
    torch.manual_seed(0)   # without stream or modality dropout: they may hide a stream from both clips
    model = build_model(dataclasses.replace(SMALL, stream_dropout=0.0, modality_dropout=0.0), "lstm", 3).train()
    loss = model.loss(x, mask, torch.tensor([0, 2]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_frozen_encoder_gets_no_gradients_and_keeps_statistics(clips):
    x, mask = clips
    model = model_for("per_frame", freeze_encoder=True).train()
    assert not model.encoder.training and model.head.training
    bn = dict(model.encoder.state_dict())
    bn = {k: v.clone() for k, v in bn.items()}
    model.loss(x, mask, torch.tensor([1, 0])).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert all(torch.equal(v, bn[k]) for k, v in model.encoder.state_dict().items())


def test_state_dict_round_trip_with_weights_only(tmp_path, clips):
    x, mask = clips
    model = model_for("conv1d").eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.manual_seed(123)                                                  # a different init
    rebuilt = build_model(SMALL, "conv1d", 3, load_weights=False)
    rebuilt.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x, mask), model(x, mask))
    assert rebuilt.encoder.cache_id() == model.encoder.cache_id()


def test_build_model_follows_the_config():
    cfg = ModelConfig(encoder="small_cnn", weights=None, pooling="avg", hidden=24, layers=2,
                      dropout=0.0, bidirectional=True)
    model = build_model(cfg, "gru", 7)
    m = build_motion(cfg.motion).out_dim                                   # the default streams: 144 + 20 + 48 + 3
    assert m == 215 and model.encoder.out_dim == 256 and model.head.in_dim == 256 + m and model.head.motion_dim == m
    assert model.head.rnn.hidden_size == 24 and model.head.rnn.num_layers == 2
    assert model.head.rnn.bidirectional and model.head.classifier[-1].out_features == 7


def test_build_model_without_weights_skips_pretrained_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))                       # DEFAULT is absent here
    cfg = ModelConfig(encoder="mobilenet_v3_small", weights="DEFAULT", pooling="avg")
    model = build_model(cfg, "lstm", 2, load_weights=False)
    assert model.encoder.weights_label == "DEFAULT"                        # what the bundle state will be


def test_mismatched_head_and_encoder_are_rejected():
    with pytest.raises(ValueError, match="expects 100-d features"):
        VideoClassifier(build_encoder("small_cnn"), build_head("lstm", 100, 2))
    with pytest.raises(ValueError, match="0 of motion"):   # the head was built without the motion stream
        VideoClassifier(build_encoder("small_cnn"), build_head("lstm", 1024 + 144, 2),
                        motion=build_motion("blockmatch"))


def test_without_motion_the_features_are_the_encoders():
    model = build_model(dataclasses.replace(SMALL, motion="none"), "lstm", 3)
    assert model.motion is None and model.head.in_dim == model.encoder.out_dim == 1024


@pytest.mark.parametrize("head", list_heads())
def test_only_temporal_heads_read_the_motion_stream(head, clips):
    """per_frame must be the per-frame baseline: its output ignores the motion dimensions entirely;
    every other head's output depends on them."""
    x, mask = clips
    model = model_for(head).eval()
    with torch.no_grad():
        feats = model.forward_features(x)                                  # (2, 6, D + M)
        assert feats[:, 0, -model.motion.out_dim:].abs().sum() == 0         # no previous frame at step 0
        assert feats[0, 1:, -model.motion.out_dim:].abs().sum() > 0
        other = feats.clone()
        other[..., -model.motion.out_dim:] = torch.randn_like(other[..., -model.motion.out_dim:])
        same = torch.equal(model.forward_head(feats, mask), model.forward_head(other, mask))
    assert same == (head == "per_frame")


@pytest.mark.parametrize("encoder", ["small_cnn", "efficientnet_lite0", "mobilenet_v3_small"])
def test_fold_batchnorm_folds_every_conv_bn_pair_and_keeps_the_function(encoder, clips):
    """load_bundle folds BatchNorm into the convolutions (inference speed): every pair, found in
    nn.Sequential blocks or named by `conv_bn_pairs` (Lite0's MBConv), and the output is unchanged."""
    from videoseq.models.classifier import fold_batchnorm

    x, _ = clips
    torch.manual_seed(0)
    enc = build_encoder(encoder, input_size=32).eval()
    for m in enc.modules():   # running statistics that are not the identity, so folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.8, 1.25)
    frames = x[0]                                                           # (6, 3, 32, 32)
    with torch.no_grad():
        before = enc(frames)
        count = sum(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())
        assert fold_batchnorm(enc) == count > 0
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())
        torch.testing.assert_close(enc(frames), before, atol=1e-4, rtol=1e-4)
    assert fold_batchnorm(enc) == 0                                         # idempotent
    train = build_encoder(encoder, input_size=32).train()
    assert fold_batchnorm(train) == 0                                       # training BN is left alone
