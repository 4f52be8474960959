"""The temporal streams on real footage (the cat photo scikit-image ships, moved by a virtual camera,
written as H.264 by ffmpeg and decoded back): each is zero on a still clip, answers the change it is
for, is causal, and never reaches `per_frame`."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from test_motion import SIDE, photo, write_frames
from videoseq.config import ModelConfig
from videoseq.io.video import read_frames
from videoseq.models.changes import PhotometricStream, RGBDiffStream, SpeedStream, TempoStream
from videoseq.models.classifier import build_model
from videoseq.models.encoders import IMAGENET_MEAN, IMAGENET_STD
from videoseq.models.heads import list_heads
from videoseq.models.motion import BlockMatchMotion
from videoseq.models.streams import MOTIONS, build_motion, motion_names
from videoseq.models.transforms import frames_to_tensor
from videoseq.registry import UnknownNameError

ALL = "blockmatch+photometric+speed+tempo+rgbdiff"


def window(x0: float, y0: float = 100, w: int = 240) -> np.ndarray:
    """A 240x180 crop of the photo at a sub-pixel position (bilinear)."""
    m = np.float32([[1, 0, -x0], [0, 1, -y0]])
    return cv2.warpAffine(photo(), m, (w, w * 3 // 4), flags=cv2.INTER_LINEAR)


def decoded(tmp_path, name: str, frames: list[np.ndarray], t: int = 8) -> torch.Tensor:
    """(1, T, 3, SIDE, SIDE): the frames through H.264 and back, sampled and normalised as for Lite0."""
    path = write_frames(tmp_path / f"{name}.mp4", frames)
    clip = read_frames(path, count=t, size=SIDE)
    return frames_to_tensor(clip.frames, size=SIDE, mean=IMAGENET_MEAN, std=IMAGENET_STD)[None]


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> dict[str, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("streams")
    still = [window(150)] * 8
    fade = [np.clip(window(150).astype(np.float32) * g, 0, 255).astype(np.uint8)
            for g in np.linspace(1.0, 0.55, 8)]
    return {"still": decoded(tmp, "still", still), "fade": decoded(tmp, "fade", fade),
            "slow": decoded(tmp, "slow", [window(60 + 6 * i) for i in range(8)]),
            "fast": decoded(tmp, "fast", [window(60 + 18 * i) for i in range(8)]),
            "shake": decoded(tmp, "shake", [window(60 + 18 * (i % 2)) for i in range(8)])}


def streams() -> list[str]:
    return MOTIONS.names()


def displacement(name: str, out: torch.Tensor) -> torch.Tensor:
    """The displacement channels (dx, dy) of a block-matching stream's output (B, T, M)."""
    if name == "blockmatch":
        return out.reshape(*out.shape[:2], -1, 3, 16)[..., :2, :]            # (B, T, scales, 2, cells)
    speed = SpeedStream()
    return out[..., :speed.match.out_dim].reshape(*out.shape[:2], -1, 3, 4)[..., :2, :]


@pytest.mark.parametrize("name", streams())
def test_every_stream_is_zero_on_a_still_clip(name, footage):
    """A still clip has no change: every number a stream gives about change is zero (the block
    matchers' confidence says how well a cell matched, not how it moved: it is not a change). Exactly
    zero on one decoded frame repeated; on the H.264 file of a still picture, whose frames differ by
    coding noise, the displacements are still exactly zero and the rest below 1% of a fade's or a pan's
    (3% for tempo, a ratio of two changes: on coding noise both are noise)."""
    def change(out: torch.Tensor) -> torch.Tensor:
        if name in ("blockmatch", "speed"):
            moved = displacement(name, out).flatten(2)
            return torch.cat([moved, out[..., SpeedStream().match.out_dim:]], dim=2) if name == "speed" else moved
        return out

    still = footage["still"]
    frozen = still[:, :1].repeat(1, still.shape[1], 1, 1, 1)                  # (1, T, 3, S, S)
    assert change(build_motion(name)(frozen)).abs().max() == 0
    coded = change(build_motion(name)(still))
    if name in ("blockmatch", "speed"):
        assert displacement(name, build_motion(name)(still)).abs().max() == 0
    moving = max(change(build_motion(name)(footage[k])).abs().mean() for k in ("fade", "slow"))
    # tempo is a ratio of two changes: on coding noise both are noise, nearly equal (measured 1.2%)
    assert coded.abs().mean() < (0.03 if name == "tempo" else 0.01) * moving


def test_a_fade_moves_the_photometric_stream_and_not_the_motion(footage):
    """A real photo dimming to 55% over 8 frames: every region's brightness falls at every step, and
    neither block matcher sees motion (each frame is standardised before matching)."""
    regions = 1 + PhotometricStream().grid ** 2                               # the whole frame + the grid's cells
    photometric = PhotometricStream()(footage["fade"])[0]                    # (T, regions*4)
    per_region = photometric.reshape(8, regions, 4)
    assert (per_region[1:, :, :3] < 0).all()                                  # each channel's mean, every region
    assert (per_region[1:, 0, :3] < -0.03).all()                              # the whole frame's, clearly
    assert (per_region[1:, 0, 3] < 0).all()                                   # global contrast falls too
    for name in ("blockmatch", "speed"):
        moved = displacement(name, build_motion(name)(footage["fade"]))
        assert moved.abs().max() < 0.05, name                                 # < 0.05 tenths = 0.5% of the frame
    panned = PhotometricStream()(footage["slow"])[0].reshape(8, regions, 4)
    assert panned[:, 0].abs().mean() < 0.2 * per_region[:, 0].abs().mean()     # a pan keeps the whole frame's light


def test_fast_forward_scales_the_speed_estimate(footage):
    """A pan of 6 px per frame vs 18 px per frame (3x) on the same photo: the speed stream's measured
    displacement grows by about 3x, at each of its scales that still reaches that far; the
    content-change channels grow too."""
    speed = SpeedStream()
    slow, fast = speed(footage["slow"]), speed(footage["fast"])
    for side in (32, 16):
        a = speed.displacement(slow, side)[0, 1:, 0].mean()                 # mean dx, tenths of the frame
        b = speed.displacement(fast, side)[0, 1:, 0].mean()
        assert a.abs() > 0.05 and 2.4 < float(b / a) < 3.6, (side, float(a), float(b))
    energy = slice(speed.match.out_dim, speed.out_dim)
    assert fast[0, 1:, energy].mean() > 1.5 * slow[0, 1:, energy].mean()


def test_tempo_tells_smooth_motion_from_fast_or_shaky(footage):
    """The same photo panned 6 px per frame, 18 px per frame (3x), and shaken back and forth by 18 px
    every frame. Smooth slow motion: two steps change the picture almost twice as much as one (near
    log 2 = 0.69 at 8 px, where 6 px of 240 is a fifth of a pixel). Three times faster: clearly less
    at every scale. A shake faster than the sampling: two steps undo one (strongly negative). A fade
    changes the light, not the standardised picture: near zero. Measured: 0.46/0.56/0.61, 0.25/0.28/0.37,
    -3.6/-3.6/-3.4, 0.02/0.02/0.01 (32, 16, 8 px)."""
    tempo = TempoStream()
    slow, fast, shake, fade = (tempo(footage[k])[0, 2:].mean(dim=0) for k in ("slow", "fast", "shake", "fade"))
    assert slow[-1] > 0.5 and (slow > fast + 0.08).all(), (slow, fast)
    assert (shake < -1).all(), shake
    assert fade.abs().max() < 0.1 * slow.min(), (fade, slow)


@pytest.mark.parametrize("name", streams())
def test_every_stream_is_causal(name, footage):
    """Step t reads frames <= t only: changing frames after t changes nothing at or before t."""
    x = footage["slow"]
    out = build_motion(name)(x)
    for t in (2, 5):
        later = x.clone()
        later[:, t + 1:] = torch.randn_like(later[:, t + 1:])
        assert torch.equal(build_motion(name)(later)[:, :t + 1], out[:, :t + 1])
    assert out[:, 0].abs().max() == 0                                         # no frame before step 0


@pytest.mark.parametrize("per_stream", [False, True])
@pytest.mark.parametrize("motion", [*streams(), ALL])
@pytest.mark.parametrize("head", list_heads())
def test_no_stream_reaches_per_frame(motion, head, per_stream, footage):
    """per_frame reads one frame at a time: replacing any stream's numbers changes nothing for it, and
    changes every temporal head's output (one projection for all streams, or one per stream with
    their whole-frame summaries and the summaries' running statistics)."""
    config = ModelConfig(encoder="small_cnn", weights=None, pooling="grid2", hidden=16, dropout=0.1,
                         motion=motion, input_size=SIDE, per_stream=per_stream, stream_summary=per_stream,
                         stream_stats=per_stream, modality_dropout=0.3 if per_stream else 0.0)
    torch.manual_seed(0)
    model = build_model(config, head, 3).eval()
    x = footage["slow"]
    with torch.no_grad():
        feats = model.forward_features(x)                                    # (1, T, D + M)
        d = model.encoder.out_dim
        for _, _, dims in model.motion.parts():
            other = feats.clone()
            cols = slice(d + dims.start, d + dims.stop)
            other[..., cols] = torch.randn_like(other[..., cols])
            same = torch.equal(model.forward_head(feats), model.forward_head(other))
            assert same == (head == "per_frame"), (motion, dims)


def test_stacks_names_and_errors():
    stack = build_motion("rgbdiff+photometric+blockmatch")
    assert stack.names == ["photometric", "blockmatch", "rgbdiff"]             # the image stream goes last
    assert stack.out_dim == 20 + 144 + 3072 and stack.vector_dim == 20 + 144
    assert stack.image_shape == (3, 32, 32)
    assert stack.cache_id() == "photometric32g2+" + BlockMatchMotion().cache_id() + "+rgbdiff32"
    assert motion_names("none") == [] and build_motion("none") is None
    with pytest.raises(UnknownNameError, match="unknown motion 'flow'"):
        build_motion("blockmatch+flow")
    with pytest.raises(ValueError, match="twice"):
        build_motion("speed+speed")


def test_a_stack_is_its_streams_side_by_side(footage):
    x = footage["fast"]
    stack = build_motion("speed+photometric+rgbdiff")
    parts = [SpeedStream()(x), PhotometricStream()(x), RGBDiffStream()(x)]
    assert torch.equal(stack(x), torch.cat(parts, dim=2))


def test_the_image_stream_is_read_by_a_cnn_and_left_unstandardised():
    """rgbdiff reaches a temporal head through heads.DiffCNN, not a Linear: the feature
    standardisation keeps its dimensions raw, and folding it into the head touches only Linears."""
    import dataclasses as dc
    from videoseq.config import Config
    from videoseq.learn.prepare import keep_image_stream_raw

    config = Config()
    config = dc.replace(config, model=dc.replace(config.model, motion="blockmatch+rgbdiff"))
    mean, std = torch.randn(5120 + 144 + 3072), torch.rand(5120 + 144 + 3072) + 0.5
    m, s = keep_image_stream_raw((mean, std), config)
    assert torch.equal(m[:5264], mean[:5264]) and (m[5264:] == 0).all() and (s[5264:] == 1).all()
    small = dataclasses.replace(ModelConfig(encoder="small_cnn", weights=None, hidden=16),
                                motion="blockmatch+rgbdiff")
    head = build_model(small, "lstm", 2).head
    # appearance, blockmatch's own Linear and its whole-frame pooling (model.per_stream, stream_summary)
    assert head.embed.image is not None and [lin.in_features for lin, _ in head.embed.input_linears()] == \
        [head.in_dim - 144 - 3072, 144, 144]


def test_stream_widths_and_whole_frame_summaries(footage):
    """A stack's vector streams' widths (a per-stream head's Linears) and their summaries: the grid
    streams' numbers averaged over the cells, photometric's whole-frame region."""
    from videoseq.models.streams import summary_matrix

    stack = build_motion("rgbdiff+blockmatch+photometric+speed")
    assert stack.vector_dims == [144, 20, 48]
    pools = stack.summary_matrices()
    assert [tuple(p.shape) for p in pools] == [(144, 9), (20, 4), (48, 12)]
    x = footage["fast"]
    bm, ph, sp = BlockMatchMotion()(x), PhotometricStream()(x), SpeedStream()(x)
    b, t = bm.shape[:2]
    torch.testing.assert_close(bm @ pools[0], bm.reshape(b, t, 9, 16).mean(-1))
    torch.testing.assert_close(ph @ pools[1], ph[..., :4])
    torch.testing.assert_close(sp @ pools[2], sp.reshape(b, t, 12, 4).mean(-1))
    assert torch.equal(summary_matrix(RGBDiffStream()), torch.eye(3072))
