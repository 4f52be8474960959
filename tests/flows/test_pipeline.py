"""The pipeline flow on a tiny real dataset under a real Prefect test harness."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

# The harness's API server takes 40-100 s to start on the shared 2-core machine: every test here is slow.
pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _subflow_runs(client, parent_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    return client.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])))


def _task_runs(client, flow_run_id, prefix: str):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [r for r in runs if r.name.startswith(prefix)]


def _artifacts(client, flow_run_id) -> dict:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def test_pipeline_reports_a_broken_video_then_reruns_without_extracting(
        tiny_dataset_with_broken, tiny_config, tmp_path):
    from flows.pipeline import pipeline

    run_dir = tmp_path / "run"
    state = pipeline(root=str(tiny_dataset_with_broken), run_dir=str(run_dir), config=tiny_config,
                     chunk_size=5, return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    assert (summary["extracted"], summary["cached"], summary["failed"]) == (16, 0, [])
    assert sorted(r["videos"] for r in summary["chunks"]) == [1, 5, 5, 5]
    assert summary["compare_bytes_hashed"] == 0

    for name in ("metrics.json", "report.md", "index.json", "models/per_frame/model.pt", "models/lstm/model.pt"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["models"]) == {"per_frame", "lstm"}
    assert summary["accuracy"] == {h: m["accuracy"] for h, m in metrics["models"].items()}
    skipped = {Path(s["path"]).name: s["reason"] for s in metrics["dataset"]["skipped"]}
    assert list(skipped) == ["broken.avi"] and skipped["broken.avi"]

    with _client() as client:
        run_id = state.state_details.flow_run_id
        artifacts = _artifacts(client, run_id)
        assert {"videoseq-report", "videoseq-metrics", "videoseq-skipped", "training-progress"} <= set(artifacts)
        assert artifacts["videoseq-report"].data == (run_dir / "report.md").read_text()
        assert {row["head"] for row in json.loads(artifacts["videoseq-metrics"].data)} == {"per_frame", "lstm"}
        assert float(artifacts["training-progress"].data) == pytest.approx(100.0)
        (extraction,) = _subflow_runs(client, run_id)
        assert float(_artifacts(client, extraction.id)["extraction-progress"].data) == pytest.approx(100.0)
        first = _task_runs(client, extraction.id, "chunk-")
        assert len(first) == 4 and all(r.state.name == "Completed" for r in first)

    written = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    again = pipeline(root=str(tiny_dataset_with_broken), run_dir=str(run_dir), config=tiny_config,
                     chunk_size=5, return_state=True)
    assert again.is_completed(), again
    assert (again.result()["extracted"], again.result()["cached"]) == (0, 16)
    # the same config and videos: the run directory is up to date, nothing trained or rewritten
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == written
    assert again.result()["accuracy"] == summary["accuracy"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run")) == []
    # every chunk's record is in the cache: none is sent to a worker again
    assert [r["cached_run"] for r in again.result()["chunks"]] == [True] * 4
    assert sorted(r["videos"] for r in again.result()["chunks"]) == [1, 5, 5, 5]
    with _client() as client:
        (extraction,) = _subflow_runs(client, again.state_details.flow_run_id)
        assert _task_runs(client, extraction.id, "chunk-") == []


def test_a_video_that_breaks_after_the_scan_is_reported_by_its_chunk(tiny_dataset, tmp_path):
    from flows.pipeline import prepare_videos

    good = sorted(str(p) for p in (tiny_dataset / "test").rglob("*.avi"))
    broken = tmp_path / "cut.avi"
    broken.write_bytes(Path(good[0]).read_bytes()[:300])          # a download cut short
    missing = str(tmp_path / "gone.avi")                            # deleted after the scan
    paths = [*good, str(broken), missing]
    config = {"sampling": {"frames": 6, "size": 32}, "train": {"mode": "finetune"},
              "model": {"encoder": "small_cnn", "weights": None},
              "runtime": {"cache_dir": str(tmp_path / "cache"), "device": "cpu"}}
    videos_file = tmp_path / "videos.json"
    videos_file.write_text(json.dumps([[p, 1] for p in paths]))
    state = prepare_videos(str(videos_file), config, chunk_size=4, return_state=True)
    assert state.is_completed(), state
    outcome = state.result()
    assert (outcome["extracted"], outcome["cached"], outcome["failed_chunks"]) == (len(good), 0, [])
    failed = dict(outcome["failed"])
    assert set(failed) == {str(broken), missing}
    assert all(reason and "\n" not in reason for reason in failed.values())
    with _client() as client:
        runs = _task_runs(client, state.state_details.flow_run_id, "chunk-")
        assert len(runs) == 2 and {r.state.name for r in runs} == {"Completed"}


def test_pipeline_on_a_two_worker_dask_cluster(tiny_dataset, tiny_config, tmp_path):
    from flows.pipeline import pipeline

    state = pipeline(root=str(tiny_dataset), run_dir=str(tmp_path / "run"), config=tiny_config,
                     overrides=["runtime.task_runner=dask"], return_state=True)
    assert state.is_completed(), state
    assert state.result()["extracted"] == 16
    assert (tmp_path / "run" / "metrics.json").is_file()
