"""Schedules YAML -> deployments, and the task-runner choice. No server needed."""
from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from flows.runners import build_task_runner
from flows.schedules import build_deployments, load_schedules
from videoseq.config import RuntimeConfig
from videoseq.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_schedules_nightly_retrain_and_inbox_every_15_minutes(tmp_path):
    specs = {s.name: s for s in load_schedules(REPO / "configs" / "schedules.yaml", base=tmp_path)}
    assert specs["nightly-retrain"].flow == "pipeline" and specs["nightly-retrain"].cron == "0 2 * * *"
    assert specs["nightly-retrain"].parameters["root"] == str(tmp_path / "data")   # resolved at serve time
    assert specs["classify-inbox"].flow == "classify_inbox" and specs["classify-inbox"].interval == 900

    deployments = {d.name: d for d in build_deployments(list(specs.values()))}
    nightly, inbox = deployments["nightly-retrain"], deployments["classify-inbox"]
    assert nightly.schedules[0].schedule.cron == "0 2 * * *"
    assert nightly.schedules[0].schedule.timezone == "UTC"
    assert inbox.schedules[0].schedule.interval == datetime.timedelta(minutes=15)
    assert nightly.entrypoint == "flows.pipeline.pipeline"
    assert inbox.parameters["inbox"] == str(tmp_path / "inbox")
    assert nightly.concurrency_limit == 1


@pytest.mark.parametrize("body, message", [
    ("deployments: []\n", "non-empty list"),
    ("deployments:\n  - {name: a, flow: nope, cron: '0 2 * * *'}\n", "unknown flow 'nope'"),
    ("deployments:\n  - {name: a, flow: pipeline}\n", "exactly one of `cron` or `interval`"),
    ("deployments:\n  - {name: a, flow: pipeline, cron: '0 2 * * *', interval: 60}\n", "exactly one"),
    ("deployments:\n  - {name: a, flow: pipeline, interval: -5}\n", "positive number"),
    ("deployments:\n  - {name: a, flow: pipeline, cron: 'every night'}\n", "bad cron"),
    ("deployments:\n  - {name: a, flow: pipeline, interval: 5, colour: red}\n", "unknown key 'colour'"),
    ("deployments:\n  - {name: a, flow: pipeline, interval: 5}\n  - {name: a, flow: pipeline, interval: 9}\n",
     "appears twice"),
    ("deployments: [\n", "not valid YAML"),
])
def test_bad_schedules_are_one_line_errors_naming_the_file(tmp_path, body, message):
    path = tmp_path / "schedules.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as e:
        load_schedules(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_schedules_file(tmp_path):
    with pytest.raises(ConfigError, match="schedules file not found"):
        load_schedules(tmp_path / "nope.yaml")


def test_thread_pool_is_bounded_by_max_workers():
    from prefect.task_runners import ThreadPoolTaskRunner

    runner = build_task_runner(RuntimeConfig(max_workers=3))
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3


def test_dask_runner_uses_the_address_or_a_two_worker_local_cluster():
    from prefect_dask import DaskTaskRunner

    remote = build_task_runner(RuntimeConfig(task_runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    local = build_task_runner(RuntimeConfig(task_runner="dask"))
    assert local.address is None and local.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1}


@pytest.mark.parametrize("runtime, message", [
    (RuntimeConfig(task_runner="ray"), "unknown task runner 'ray'; choose from dask, threads"),
    (RuntimeConfig(max_workers=0), "at least 1"),
])
def test_bad_task_runner_settings(runtime, message):
    with pytest.raises(ConfigError, match=message):
        build_task_runner(runtime)
