"""The motion stream on real footage: a crop window panning / zooming over a real photo (the cat
scikit-image ships), written as an H.264 file by ffmpeg and decoded back by read_frames."""
from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest
import torch

from media import ffmpeg_exe
from videoseq.models.encoders import IMAGENET_MEAN, IMAGENET_STD
from videoseq.models.motion import BlockMatchMotion
from videoseq.models.streams import build_motion, list_motions
from videoseq.registry import UnknownNameError
from videoseq.models.transforms import frames_to_tensor
from videoseq.io.video import read_frames

SIDE = 112


def write_frames(path, frames: list[np.ndarray], fps: int = 25):
    h, w = frames[0].shape[:2]
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-crf", "18", str(path)]
    subprocess.run(cmd, input=np.stack(frames).tobytes(), check=True)
    return path


def photo() -> np.ndarray:
    import skimage.data
    return cv2.resize(skimage.data.chelsea(), (600, 400), interpolation=cv2.INTER_AREA)   # RGB


def pan(direction: int, n: int = 24) -> list[np.ndarray]:
    """A 240x180 window sliding 160 px left (-1) or right (+1) over the photo."""
    xs = np.linspace(40, 200, n).round().astype(int)[::direction]
    return [photo()[100:280, x:x + 240] for x in xs]


def zoom(direction: int, n: int = 24) -> list[np.ndarray]:
    """The centre crop shrinking (+1: zoom in) or growing (-1: zoom out) by 1.8x, resized to 240x180."""
    img = photo()
    widths = np.linspace(520, 290, n)[::direction]
    out = []
    for w in widths:
        h = w * 0.75
        x0, y0 = 300 - w / 2, 200 - h / 2
        m = np.float32([[240 / w, 0, -x0 * 240 / w], [0, 180 / h, -y0 * 180 / h]])
        out.append(cv2.warpAffine(img, m, (240, 180), flags=cv2.INTER_AREA))
    return out


def motion_of(path, t: int = 8) -> torch.Tensor:
    clip = read_frames(path, count=t, size=SIDE)
    x = frames_to_tensor(clip.frames, size=SIDE, mean=IMAGENET_MEAN, std=IMAGENET_STD)[None]
    return build_motion("blockmatch")(x)[0]                                   # (T, M)


def fields(m: torch.Tensor, scale: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, 4, 4) dx and dy of one scale."""
    per = m.reshape(m.shape[0], 3, 3, 4, 4)
    return per[:, scale, 0], per[:, scale, 1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion")
    return {name: write_frames(root / f"{name}.mp4", frames) for name, frames in
            {"right": pan(+1), "left": pan(-1), "in": zoom(+1), "out": zoom(-1),
             "still": [photo()[100:280, 100:340]] * 24}.items()}


def test_a_pan_reads_as_a_horizontal_shift_of_the_whole_picture(videos):
    # the window moves right, so the picture moves left. Sampled frames are 3 apart: 3 * 160 / 23 = 20.9
    # px of 240; read_frames scales 180 -> 112 (x 0.622) and crops the centre: 13 px of 112 = 1.16 tenths
    # of the frame per step, which only the coarsest scale (16 px, reach 3 px = 1.9 tenths) can follow
    for name, sign in (("right", -1), ("left", +1)):
        dx, dy = fields(motion_of(videos[name]), scale=2)
        assert torch.all(dx[0] == 0) and torch.all(dy[0] == 0)                 # no previous frame
        mean_dx = dx[1:].mean().item()
        assert sign * mean_dx == pytest.approx(1.16, rel=0.2), name
        assert (torch.sign(dx[1:]) == sign).float().mean() > 0.9
        assert dy[1:].abs().median() < 0.1 and abs(dy[1:].mean()) < 0.1


def test_a_zoom_reads_as_a_radial_field(videos):
    for name, sign in (("in", +1), ("out", -1)):
        dx, dy = fields(motion_of(videos[name]), scale=0)
        left, right = dx[1:, :, 0].mean(), dx[1:, :, 3].mean()                  # outer columns
        top, bottom = dy[1:, 0, :].mean(), dy[1:, 3, :].mean()
        assert sign * (right - left) > 0.1 and sign * (bottom - top) > 0.1, name
        assert abs(dx[1:].mean()) < 0.1                                       # no net shift


def test_a_still_shot_and_a_fade_read_as_no_motion(videos, tmp_path):
    m = motion_of(videos["still"])
    dx, dy = fields(m, 0)
    assert dx.abs().max() < 0.05 and dy.abs().max() < 0.05
    base = photo()[100:280, 100:340].astype(np.float32)
    faded = write_frames(tmp_path / "fade.mp4", [(base * g).astype(np.uint8) for g in np.linspace(1, 0.3, 24)])
    dx, dy = fields(motion_of(faded), 0)
    assert dx.abs().mean() < 0.05 and dy.abs().mean() < 0.05


def test_black_frames_and_flat_backgrounds_read_as_no_motion(tmp_path):
    """A fade from black and back (real H.264): steps touching a black frame, and cells of a uniform
    background, have no texture to match; they must read as zero motion, zero confidence, not as the
    first shift tried (-3 px)."""
    base = photo()[100:280, 100:340].astype(np.float32)
    gains = [0.0] * 4 + list(np.linspace(0.2, 1.0, 8)) + [0.0] * 4
    video = write_frames(tmp_path / "black.mp4", [(base * g).astype(np.uint8) for g in gains], fps=16)
    m = motion_of(video, t=16).reshape(16, 3, 3, 16)                          # (T, scales, dx/dy/conf, cells)
    touching_black = [1, 2, 3, 4, 12, 13, 14, 15]                             # step t reads frames t-1, t
    assert m[touching_black].abs().max() == 0
    assert m[6:12, :, 2].mean() > 0.05                                       # the photo itself still matches
    flat = torch.zeros(1, 4, 3, 64, 64)
    flat[:, :, :, 8:24, 8:24] = 1.0                                           # a square on a uniform ground
    flat[:, 2:, :, 8:24, 8:24] = 0.0
    flat[:, 2:, :, 10:26, 8:24] = 1.0                                         # moved 2 px down at step 2
    out = BlockMatchMotion()(flat)[0].reshape(4, 3, 3, 16)
    ground = [3, 7, 11, 12, 13, 14, 15]   # cells (4x4 grid) whose search windows never reach the square
    assert out[:, :, :2, ground].abs().max() == 0                             # no motion where nothing is
    assert out[2, 0, 1, 0] > 0.1 and out[1, 0, 1, 0].abs() < 1e-6            # the square: down at step 2 only


def test_each_clip_and_each_step_stands_alone(videos):
    """Batching never changes a clip's motion, and step t depends only on frames t-1 and t (padding
    after the valid steps cannot leak into them)."""
    motion = BlockMatchMotion()
    clips = [read_frames(videos[n], count=8, size=SIDE).frames for n in ("left", "in")]
    x = frames_to_tensor(np.stack(clips), size=SIDE, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    both = motion(x)
    assert both.shape == (2, 8, motion.out_dim) and motion.out_dim == 144
    assert torch.equal(both[1:], motion(x[1:]))
    padded = x[:1].clone()
    padded[:, 5:] = 0                                                           # steps 5.. are padding
    assert torch.equal(motion(padded)[:, :5], both[:1, :5])
    assert torch.equal(motion(x[:1, :5]), both[:1, :5])


def test_registry_and_errors():
    assert list_motions() == ["none", "blockmatch", "photometric", "rgbdiff", "speed", "tempo"]
    assert build_motion("none") is None and build_motion(None) is None
    with pytest.raises(UnknownNameError, match="unknown motion 'flow'; choose from blockmatch, photometric, rgbdiff, speed, tempo"):
        build_motion("flow")
    with pytest.raises(ValueError, match="bad geometry"):
        BlockMatchMotion(scales=(2,), grid=4)
    one = torch.zeros(1, 1, 3, 32, 32)
    assert BlockMatchMotion()(one).shape == (1, 1, 144)                           # a single frame: no motion
