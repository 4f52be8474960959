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
                     return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    assert (summary["extracted"], summary["cached"], summary["failed"]) == (16, 0, [])

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
        first = _task_runs(client, extraction.id, "extract-")
        assert len(first) == 16 and all(r.state.name == "Completed" for r in first)

    again = pipeline(root=str(tiny_dataset_with_broken), run_dir=str(run_dir), config=tiny_config,
                     return_state=True)
    assert again.is_completed(), again
    assert (again.result()["extracted"], again.result()["cached"]) == (0, 16)
    with _client() as client:
        (extraction,) = _subflow_runs(client, again.state_details.flow_run_id)
        second = _task_runs(client, extraction.id, "extract-")
        assert len(second) == 16 and {r.state.name for r in second} == {"Cached"}


def test_a_video_that_breaks_at_extraction_fails_its_own_task_only(tiny_dataset, tmp_path):
    from flows.pipeline import extract_videos

    good = sorted(str(p) for p in (tiny_dataset / "test").rglob("*.avi"))
    broken = tmp_path / "cut.avi"
    broken.write_bytes(Path(good[0]).read_bytes()[:300])          # a download cut short
    missing = str(tmp_path / "gone.avi")                            # deleted after the scan
    paths = [*good, str(broken), missing]
    sampling = {"frames": 6, "size": 32, "short": "repeat", "train_views": 1}
    state = extract_videos(paths, [1] * len(paths), sampling, 32, str(tmp_path / "frames"),
                           return_state=True)
    assert state.is_completed(), state
    outcome = state.result()
    assert sorted(outcome["extracted"]) == good and outcome["cached"] == []
    failed = dict(outcome["failed"])
    assert set(failed) == {str(broken), missing}
    assert all(reason and "\n" not in reason for reason in failed.values())
    with _client() as client:
        runs = {r.name: r for r in _task_runs(client, state.state_details.flow_run_id, "extract-")}
        assert runs["extract-cut.avi"].state.type.value == "FAILED"
        assert runs["extract-cut.avi"].run_count == 1            # bad input is not retried


def test_extraction_tasks_enforce_min_frames_on_the_decoded_count(tiny_dataset, tmp_path):
    """scan judges by packet count; the extraction task is where a too-short video is caught."""
    from flows.pipeline import extract_videos
    from videoseq.io.video import probe

    good = sorted(str(p) for p in (tiny_dataset / "test").rglob("*.avi"))
    shortest = min(probe(p, count_frames=True).num_frames for p in good)
    sampling = {"frames": 6, "size": 32, "short": "repeat", "train_views": 1}
    fine = extract_videos(good[:2], [1, 1], sampling, 32, str(tmp_path / "a"), min_frames=shortest)
    assert sorted(fine["extracted"]) == good[:2] and fine["failed"] == []
    outcome = extract_videos(good, [1] * len(good), sampling, 32, str(tmp_path / "b"),
                             min_frames=10_000)
    failed = dict(outcome["failed"])
    assert outcome["extracted"] == [] and set(failed) == set(good)
    assert all(reason.startswith("too short") for reason in failed.values()), failed


def test_pipeline_on_a_two_worker_dask_cluster(tiny_dataset, tiny_config, tmp_path):
    from flows.pipeline import pipeline

    state = pipeline(root=str(tiny_dataset), run_dir=str(tmp_path / "run"), config=tiny_config,
                     overrides=["runtime.task_runner=dask"], return_state=True)
    assert state.is_completed(), state
    assert state.result()["extracted"] == 16
    assert (tmp_path / "run" / "metrics.json").is_file()
