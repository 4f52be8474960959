"""A bounded process pool for per-video work (probing, frame extraction) that survives bad files.

    results = run_jobs(probe_one, [(path, 1) for path in paths], workers=2, progress=True, desc="scan")

`fn` runs as `fn(*args)` in a worker process and should turn its own errors into results. A worker
that dies outright (a decoder segfault, the OOM killer) breaks the pool: the jobs it left unfinished
are then retried one at a time in a fresh single-worker pool, so only the file that kills its worker
again is reported, as a `JobCrash` in its place of the result list.
"""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, NamedTuple, Sequence

from tqdm import tqdm

log = logging.getLogger(__name__)


class JobCrash(NamedTuple):
    reason: str          # e.g. "worker process died (exit code -11)"


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int, progress: bool = False,
             desc: str = "", unit: str = "video") -> list[Any]:
    """`[fn(*job) for job in jobs]`, computed in up to `workers` spawned processes (0 = in this process).

    Results come back in the order of `jobs`; at most `workers` jobs are in flight at once.
    """
    results: list[Any] = [None] * len(jobs)
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress, leave=False) as bar:
        if workers <= 0:
            for i, job in enumerate(jobs):
                results[i] = fn(*job)
                bar.update()
            return results
        pending = _run_pool(fn, jobs, range(len(jobs)), workers, results, bar)
        for i in pending:                                      # the pool broke: isolate each leftover job
            left = _run_pool(fn, jobs, [i], 1, results, bar)
            if left:
                log.warning("worker died while processing %s", jobs[i][0])
                results[i] = JobCrash("worker process died")
                bar.update()
    return results


def _run_pool(fn: Callable[..., Any], jobs: Sequence[tuple], todo: Sequence[int], workers: int,
              results: list[Any], bar: tqdm) -> list[int]:
    """Run jobs `todo` with at most `workers` in flight; return the indices left undone if the pool broke."""
    queue = list(todo)[::-1]
    running: dict[Future, int] = {}
    ctx = multiprocessing.get_context("spawn")                 # no forked copies of torch/OpenCV threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        try:
            while queue or running:
                while queue and len(running) < workers:
                    i = queue.pop()
                    running[pool.submit(fn, *jobs[i])] = i
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    results[running[fut]] = fut.result()       # raises BrokenProcessPool if a worker died
                    del running[fut]
                    bar.update()
        except BrokenProcessPool:
            unfinished = sorted(set(running.values()) | set(queue))
            # futures that completed before the break still carry their results
            for fut, i in list(running.items()):
                if fut.done() and fut.exception() is None:
                    results[i] = fut.result()
                    bar.update()
                    unfinished.remove(i)
            return unfinished
    return []
