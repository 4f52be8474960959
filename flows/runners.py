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

LOCAL_DASK_CLUSTER = {"n_workers": 2, "threads_per_worker": 1}  # one decode per core on a small machine


def _threads(runtime: RuntimeConfig) -> TaskRunner:
    if runtime.max_workers < 1:
        raise ConfigError(f"runtime.max_workers: expected at least 1, got {runtime.max_workers}")
    return ThreadPoolTaskRunner(max_workers=runtime.max_workers)


def _dask(runtime: RuntimeConfig) -> TaskRunner:
    try:
        from prefect_dask import DaskTaskRunner
    except ModuleNotFoundError:
        raise ConfigError("runtime.task_runner: 'dask' needs prefect-dask; "
                          "pip install 'videoseq[dask]'") from None
    if runtime.dask_address:
        return DaskTaskRunner(address=runtime.dask_address)
    return DaskTaskRunner(cluster_kwargs=dict(LOCAL_DASK_CLUSTER))


TASK_RUNNERS: dict[str, Callable[[RuntimeConfig], TaskRunner]] = {"threads": _threads, "dask": _dask}


def build_task_runner(runtime: RuntimeConfig) -> TaskRunner[Any]:
    """The task runner named by `runtime.task_runner`, bounded by the runtime section."""
    name = runtime.task_runner
    if name not in TASK_RUNNERS:
        raise ConfigError(f"runtime.task_runner: unknown {name!r}; choose from {', '.join(sorted(TASK_RUNNERS))}")
    return TASK_RUNNERS[name](runtime)
