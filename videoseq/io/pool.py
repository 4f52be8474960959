"""Crash-isolating process pools for per-video work (probing, frame extraction, decoding for
inference) that survive bad files. One mechanism, `ProcessStream`; `run_jobs` is a list of jobs on it.

    results = run_jobs(probe_one, [(path, 1) for path in paths], workers=2, progress=True, desc="scan")

    with ProcessStream(workers=2) as stream:
        futures = [stream.submit(decode_one, path) for path in paths]

`ProcessStream` keeps `workers` long-lived processes (forked from a fork server, see `_context`) and
hands each one job at a time, so a worker that dies (a decoder segfault, the OOM killer) is blamed for
exactly the job it held, which gets a `JobCrash`, and is replaced; the other jobs run on undisturbed.
With a `timeout`, a job that runs longer (a hung decoder: a stalled mount, a pathological stream) is
killed with its worker, gets a `JobTimeout` (a `JobCrash` that says "timed out after N s"), and its
worker is replaced.
"""
from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from multiprocessing import connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable, NamedTuple, Sequence

from tqdm import tqdm

from videoseq.errors import VideoseqError

log = logging.getLogger(__name__)

PRELOAD = ("videoseq.io.video", "videoseq.data.dataset", "videoseq.data.cache")   # imported once, in the fork server
IN_FLIGHT_PER_WORKER = 4      # run_jobs: jobs submitted ahead per worker (bounds memory on huge job lists)
START_GRACE_S = 60.0          # with a timeout: extra seconds for a job to start (its function's module is
#                               imported in a new worker); the timeout counts from the start


class JobCrash(NamedTuple):
    """The worker process died while running this job (and was replaced)."""
    reason: str          # e.g. "worker process died (exit code -11)"


class JobTimeout(JobCrash):
    """The job ran longer than the stream's timeout: it was killed with its worker (then replaced).
    A `JobCrash`, so code that handles crashed jobs handles it; `reason` is "timed out after N s"."""
    __slots__ = ()


class JobError(NamedTuple):
    """The job's function raised; its exception as one line of text (exceptions may not pickle)."""
    reason: str
    error: Exception | None = None   # the exception itself when it is a VideoseqError (a one-line
    #                                  error for the user, e.g. OutputError on a full disk) that pickles


class _JobStarted:
    """A worker's note that the job it was sent has arrived and is running (the timeout starts)."""


class WorkersUnavailable(RuntimeError):
    """Worker processes die before they can run anything: every job would look like a crash."""


NO_WORKERS = ("worker processes die on start-up; a script that runs videoseq work in processes needs "
              "`if __name__ == '__main__':` around its top-level code (worker processes re-import it)")


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int, progress: bool = False,
             desc: str = "", unit: str = "video", timeout: float | None = None) -> list[Any]:
    """`[fn(*job) for job in jobs]`, computed in `workers` worker processes (0 = in this process).

    Results come back in the order of `jobs`. `fn` is expected to turn bad input into results; a job
    whose worker died gets a `JobCrash` in its place (that job only), a job that ran longer than
    `timeout` seconds a `JobTimeout` (None or 0: no limit; with workers=0 nothing can be stopped).
    A `VideoseqError` raised by `fn` (e.g. OutputError: the disk is full) is re-raised here as it is,
    once the jobs already running have ended (no other job starts); any other exception raised by
    `fn` in a worker is re-raised as a RuntimeError naming the job. At most `IN_FLIGHT_PER_WORKER * workers` jobs are
    submitted ahead.
    """
    results: list[Any] = [None] * len(jobs)
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress, leave=False) as bar:
        if workers <= 0:
            for i, job in enumerate(jobs):
                results[i] = fn(*job)
                bar.update()
            return results
        with ProcessStream(workers=workers, timeout=timeout) as stream:
            running: dict[Future, int] = {}
            todo = iter(range(len(jobs)))
            for i in todo:
                running[stream.submit(fn, *jobs[i])] = i
                if len(running) >= IN_FLIGHT_PER_WORKER * workers:
                    break
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    try:
                        results[i] = _job_result(future.result(), fn, jobs[i])
                    except VideoseqError:              # e.g. a full disk: no job after this one starts,
                        wait([f for f in running if not f.cancel()])   # the running ones end as they
                        raise                          # would (cleaning up), never killed mid-write
                    bar.update()
                    for j in todo:                         # refill: one more job per finished one
                        running[stream.submit(fn, *jobs[j])] = j
                        break
    return results


def _job_result(result: Any, fn: Callable[..., Any], job: tuple) -> Any:
    """`result` as run_jobs returns it: a JobError raised, a JobCrash logged with the job's blame."""
    name = getattr(fn, "__name__", "job")
    where = job[0] if job else ""
    if isinstance(result, JobError):
        if result.error is not None:
            raise result.error
        raise RuntimeError(f"{name}({where!r}): {result.reason}")
    if isinstance(result, JobTimeout):
        log.warning("%s: %s; its worker was stopped", where, result.reason)
    elif isinstance(result, JobCrash):
        log.warning("worker died while processing %s", where)
    return result


def _context() -> multiprocessing.context.BaseContext:
    """Workers forked from a clean fork server that has imported OpenCV and videoseq once (a new
    worker starts in ~0.1 s instead of ~2 s); never forked from this process and its torch/OpenCV
    threads. Where there is no fork server (Windows), plain spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))   # takes effect when the server starts (first pool)
    return ctx


# --- a stream of jobs on long-lived workers ------------------------------------------------------

class ProcessStream:
    """`submit(fn, *args)` -> Future of `fn(*args)`, run in one of `workers` long-lived worker processes
    (an Executor's `submit`; `fn` travels by reference, so it must be a module-level function).

        with ProcessStream(workers=2) as stream:
            futures = [stream.submit(decode_one, path) for path in paths]

    A Future's result is `fn`'s return value, a `JobError` if `fn` raised, or a `JobCrash` if its
    worker died on it (that worker is then replaced; the other jobs are unaffected). With `timeout`
    (seconds; None or 0: none), a job still running that long after it started in its worker (its
    module imported, `START_GRACE_S` at most) is killed with its worker and gets a
    `JobTimeout`, a JobCrash "timed out after N s"; the worker is replaced. A dispatcher
    thread feeds the workers and collects their results, so they keep working while the caller is
    busy; callers bound how many jobs they leave in flight. Workers start on the first jobs (no
    waiting in `submit`) and are forked from the fork server (`_context`). If workers die before
    running anything, every Future raises `WorkersUnavailable`.
    """

    def __init__(self, *, workers: int, timeout: float | None = None):
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"ProcessStream: timeout must be >= 0 seconds (0 or None: none), got {timeout}")
        self._workers = max(1, workers)
        self._timeout = float(timeout) if timeout else None
        self._queue: deque[tuple[tuple, Future]] = deque()
        self._lock = threading.Lock()
        self._closing = self._cancel = False
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._thread = threading.Thread(target=self._dispatch, name="process-stream", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue `fn(*args)` for the next free worker; its Future resolves to the result, a JobError or
        a JobCrash (see the class)."""
        future: Future = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("ProcessStream: submit after shutdown")
            self._queue.append(((fn, args), future))
        self._wake_w.send_bytes(b"j")
        return future

    def shutdown(self, *, cancel: bool = False) -> None:
        """Stop after the submitted jobs (`cancel`: drop the queued ones, kill the busy workers)."""
        with self._lock:
            self._closing, self._cancel = True, cancel
        self._wake_w.send_bytes(b"s")
        self._thread.join()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> "ProcessStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(cancel=exc[0] is not None)

    def _dispatch(self) -> None:
        idle: list[_Worker] = []
        busy: dict[_Worker, tuple[Future, tuple]] = {}
        deadlines: dict[_Worker, float] = {}        # with a timeout: when each busy worker's job is over
        todo: list[tuple[tuple, Future]] = []
        try:
            while True:
                with self._lock:
                    if self._cancel:
                        for _, future in self._queue:
                            if future.cancel():
                                future.set_running_or_notify_cancel()   # wait() on it returns
                        self._queue.clear()
                        for worker, (future, _) in busy.items():
                            worker.kill()
                            future.set_result(JobCrash("cancelled"))
                        busy.clear()
                        deadlines.clear()
                    if self._closing and not self._queue and not busy:
                        break
                    todo = []
                    while self._queue and len(todo) < self._workers - len(busy):
                        job, future = self._queue.popleft()
                        if future.set_running_or_notify_cancel():   # a cancelled job is dropped here
                            todo.append((job, future))
                for job, future in todo:
                    while idle and not idle[-1].process.is_alive():
                        idle.pop().kill()    # died between jobs: nothing to blame it on
                    worker = idle.pop() if idle else _Worker()
                    worker.conn.send(job)
                    busy[worker] = (future, job)
                    if self._timeout:
                        deadlines[worker] = time.monotonic() + self._timeout + START_GRACE_S
                watched = [self._wake_r, *(w.conn for w in busy), *(w.process.sentinel for w in busy)]
                wait_s = max(0.0, min(deadlines.values()) - time.monotonic()) if deadlines else None
                ready = set(connection.wait(watched, timeout=wait_s))
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()
                for worker in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                    result = worker.receive()
                    if isinstance(result, _JobStarted):
                        if self._timeout:
                            deadlines[worker] = time.monotonic() + self._timeout
                        continue
                    future, (fn, args) = busy.pop(worker)
                    deadlines.pop(worker, None)
                    if isinstance(result, JobCrash):
                        log.warning("worker process %d died in %s%r", worker.process.pid,
                                    getattr(fn, "__name__", "a job"), args[:1])
                    else:
                        idle.append(worker)
                    future.set_result(result)
                now = time.monotonic()
                for worker in [w for w, deadline in deadlines.items() if deadline <= now]:
                    future, (fn, args) = busy.pop(worker)
                    del deadlines[worker]
                    worker.abandon()                     # a hung job: its worker goes, a new one replaces it
                    log.warning("%s%r ran longer than %g s; worker process %d killed",
                                getattr(fn, "__name__", "a job"), args[:1], self._timeout, worker.process.pid)
                    future.set_result(JobTimeout(f"timed out after {self._timeout:g} s"))
        except BaseException as e:  # noqa: BLE001  no Future may be left waiting forever
            with self._lock:
                left = [f for _, f in [*todo, *self._queue]] + [f for f, _ in busy.values()]
                self._queue.clear()
                self._closing = True
            for future in left:
                if not future.done():
                    future.set_exception(e)
            for worker in busy:
                worker.kill()
        finally:
            for worker in idle:
                worker.stop()


class _Worker:
    """One worker process and the parent's end of its pipe; started and ready when constructed."""

    def __init__(self) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.process = _context().Process(target=_serve, args=(child,), daemon=True,
                                          name="videoseq-worker")
        self.process.start()
        child.close()                        # ours closed: the pipe reports EOF when the worker dies
        connection.wait([self.conn, self.process.sentinel])
        try:
            self.conn.recv()                 # the worker's "ready"
        except (EOFError, OSError):
            self.process.join()
            raise WorkersUnavailable(f"{NO_WORKERS} (exit code {self.process.exitcode})") from None

    def receive(self) -> Any:
        """The job's result, or a JobCrash when the worker died instead of answering."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.process.join()
            self.conn.close()
            return JobCrash(f"worker process died (exit code {self.process.exitcode})")

    def stop(self) -> None:
        """Ask the worker to exit after its current job; kill it if it has not within 5 s."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.kill()
        self.conn.close()

    def kill(self) -> None:
        """End the worker process now."""
        self.process.kill()
        self.process.join()

    def abandon(self) -> None:
        """Kill the worker without waiting for it: a process stuck in the kernel (a stalled mount) may
        take long to go, and the dispatcher must not wait for it (multiprocessing reaps it later)."""
        try:
            self.process.kill()
        except OSError:
            pass
        self.conn.close()


def _serve(conn: connection.Connection) -> None:
    """A worker process: run the (fn, args) jobs that arrive, one at a time, until None or EOF.
    Ctrl-C is the parent's to handle (it stops or kills its workers); a gone parent ends the loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        fn, args = job
        try:
            conn.send(_JobStarted())
        except OSError:                                    # the parent is gone
            return
        try:
            result = fn(*args)
        except Exception as e:  # noqa: BLE001  sent back as text: the exception may not pickle
            result = JobError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                              e if isinstance(e, VideoseqError) else None)
        try:
            payload = ForkingPickler.dumps(result)        # what conn.send would write
            if isinstance(result, JobError) and result.error is not None:
                ForkingPickler.loads(payload)             # it must also rebuild in the parent
        except Exception as e:  # noqa: BLE001
            payload = ForkingPickler.dumps(result._replace(error=None) if isinstance(result, JobError) else
                                           JobError(f"result cannot be sent back ({type(e).__name__}: {e})"))
        try:
            conn.send_bytes(payload)
        except OSError:                                    # the parent is gone
            return
