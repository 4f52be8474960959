"""Chunks of videos prepared ahead of compare (`videoseq.learn.chunks`), alone and in the pipeline flow
on a real 2-worker Dask cluster: compare then decodes, hashes and encodes nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from videoseq.config import load_config
from videoseq.models.encoders import FrameEncoder

# small and fast: 6 frames of 32x32, 3 epochs; the torch engine so the forward hook sees every frame
TINY = ["model.encoder=small_cnn", "model.weights=null", "model.pooling=grid2", "model.hidden=32",
        "sampling.frames=6", "sampling.size=32", "model.input_size=32", "sampling.train_views=2",
        "train.mode=frozen", "train.epochs=3", "train.batch_size=8", "train.patience=3", "train.seeds=1",
        "compare.heads=[per_frame,lstm]", "compare.bootstrap=50", "runtime.workers=0",
        "runtime.progress=false", "runtime.device=cpu", "runtime.engine=torch"]


class Counters:
    """Frames through any FrameEncoder (a global forward hook), clips decoded by the frame cache
    (`io.video.read_frames`, called through) and bytes read to hash files, in this process."""

    def __init__(self):
        import videoseq.io.video as video

        self.video = video

    def __enter__(self):
        from videoseq.data.fingerprints import bytes_hashed

        self.frames = self.decodes = 0
        self._hashed = bytes_hashed()
        real = self.real = self.video.read_frames

        def counting(*args, **kwargs):
            self.decodes += 1
            return real(*args, **kwargs)

        def hook(module, args, output):
            if isinstance(module, FrameEncoder):
                self.frames += args[0].shape[0]
        self.video.read_frames = counting
        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        from videoseq.data.fingerprints import bytes_hashed

        self.handle.remove()
        self.video.read_frames = self.real
        self.hashed = bytes_hashed() - self._hashed


@pytest.fixture
def fingerprints(tmp_path, monkeypatch) -> Path:
    """A fingerprint store of the test's own, seen by every process started from here."""
    monkeypatch.setenv("VIDEOSEQ_FINGERPRINTS", str(tmp_path / "fingerprints"))
    return tmp_path / "fingerprints"


def test_a_chunk_reports_broken_videos_and_leaves_compare_nothing_to_do(tiny_dataset, tmp_path, fingerprints):
    from videoseq.data.dataset import scan_dataset
    from videoseq.data.plan import extraction_plan
    from videoseq.learn.chunks import prepare_chunk, prepared_record
    from videoseq.learn.prepare import prepare_data

    config = load_config(overrides=TINY + [f"runtime.cache_dir={tmp_path / 'cache'}"])
    index = scan_dataset(tiny_dataset, config.data, workers=0)
    plan = extraction_plan(config)
    videos = [(e.path, plan.views(e.split)) for e in index.ok()]
    cut = tmp_path / "cut.avi"
    cut.write_bytes(Path(videos[0][0]).read_bytes()[:300])             # a download cut short
    gone = str(tmp_path / "gone.avi")                                   # deleted after the scan
    with Counters() as work:
        result = prepare_chunk([*videos[:3], (str(cut), 2), (gone, 1), *videos[3:]], config)
    clips = sum(v for _, v in videos)
    assert result.videos == len(videos) + 2 and result.extracted == len(videos)
    assert [p for p, _ in result.failed] == [str(cut), gone]
    assert all(reason and "\n" not in reason for _, reason in result.failed)
    assert (result.clips_extracted, result.clips_cached) == (clips, 0)
    assert result.frames_encoded == work.frames == 6 * clips and result.clips_streamed == clips
    assert json.loads(json.dumps(result.to_json()))["failed"] == [list(f) for f in result.failed]

    # a chunk with failures leaves no record: it is tried again next time
    assert prepared_record([*videos[:3], (str(cut), 2), (gone, 1), *videos[3:]], config) is None
    assert prepared_record(videos, config) is None
    again = prepare_chunk(videos, config)                               # everything cached
    assert (again.extracted, again.clips_cached, again.frames_encoded, again.clips_streamed) == (0, clips, 0, 0)
    # a chunk that prepared every video leaves its record, found by content, config and min_frames
    assert prepared_record(videos, config) == again.to_json()
    assert prepared_record(videos[1:], config) is None
    assert prepared_record(videos, config, min_frames=4) is None
    other = load_config(overrides=TINY + [f"runtime.cache_dir={tmp_path / 'cache'}", "sampling.frames=5"])
    assert prepared_record(videos, other) is None
    with Counters() as compare:
        data = prepare_data(index, config, device=torch.device("cpu"), progress=False)
    assert (compare.frames, compare.decodes, compare.hashed) == (0, 0, 0)
    assert len(data.train.paths) == len(index.ok("train"))


def test_a_chunk_enforces_min_frames_on_the_decoded_count(tiny_dataset, tmp_path, fingerprints):
    from videoseq.learn.chunks import prepare_chunk

    config = load_config(overrides=TINY + [f"runtime.cache_dir={tmp_path / 'cache'}", "train.mode=finetune"])
    good = sorted(str(p) for p in (tiny_dataset / "test").rglob("*.avi"))
    result = prepare_chunk([(p, 1) for p in good], config, min_frames=10_000)
    assert [p for p, _ in result.failed] == good and result.extracted == 0
    assert result.frames_encoded == 0                                    # finetune: frames only
    assert all(reason.startswith("too short") for _, reason in result.failed)


def _strip(metrics: dict) -> dict:
    """metrics without wall-clock times (the only values allowed to differ between runs)."""
    m = json.loads(json.dumps(metrics))
    m.pop("seconds")
    for v in m["models"].values():
        v.pop("train_seconds")
    return m


@pytest.fixture(scope="module")
def direction_root(tmp_path_factory) -> Path:
    from videoseq.synthetic.generate import generate_dataset

    dest = tmp_path_factory.mktemp("data") / "direction"
    return generate_dataset(dest, task="direction", videos_per_class=5, frames=(12, 16), size=(64, 64),
                            workers=0, progress=False)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_pipeline_chunks_on_two_dask_workers_match_threads(direction_root, tmp_path, fingerprints):
    from dask.distributed import LocalCluster

    from flows.pipeline import pipeline

    def run(name: str, runtime: list[str]) -> tuple[dict, dict, Counters]:
        overrides = TINY + [f"runtime.cache_dir={tmp_path / name / 'cache'}", *runtime]
        with Counters() as here:
            state = pipeline(root=str(direction_root), run_dir=str(tmp_path / name / "run"), overrides=overrides,
                             chunk_size=3, return_state=True)
        assert state.is_completed(), state
        summary = state.result()
        return summary, json.loads(Path(summary["metrics"]).read_text()), here

    threads, threads_metrics, in_threads = run("threads", ["runtime.task_runner=threads"])
    encoded = sum(r["frames_encoded"] for r in threads["chunks"])
    assert len(threads["chunks"]) >= 4 and encoded > 0
    # chunks ran in this process: every frame it encoded or decoded was a chunk's, none compare's
    assert in_threads.frames == encoded
    assert in_threads.decodes == sum(r["clips_extracted"] for r in threads["chunks"])
    assert threads["compare_bytes_hashed"] == 0

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask, dask_metrics, in_dask = run("dask", ["runtime.task_runner=dask",
                                                   f"runtime.dask_address={cluster.scheduler_address}"])
    chunks = dask["chunks"]
    assert len(chunks) >= 4 and dask["failed"] == [] and dask["failed_chunks"] == []
    assert len({(r["host"], r["pid"]) for r in chunks if r["frames_encoded"]}) == 2      # both workers encoded
    assert sum(r["frames_encoded"] for r in chunks) == encoded
    # chunks ran on the workers: this process (scan, compare) encoded, decoded and hashed nothing
    assert (in_dask.frames, in_dask.decodes, dask["compare_bytes_hashed"]) == (0, 0, 0)
    assert any(fingerprints.rglob("*.json"))        # the workers hashed into the store this test set up
    assert _strip(dask_metrics) == _strip(threads_metrics)
