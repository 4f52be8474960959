"""A bounded process pool for per-video work (probing, frame extraction) that survives bad files.

    results = run_jobs(probe_one, [(path, 1) for path in paths], workers=2, progress=True, desc="scan")

`fn` runs as `fn(*args)` in a worker process (forked from a fork server, see `_context`) and should turn its own errors into results. A worker
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

PRELOAD = ("videoseq.video", "videoseq.dataset", "videoseq.cache")   # imported once, in the fork server


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
        checked = False
        for i in pending:                                      # the pool broke: isolate each leftover job
            left = _run_pool(fn, jobs, [i], 1, results, bar)
            if left:
                if not checked:                                # the job, or any worker at all?
                    _require_working_workers()
                    checked = True
                log.warning("worker died while processing %s", jobs[i][0])
                results[i] = JobCrash("worker process died")
                bar.update()
    return results


def _context() -> multiprocessing.context.BaseContext:
    """Workers forked from a clean fork server that has imported OpenCV and videoseq once (a new pool
    starts in ~0.1 s instead of ~2 s); never forked from this process and its torch/OpenCV threads.
    Where there is no fork server (Windows), plain spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))   # takes effect when the server starts (first pool)
    return ctx


def _ping() -> bool:
    return True


def _require_working_workers() -> None:
    """Raise if a worker cannot even run a no-op: then every job would look like a crash."""
    results: list[Any] = [None]
    with tqdm(disable=True) as bar:
        if _run_pool(_ping, [()], [0], 1, results, bar):
            raise RuntimeError(
                "worker processes die on start-up; a script that runs videoseq work in processes needs "
                "`if __name__ == '__main__':` around its top-level code (worker processes re-import "
                "it), or pass workers=0")


def _run_pool(fn: Callable[..., Any], jobs: Sequence[tuple], todo: Sequence[int], workers: int,
              results: list[Any], bar: tqdm) -> list[int]:
    """Run jobs `todo` with at most `workers` in flight; return the indices left undone if the pool broke."""
    queue = list(todo)[::-1]
    running: dict[Future, int] = {}
    ctx = _context()
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
