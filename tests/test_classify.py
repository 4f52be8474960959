"""`videoseq classify` and predict.py: real tiny videos, real (untrained, seeded) small_cnn bundles."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from media import truncate, write_empty, write_h264, write_opencv, write_text
from test_bundle import _edit_config, _Payload, make_bundle
from test_dataset import stalled_open

from videoseq.models.bundle import load_bundle
from videoseq.data.cache import FrameCache
from videoseq.cli import main
from videoseq.config import INFERENCE_BATCH_SIZE
from videoseq.infer.predict import FailedInput, Prediction, classify_paths

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    good = {f"v{i}": write_opencv(d / f"v{i}.mp4", count=10 + 3 * i, width=48, height=40) for i in range(4)}
    good["h264"] = write_h264(d / "h264.mp4", count=20, width=48, height=40, gop=5)
    return good


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    make_bundle(run / "models" / "per_frame", head="per_frame", seed=1, val_accuracy=0.4)
    make_bundle(run / "models" / "lstm", head="lstm", seed=2, val_accuracy=0.7)
    return run


@pytest.fixture(scope="module")
def lstm(run_dir: Path):
    return load_bundle(run_dir / "models" / "lstm")


def test_results_are_identical_alone_and_in_any_batch(videos, lstm) -> None:
    paths = [str(p) for p in videos.values()]
    for batch_size in (1, 3, INFERENCE_BATCH_SIZE):   # 3 videos: full, and padded with 1 blank clip
        alone = [next(classify_paths([p], lstm, batch_size=batch_size)) for p in paths]
        together = list(classify_paths(paths, lstm, batch_size=batch_size, workers=2))
        reversed_ = list(classify_paths(paths[::-1], lstm, batch_size=batch_size))[::-1]
        assert [r.path for r in together] == paths                      # input order
        for a, b, c in zip(alone, together, reversed_):
            assert isinstance(a, Prediction) and a.probs == b.probs == c.probs   # exact equality
            assert np.array_equal(a.steps, b.steps) and np.array_equal(a.steps, c.steps)
            assert a.frames == 4 and a.steps.shape == (4, 3) and a.head == "lstm"
            assert abs(sum(a.probs.values()) - 1) < 1e-9 and a.label == max(a.probs, key=a.probs.get)


def test_decoding_runs_a_bounded_distance_ahead(videos, lstm) -> None:
    """Memory stays flat over any number of files: paths are pulled lazily, at most `prefetch` ahead."""
    pulled: list[int] = []

    def paths():
        for i in range(30):
            pulled.append(i)
            yield videos["v0"]

    for batch_size in (1, INFERENCE_BATCH_SIZE):
        pulled.clear()
        ahead = []
        for k, result in enumerate(classify_paths(paths(), lstm, workers=2, prefetch=5, batch_size=batch_size),
                                   start=1):
            assert isinstance(result, Prediction)
            ahead.append(len(pulled) - k)
        # ahead: up to 5 decoded clips waiting, one batch in each of the 2 inference workers, and the
        # batch being gathered (B - 1 clips)
        assert len(ahead) == 30 and ahead[0] >= 1                        # decoding did run ahead
        assert max(ahead) <= 5 + 2 * batch_size + batch_size - 1
    from videoseq.infer.predict import Sampling, prefetch_depth
    assert prefetch_depth(Sampling(16, 224, "repeat"), workers=2, batch_size=1) * 16 * 224 * 224 * 3 \
        <= 128 << 20                                                     # the default: a memory budget


def test_capture_threads_are_per_thread_and_validated(videos) -> None:
    """A decode worker's choice applies to the captures it opens, not to other threads'."""
    import threading

    import cv2

    from videoseq.io import decode

    def threads_of_a_capture() -> int:
        cap = decode.open_capture(videos["h264"])
        try:
            return int(cap.get(cv2.CAP_PROP_N_THREADS))
        finally:
            cap.release()

    seen: dict[str, int] = {}

    def worker() -> None:
        decode.set_capture_threads(1)
        seen["worker"] = threads_of_a_capture()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["worker"] == 1
    assert threads_of_a_capture() == decode.DECODE_THREADS == decode.capture_threads()   # untouched here
    with pytest.raises(ValueError, match="at least 1"):
        decode.set_capture_threads(0)


def test_side_by_side_decodes_split_ffmpeg_threads_and_inference_threads_are_restored(
        videos, lstm, caplog) -> None:
    """Several files: they decode in worker processes, each of the 2 workers' captures with
    DECODE_THREADS // 2 FFmpeg threads; a lone file decodes here (no process start-up) with them all.
    The inference workers' torch setting never leaks to the caller."""
    import logging
    import threading

    from videoseq.io.decode import DECODE_THREADS
    from videoseq.infer.predict import inference_threads

    torch.set_num_threads(2)
    with caplog.at_level(logging.DEBUG, logger="videoseq.infer.clips"):
        list(classify_paths([videos["v0"], videos["v1"]], lstm, workers=2))
        shared = [r.getMessage() for r in caplog.records if "FFmpeg thread" in r.getMessage()]
        caplog.clear()
        list(classify_paths([videos["v0"]], lstm, workers=2))
        lone = [r.getMessage() for r in caplog.records if "FFmpeg thread" in r.getMessage()]
    assert torch.get_num_threads() == 2
    later: list[int] = []                       # threads started afterwards get the caller's count too
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [2]
    assert len(shared) == 2 and all(f"with {max(1, DECODE_THREADS // 2)} FFmpeg" in m for m in shared)
    assert all("in worker process" in m and f"process {os.getpid()} " not in m for m in shared)
    assert len(lone) == 1 and f"with {DECODE_THREADS} FFmpeg" in lone[0] and "in this process" in lone[0]
    cores = len(os.sched_getaffinity(0))
    assert inference_threads(2) == max(1, cores // 2 - 1) and inference_threads(cores + 5) == 1


def test_prediction_matches_the_model_run_by_hand(videos, lstm) -> None:
    from videoseq.models.transforms import frames_to_tensor
    from videoseq.io.video import read_frames

    clip = read_frames(videos["h264"], count=4, size=32)
    x = frames_to_tensor(clip.frames, size=lstm.input_size, mean=lstm.mean, std=lstm.std)[None]  # (1, T, 3, S, S)
    with torch.inference_mode():
        expected = torch.softmax(lstm.model(x, torch.from_numpy(clip.mask)[None]).double(), 1)[0]
    got = next(classify_paths([videos["h264"]], lstm))
    assert np.allclose(list(got.probs.values()), expected.numpy(), atol=1e-6)
    assert got.indices.tolist() == clip.indices.tolist()


def test_failures_keep_their_place_and_the_rest_still_run(videos, lstm, tmp_path) -> None:
    bad = write_text(tmp_path / "notes.mp4")
    paths = [videos["v0"], bad, videos["v1"], tmp_path / "gone.mp4", videos["v2"]]
    results = list(classify_paths(paths, lstm, batch_size=2))
    assert [type(r) for r in results] == [Prediction, FailedInput, Prediction, FailedInput, Prediction]
    assert [r.path for r in results] == [str(p) for p in paths]
    assert "not a video" in results[1].error and str(bad) not in results[1].error


class _SegfaultsOn(FrameCache):
    """A frame cache whose decode kills its process for one file, as a decoder segfault would."""

    def __init__(self, root: Path, fatal: str):
        super().__init__(root)
        self.fatal = fatal

    def load_or_extract(self, path, sampling, *, size, view=0):
        if Path(path).name == self.fatal:
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().load_or_extract(path, sampling, size=size, view=view)


def test_a_decoder_process_that_dies_costs_only_its_file(videos, lstm, tmp_path) -> None:
    paths = [str(videos[k]) for k in ("v0", "v1", "v2", "v3", "h264")]
    cache = _SegfaultsOn(tmp_path / "frames", fatal="v1.mp4")
    results = list(classify_paths(paths + [paths[1]], lstm, workers=2, cache=cache))
    assert [r.path for r in results] == paths + [paths[1]]
    assert [type(r) for r in results] == [Prediction, FailedInput, Prediction, Prediction, Prediction, FailedInput]
    assert results[1].error == "the decoder crashed (worker process died (exit code -11))"
    clean = list(classify_paths(paths, lstm, workers=2))         # the others: exactly as without a crash
    assert all(r.probs == c.probs for r, c in zip(results, clean) if isinstance(r, Prediction))


def _raises_unpicklable(x: int):
    if x == 1:
        raise _Unpicklable(threading.Lock())
    return threading.Lock() if x == 2 else x * 10


class _Unpicklable(Exception):
    pass


def test_process_stream_returns_errors_as_text_and_stops_early() -> None:
    from videoseq.io.pool import JobError, ProcessStream

    with ProcessStream(workers=2) as stream:
        futures = [stream.submit(_raises_unpicklable, x) for x in range(4)]
        results = [f.result(timeout=60) for f in futures]
    assert results[0] == 0 and results[3] == 30
    assert isinstance(results[1], JobError) and results[1].reason.startswith("_Unpicklable: <unlocked")
    assert isinstance(results[2], JobError) and results[2].reason.startswith("result cannot be sent back")
    stream = ProcessStream(workers=1)                                 # shut down with jobs queued
    futures = [stream.submit(time.sleep, 0.2) for _ in range(20)]
    started = time.monotonic()
    stream.shutdown(cancel=True)
    assert time.monotonic() - started < 5 and sum(f.cancelled() for f in futures) >= 15


def _pid_or_hang(x: int) -> int:
    if x == 1:
        time.sleep(600)                                # a decode that never ends
    return os.getpid()


def test_process_stream_timeout_kills_the_hung_job_and_replaces_its_worker() -> None:
    from videoseq.io.pool import JobCrash, JobTimeout, ProcessStream

    with ProcessStream(workers=1, timeout=1) as stream:
        first = stream.submit(_pid_or_hang, 0).result(timeout=60)
        started = time.monotonic()
        hung = stream.submit(_pid_or_hang, 1).result(timeout=60)
        waited = time.monotonic() - started
        after = [stream.submit(_pid_or_hang, 2).result(timeout=60) for _ in range(2)]
    assert isinstance(hung, JobTimeout) and isinstance(hung, JobCrash) and hung.reason == "timed out after 1 s"
    assert 1 <= waited < 20
    assert after[0] == after[1] != first                # a new worker, kept for the jobs after it
    with pytest.raises(OSError):
        os.kill(first, 0)                                # the hung worker is gone
    with ProcessStream(workers=1, timeout=0) as stream:  # 0: no limit
        assert stream.submit(time.sleep, 1.2).result(timeout=60) is None


def test_classify_reports_a_fifo_and_a_stalled_file_and_classifies_the_rest(videos, lstm, run_dir, tmp_path,
                                                                            capsys) -> None:
    """A FIFO is reported at once; a file whose read hangs (a stalled mount) after the timeout, in
    worker processes (many files) and in the decode thread (one file); the others are classified as
    they would be without them."""
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    slow = write_opencv(tmp_path / "slow.mp4", count=10, width=48, height=40)
    good = [str(videos[k]) for k in ("v0", "v1", "v2")]
    paths = [good[0], str(fifo), str(slow), good[1], good[2]]
    clean = list(classify_paths(good, lstm, workers=2))
    with stalled_open(slow):
        started = time.monotonic()
        results = list(classify_paths(paths, lstm, workers=2, timeout=2))
        assert time.monotonic() - started < 40
        assert [r.path for r in results] == paths
        assert [type(r) for r in results] == [Prediction, FailedInput, FailedInput, Prediction, Prediction]
        assert results[1].error == "not a file" and results[2].error == "timed out after 2 s"
        assert [r.probs for r in results if isinstance(r, Prediction)] == [c.probs for c in clean]
        started = time.monotonic()
        alone = list(classify_paths([slow], lstm, timeout=1))          # one file: the decode thread
        assert alone == [FailedInput(str(slow), "timed out after 1 s")] and time.monotonic() - started < 20
        rc = main(["classify", str(fifo), str(slow), good[0], "--model", str(run_dir), "--json",
                   "--timeout", "2"])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert rc == 1 and lines[0]["path"] == str(fifo) and "not a file" in lines[0]["error"]
    assert lines[1] == {"path": str(slow), "error": "timed out after 2 s"} and lines[2]["path"] == good[0]
    assert err.count("\n") == 2 and "Traceback" not in err


def test_workers_that_die_on_start_up_are_an_error_not_crashed_files(tmp_path) -> None:
    """A script without `if __name__ == '__main__':` re-runs itself in each worker: say so, once."""
    script = tmp_path / "unguarded.py"
    script.write_text("from videoseq.io.pool import ProcessStream\n"
                      "with ProcessStream(workers=1) as s:\n"
                      "    print(s.submit(abs, -1).result())\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode != 0 and "WorkersUnavailable" in proc.stderr
    assert "if __name__ == '__main__':" in proc.stderr


BAD_INPUTS = [  # (make the input in tmp, expected reason on stderr)
    (lambda d, v: d / "missing.mp4", "no such file or directory"),
    (lambda d, v: (d / "empty").mkdir() or d / "empty", "no video files in this folder"),
    (lambda d, v: write_text(d / "notes.mp4"), "not a video"),
    (lambda d, v: truncate(v["h264"], d / "cut.mp4", fraction=0.5), "truncated"),
    (lambda d, v: write_empty(d / "zero.mp4"), "empty file"),
    (lambda d, v: d / "nothing-*.mp4", "pattern matches no files"),
]


@pytest.mark.parametrize("make, reason", BAD_INPUTS,
                         ids=["missing", "empty-dir", "text-as-mp4", "truncated", "zero-byte", "glob"])
def test_each_bad_input_is_one_line_and_exit_1(make, reason, videos, run_dir, tmp_path, capsys) -> None:
    bad = make(tmp_path, videos)
    rc = main(["classify", str(bad), str(videos["v0"]), "--model", str(run_dir), "--json"])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"path": str(bad), "error": lines[0]["error"]} and reason in lines[0]["error"]
    assert lines[1]["path"] == str(videos["v0"]) and lines[1]["head"] == "lstm"  # the rest still ran
    assert err.count("\n") == 1 and str(bad) in err and reason in err and "Traceback" not in err


def test_a_folder_of_good_and_broken_videos(videos, run_dir, tmp_path, capsys) -> None:
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    write_opencv(folder / "a.mp4", count=12, width=48, height=40)
    write_h264(folder / "sub" / "b.mkv", count=12, width=48, height=40)
    write_empty(folder / "c.mp4")
    truncate(videos["h264"], folder / "d.mp4", fraction=0.4)
    (folder / "readme.txt").write_text("not scanned: not a video extension")
    rc = main(["classify", str(folder), "--model", str(run_dir)])
    out, err = capsys.readouterr()
    assert rc == 1
    rows = out.splitlines()
    assert "lstm" in rows[0] and len(rows) == 3                       # header + 2 good videos
    assert rows[1].endswith("a.mp4") and rows[2].endswith("b.mkv")
    assert sorted(line.split(": ")[1].rsplit("/", 1)[-1] for line in err.splitlines()) == ["c.mp4", "d.mp4"]


def test_json_lines_follow_the_design(videos, run_dir, capsys) -> None:
    assert main(["classify", str(videos["v0"]), str(videos["v1"]), "--model", str(run_dir),
                 "--json", "--batch-size", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [set(x) for x in lines] == [{"path", "label", "score", "probs", "head", "frames", "seconds"}] * 2
    assert lines[0]["probs"].keys() == {"left", "right", "still"} and lines[0]["frames"] == 4
    assert lines[0]["score"] == max(lines[0]["probs"].values()) and lines[0]["head"] == "lstm"


def test_compare_runs_every_head_and_head_picks_one(videos, run_dir, capsys) -> None:
    assert main(["classify", str(videos["v0"]), "--model", str(run_dir), "--compare", "--json"]) == 0
    heads = [json.loads(line)["head"] for line in capsys.readouterr().out.splitlines()]
    assert heads == ["per_frame", "lstm"]
    assert main(["classify", str(videos["v0"]), "--model", str(run_dir), "--head", "per_frame", "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "per_frame" in out[0] and out[1].count(", ") == 1          # top-2 shown
    assert main(["classify", str(videos["v0"]), "--model", str(run_dir), "--compare", "--head", "lstm"]) == 2


def test_timeline_png_per_video(videos, run_dir, tmp_path, capsys) -> None:
    import cv2

    assert main(["classify", str(videos["v0"]), str(videos["v1"]), "--model", str(run_dir),
                 "--timeline", str(tmp_path / "plots")]) == 0
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["v0.timeline.png", "v1.timeline.png"]
    image = cv2.imread(str(pngs[0]))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 300
    assert main(["classify", str(videos["v0"]), str(videos["v1"]), "--model", str(run_dir),
                 "--timeline", str(tmp_path / "one.png")]) == 2          # one file, two videos
    assert "give a folder" in capsys.readouterr().err


def _corrupt(b: Path) -> None:
    (b / "model.pt").write_bytes(b"PK\x03\x04 not really a zip")


def _malicious(b: Path) -> None:
    state = torch.load(b / "model.pt", weights_only=True)
    torch.save({**state, "x": _Payload(b.parent / "payload-ran")}, b / "model.pt")


BAD_MODELS = [
    (lambda b: b.parent / "nowhere", "no such model bundle or run folder"),
    (lambda b: _corrupt(b) or b, "corrupt or not a torch file"),
    (lambda b: _edit_config(b, encoder__name="vit_huge") or b, "unknown encoder 'vit_huge'"),
    (lambda b: _edit_config(b, classes=["a", "b"]) or b, "lists 2 classes but model.pt"),
    (lambda b: _edit_config(b, videoseq_version="0.0.1") or b, "incompatible with videoseq"),
    (lambda b: _malicious(b) or b, "refused to load"),
]


@pytest.mark.parametrize("breaks, reason", BAD_MODELS,
                         ids=["nowhere", "corrupt", "unknown-encoder", "class-count", "version", "pickle"])
def test_an_unusable_model_is_exit_2(breaks, reason, videos, tmp_path, capsys) -> None:
    model = breaks(make_bundle(tmp_path / "bundle"))
    assert main(["classify", str(videos["v0"]), "--model", str(model)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and reason in err and "Traceback" not in err
    assert not (tmp_path / "payload-ran").exists()


@pytest.mark.slow  # a fresh interpreter importing torch + torchvision: 5-45 s on a busy 2-core box
def test_a_separate_process_never_imports_prefect_and_prints_only_our_lines(videos, run_dir,
                                                                          tmp_path) -> None:
    cut = truncate(videos["h264"], tmp_path / "cut.mp4", fraction=0.5)
    code = ("import sys; from videoseq.cli import main; "
            f"rc = main(['classify', {str(cut)!r}, {str(videos['v0'])!r}, '--model', {str(run_dir)!r}, '--json']); "
            "assert 'prefect' not in sys.modules, 'prefect imported'; print(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.stdout.splitlines()[-1] == "1", proc.stderr
    assert json.loads(proc.stdout.splitlines()[1])["head"] == "lstm"
    lines = proc.stderr.splitlines()        # ours only: no OpenCV/FFmpeg log lines
    assert len(lines) == 1 and lines[0].startswith(f"videoseq classify: {cut}: truncated"), lines
    help_proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "videoseq", "classify", "--help"],
                               capture_output=True, text=True, cwd=REPO, timeout=60)
    assert help_proc.returncode == 0 and "--timeline" in help_proc.stdout
    imported = {line.split("|")[-1].strip() for line in help_proc.stderr.splitlines()}
    assert not imported & {"torch", "cv2", "prefect", "matplotlib"}  # --help stays instant


def test_debug_shows_the_traceback(videos, tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "videoseq", "classify", str(videos["v0"]), "--model",
                           str(tmp_path / "nowhere"), "--debug"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "BundleError" in proc.stderr
