"""Which Prefect task runner fans the per-video tasks out: `runtime.task_runner` in the config.

    threads (default)  ThreadPoolTaskRunner(max_workers=runtime.max_workers): one machine, bounded.
                       OpenCV decoding and torch release the GIL, so threads use the cores.
    dask               prefect_dask.DaskTaskRunner on `runtime.dask_address` (an existing scheduler,
                       e.g. tcp://10.0.0.5:8786) or, without one, a local cluster of 2 single-threaded
                       worker processes.
"""
from __future__ import annotations

from typing import Any, Callable

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from videoseq.config import RuntimeConfig
from videoseq.errors import ConfigError
from videoseq.registry import Registry, UnknownNameError

LOCAL_DASK_CLUSTER = {"n_workers": 2, "threads_per_worker": 1}  # one decode per core on a small machine
TASK_RUNNERS: Registry[Callable[[RuntimeConfig], TaskRunner]] = Registry("task runner")


@TASK_RUNNERS.register("threads")
def _threads(runtime: RuntimeConfig) -> TaskRunner:
    if runtime.max_workers < 1:
        raise ConfigError(f"runtime.max_workers: expected at least 1, got {runtime.max_workers}")
    return ThreadPoolTaskRunner(max_workers=runtime.max_workers)


@TASK_RUNNERS.register("dask")
def _dask(runtime: RuntimeConfig) -> TaskRunner:
    try:
        from prefect_dask import DaskTaskRunner
    except ModuleNotFoundError:
        raise ConfigError("runtime.task_runner: 'dask' needs prefect-dask; "
                          "pip install 'videoseq[dask]'") from None
    if runtime.dask_address:
        return DaskTaskRunner(address=runtime.dask_address)
    return DaskTaskRunner(cluster_kwargs=dict(LOCAL_DASK_CLUSTER))


def build_task_runner(runtime: RuntimeConfig) -> TaskRunner[Any]:
    """The task runner named by `runtime.task_runner`, bounded by the runtime section."""
    try:
        build = TASK_RUNNERS.get(runtime.task_runner)
    except UnknownNameError as e:
        raise ConfigError(f"runtime.task_runner: {e}") from None
    return build(runtime)
