"""Faults on real processes: `videoseq compare` SIGKILLed at random moments, and concurrent runs.

- A compare subprocess (with its worker processes) is SIGKILLed at 20 random moments, each followed by
  a rerun. A thread watches the run directory every ~50 ms throughout: at every observation it is
  absent (while nothing was there before), the old complete run that was there before, or the new
  complete run (metrics.json equal to an uninterrupted run's, every models/<head> loads with
  load_bundle and is the bundle of that same run), and it never goes back from new to old or absent.
  Every rerun ends with an uninterrupted run's metrics, and no frame or feature cache entry is torn.
- Two compares on one dataset and one (initially empty) cache, with a classify of the same files,
  all at once: every one succeeds with a solo run's results, and every cache entry loads.

A run directory is complete when metrics.json exists and every models/<head> loads. Timings
(`seconds`, `train_seconds`, classify's `seconds`) are the only values allowed to differ.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from videoseq.io.atomic import exchange_paths
from videoseq.models.bundle import load_bundle

HEADS = ["per_frame", "lstm"]
# a whole compare is a few seconds of work (plus ~3 s of imports): small_cnn on 6 frames of 32 px,
# frozen features, 2 heads x 2 seeds; one decode worker process, so a kill has a process group to reap
TINY = ["model.encoder=small_cnn", "model.weights=null", "model.pooling=grid2", "model.hidden=16",
        "sampling.frames=6", "sampling.size=32", "model.input_size=32", "sampling.train_views=2",
        "train.mode=frozen", "train.batch_size=8", "train.patience=3", "train.seeds=2",
        "runtime.workers=1", "runtime.progress=false", "compare.bootstrap=100"]
NEW = TINY + ["train.epochs=3"]
OLD = TINY + ["train.epochs=2"]          # the run that is in place before some of the killed runs
KILLS = 20
POLL_S = 0.05

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir() or not hasattr(os, "killpg"),
                                reason="needs /proc/self/fd (pinned reads) and process groups")


# ----------------------------------------------------------------------------- processes

def _videoseq(args: list[str], *, cache: Path, log: Path) -> subprocess.Popen:
    """`python -m videoseq ARGS` in its own session (it and its workers form one process group), with
    its own frame/feature cache (VIDEOSEQ_CACHE, so no cache path ends up in a bundle's config)."""
    env = {**os.environ, "VIDEOSEQ_CACHE": str(cache)}
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "videoseq", *args], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=log.parent, start_new_session=True)


def _compare_args(root: Path, out: Path, sets: list[str]) -> list[str]:
    return ["compare", str(root), "--out", str(out), "--heads", ",".join(HEADS), "--quiet",
            *[a for s in sets for a in ("--set", s)]]


def _finish(proc: subprocess.Popen, log: Path, *, timeout: float = 180) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = "timeout"
    assert rc == 0, f"{' '.join(map(str, proc.args[2:5]))}: exit {rc}\n{_tail(log)}"


def _tail(log: Path, n: int = 2000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def _kill_group(proc: subprocess.Popen) -> bool:
    """SIGKILL the process and its workers (its process group); False if it had already exited."""
    if proc.poll() is not None:
        return False
    try:
        os.killpg(proc.pid, signal.SIGKILL)     # not yet reaped, so the group id is still its own
    except ProcessLookupError:
        pass
    proc.wait()
    return True


# ----------------------------------------------------------------------------- run directories

def _strip(metrics: dict) -> dict:
    """metrics.json without wall-clock times (the only values allowed to differ between runs)."""
    m = json.loads(json.dumps(metrics))
    m.pop("seconds", None)
    for v in m.get("models", {}).values():
        v.pop("train_seconds", None)
    return m


class BundlePrint(NamedTuple):
    config: dict                  # config.json
    metrics: dict                 # metrics.json
    state: dict                   # the loaded model's state dict


class RunPrint(NamedTuple):
    """What identifies one complete run directory."""
    metrics: dict                 # stripped metrics.json
    bundles: dict                 # head -> BundlePrint


class Torn(AssertionError):
    pass


def _bundle_print(bundle_dir: Path) -> BundlePrint:
    loaded = load_bundle(bundle_dir)
    return BundlePrint(json.loads((bundle_dir / "config.json").read_text()),
                       json.loads((bundle_dir / "metrics.json").read_text()),
                       {k: v.clone() for k, v in loaded.model.state_dict().items()})


def run_print(run: Path) -> RunPrint:
    """The print of the complete run directory `run` (raises if it is not complete)."""
    metrics = _strip(json.loads((run / "metrics.json").read_text()))
    return RunPrint(metrics, {h: _bundle_print(run / "models" / h) for h in metrics["models"]})


def _moved(path: Path, fd: int) -> bool:
    """True when `path` no longer names the folder open as `fd` (swapped, renamed or removed)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    pinned = os.fstat(fd)
    return (st.st_dev, st.st_ino) != (pinned.st_dev, pinned.st_ino) or pinned.st_nlink == 0


def _pinned(fd: int) -> Path:
    return Path(f"/proc/self/fd/{fd}")   # the folder itself, whatever its name is by now


def _stat_key(folder: Path) -> tuple:
    """A cheap key that changes whenever a file of the run (or a bundle) is replaced or rewritten."""
    key = []
    for p in [folder, folder / "metrics.json", folder / "models",
              *sorted((folder / "models").glob("*")), *sorted((folder / "models").glob("*/*"))]:
        try:
            st = os.stat(p)
            key.append((p.name, st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            key.append((p.name, None))
    return tuple(key)


def _which_run(folder: Path, known: dict[str, RunPrint]) -> str:
    """The name of the known complete run that `folder` is; raise Torn saying what is wrong if none."""
    try:
        metrics = _strip(json.loads((folder / "metrics.json").read_text()))
    except (OSError, ValueError) as e:
        raise Torn(f"metrics.json unreadable or absent ({type(e).__name__}: {e})") from None
    name = next((n for n, p in known.items() if p.metrics == metrics), None)
    if name is None:
        raise Torn("metrics.json is neither the old run's nor the new run's")
    expected = known[name]
    try:
        heads = sorted(p.name for p in (folder / "models").iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise Torn(f"models/ unreadable ({e})") from None
    if heads != sorted(expected.bundles):
        raise Torn(f"{name} metrics.json with bundles {heads}, expected {sorted(expected.bundles)}")
    for head, want in expected.bundles.items():
        try:
            got = _bundle_print(folder / "models" / head)
        except Exception as e:   # BundleError, OSError, ValueError: a bundle that does not load
            raise Torn(f"models/{head} does not load beside the {name} metrics.json "
                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        if got.config != want.config or got.metrics != want.metrics:
            raise Torn(f"models/{head} is not the {name} run's bundle (config.json or metrics.json differ)")
        if got.state.keys() != want.state.keys() or not all(torch.equal(got.state[k], want.state[k])
                                                             for k in want.state):
            raise Torn(f"models/{head}/model.pt is not the {name} run's weights")
    return name


class Watcher(threading.Thread):
    """Observes `out` every POLL_S until stopped: "absent", or the name of the known run it holds.

    Each observation pins the folder (an open descriptor) and reads it through /proc/self/fd, so a
    folder swapped in mid-read is never mistaken for a torn one (that observation is dropped instead).
    """

    def __init__(self, out: Path, known: dict[str, RunPrint]):
        super().__init__(daemon=True)
        self.out, self.known = out, known
        self.states: list[str] = []       # distinct consecutive observations
        self.errors: list[str] = []
        self.observations = 0
        self._halt = threading.Event()
        self._verdicts: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def observe(self) -> str | None:
        """One observation: "absent", a known run's name, None (raced a swap); Torn if torn."""
        with self._lock:
            return self._observe()

    def _observe(self) -> str | None:
        try:
            fd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return "absent"
        try:
            folder = _pinned(fd)
            key = _stat_key(folder)
            if key in self._verdicts:
                return self._verdicts[key]
            try:
                name = _which_run(folder, self.known)
            except Torn as e:
                if _moved(self.out, fd):
                    return None
                raise Torn(str(e).replace(str(folder), "RUN_DIR")) from None
            if _stat_key(folder) != key:     # changed while it was read: judge it next time
                return None
            self._verdicts[key] = name
            return name
        finally:
            os.close(fd)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                state = self.observe()
            except Torn as e:
                state = "torn"
                if len(self.errors) < 5 and str(e) not in self.errors:
                    self.errors.append(str(e))
            except Exception as e:   # a bug in the watcher must fail the test, not end silently
                state = "torn"
                self.errors.append(f"watcher: {type(e).__name__}: {e}")
            if state is not None:
                self.observations += 1
                if not self.states or self.states[-1] != state:
                    self.states.append(state)
            self._halt.wait(POLL_S)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def _bad_transitions(states: list[str], start: str, *, may_vanish: bool) -> list[str]:
    """What is wrong with a sequence of observations of one destination, starting from `start`."""
    problems = []
    if states and states[0] != start:
        problems.append(f"first observed {states[0]!r}, expected {start!r}")
    for a, b in zip(states, states[1:]):
        if b == "torn" or a == "torn":
            continue       # reported by the watcher's errors
        if a == "new" or b == "old" or (b == "absent" and not (a == "absent" or may_vanish)):
            problems.append(f"went from {a!r} to {b!r}")
    return problems


# ----------------------------------------------------------------------------- caches

def torn_cache_entries(cache: Path) -> tuple[int, list[str]]:
    """(entries, problems): every frame-cache and feature-cache .npz under `cache` must load whole.
    Temp files of killed writers (`.NAME.npz.RANDOM.tmp`) are not entries and are never read."""
    problems, n = [], 0
    for p in sorted(cache.rglob("*.npz")):
        if p.name.startswith("."):
            continue
        n += 1
        kind = p.relative_to(cache).parts[0]
        need = {"frames": {"frames", "indices", "mask", "info", "format"},
                "features": {"feats", "mask"}}.get(kind, set())
        try:
            with np.load(p) as z:
                arrays = {k: z[k] for k in z.files}       # reads every array to the end
            if missing := need - arrays.keys():
                raise ValueError(f"missing {sorted(missing)}")
            if kind == "frames":
                t = len(arrays["mask"])
                assert arrays["frames"].shape[0] == t and arrays["indices"].shape == (t,)
            if kind == "features":
                assert arrays["feats"].shape[0] == len(arrays["mask"]) and np.isfinite(arrays["feats"]).all()
        except Exception as e:
            problems.append(f"{p.relative_to(cache)}: {type(e).__name__}: {e}")
    return n, problems


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """direction task, 5 real videos per class (mp4v and MJPG, 64x64, 12-16 frames) and one broken file."""
    from videoseq.synthetic.generate import generate_dataset

    dest = tmp_path_factory.mktemp("faults-data") / "direction"
    return generate_dataset(dest, task="direction", videos_per_class=5, frames=(12, 16), size=(64, 64),
                            broken=1, workers=0, progress=False)


class Reference(NamedTuple):
    run: Path
    metrics: dict                 # stripped
    fingerprint: RunPrint
    seconds: float                # wall time of the whole subprocess, cold cache


@pytest.fixture(scope="module")
def reference(root, tmp_path_factory) -> Reference:
    """An uninterrupted `videoseq compare` subprocess with the NEW config, on a cache of its own."""
    base = tmp_path_factory.mktemp("faults-reference")
    t0 = time.perf_counter()
    proc = _videoseq(_compare_args(root, base / "run", NEW), cache=base / "cache", log=base / "log.txt")
    _finish(proc, base / "log.txt")
    seconds = time.perf_counter() - t0
    printed = run_print(base / "run")
    return Reference(base / "run", printed.metrics, printed, seconds)


# ----------------------------------------------------------------------------- tests

@pytest.mark.slow
def test_sigkill_at_random_moments_of_compare(root, reference, tmp_path):
    """20 real SIGKILLs of `videoseq compare` (and its workers), at moments drawn from [0, T_ref]; half
    onto an absent run directory, half onto a complete run of another config; half on an empty cache.
    At every observation the run directory is absent, old or new (never torn, never back), the cache
    has no torn entry, and every rerun ends with the uninterrupted run's metrics."""
    old_template = tmp_path / "old" / "run"
    _finish(_videoseq(_compare_args(root, old_template, OLD), cache=tmp_path / "old-cache",
                      log=tmp_path / "old-log.txt"), tmp_path / "old-log.txt")
    known = {"old": run_print(old_template), "new": reference.fingerprint}
    assert known["old"].metrics != known["new"].metrics

    probe_a, probe_b = tmp_path / "probe-a", tmp_path / "probe-b"
    probe_a.mkdir(), probe_b.mkdir()
    may_vanish = not exchange_paths(probe_a, probe_b)   # no atomic exchange here: a rename protocol

    out, cache, log = tmp_path / "dest" / "run", tmp_path / "cache", tmp_path / "log.txt"
    out.parent.mkdir()
    rng = random.Random(1234)
    failures, summary, kills_in_flight = [], [], 0
    for k in range(KILLS):
        start = "old" if k % 2 else "absent"
        if k % 4 < 2:
            shutil.rmtree(cache, ignore_errors=True)      # cold: the kill may land in extraction/features
        shutil.rmtree(out, ignore_errors=True)
        if start == "old":
            shutil.copytree(old_template, out)
        delay = rng.uniform(0.0, reference.seconds)
        watcher = Watcher(out, known)
        watcher.start()
        try:
            proc = _videoseq(_compare_args(root, out, NEW), cache=cache, log=log)
            time.sleep(delay)
            killed = _kill_group(proc)
            kills_in_flight += killed
            try:
                after_kill = watcher.observe()
            except Torn as e:
                after_kill = "torn"
                failures.append(f"kill {k} ({start}, {delay:.1f} s): right after the kill: {e}")
            n_entries, torn = torn_cache_entries(cache)
            failures += [f"kill {k}: torn cache entry {t}" for t in torn]
            if killed:
                rerun = _videoseq(_compare_args(root, out, NEW), cache=cache, log=log)
                try:
                    rerun.wait(timeout=180)
                except subprocess.TimeoutExpired:
                    _kill_group(rerun)
                if rerun.returncode != 0:
                    failures.append(f"kill {k}: rerun exit {rerun.returncode}\n{_tail(log)}")
            elif proc.returncode != 0:
                failures.append(f"kill {k}: run ended by itself with exit {proc.returncode}\n{_tail(log)}")
        finally:
            watcher.stop()
        try:
            final = _strip(json.loads((out / "metrics.json").read_text()))
        except (OSError, ValueError) as e:
            final = f"unreadable ({e})"
        if final != reference.metrics:
            failures.append(f"kill {k}: metrics after the rerun differ from the uninterrupted run's")
        try:
            done = watcher.observe()
        except Torn as e:
            done = f"torn ({e})"
        if done != "new":
            failures.append(f"kill {k}: after the rerun the run directory is {done}, not the new complete run")
        litter = sorted(p.name for p in out.parent.iterdir() if p != out)
        if litter:   # the work folder (checkpoints) and any staging folder go once the run is in place
            failures.append(f"kill {k}: {litter} left beside the run directory after a successful run")
        failures += [f"kill {k} ({start}, {delay:.1f} s): {e}" for e in watcher.errors]
        failures += [f"kill {k} ({start}, {delay:.1f} s): {p}"
                     for p in _bad_transitions(watcher.states, start, may_vanish=may_vanish)]
        summary.append(f"kill {k:2d}: start {start:6s} cache {'cold' if k % 4 < 2 else 'warm'} at {delay:4.1f} s "
                       f"{'killed' if killed else 'already done'}; right after: {after_kill}; "
                       f"{n_entries} cache entries; seen {' -> '.join(watcher.states)} "
                       f"({watcher.observations} observations)")
    report = "\n".join(summary)
    assert not failures, "\n".join(failures[:40]) + f"\n({len(failures)} problems)\n" + report
    assert kills_in_flight >= KILLS // 2, report     # most moments fall inside a run, not after it
    print(report)


@pytest.mark.slow   # four fresh interpreters importing torch: 20-40 s on a busy 2-core machine
def test_concurrent_compares_and_classify_share_one_cache(root, reference, tmp_path):
    """Two compares on one dataset and one empty cache, plus a classify of the same files, at once:
    all exit 0 with a solo run's results, and every cache entry loads."""
    videos = [str(p) for split in ("val", "test") for p in sorted((root / split).glob("*/*"))
              if not p.name.startswith("broken")]
    classify = ["classify", *videos, "--model", str(reference.run), "--json"]
    solo_log = tmp_path / "solo.txt"
    solo = _videoseq(classify, cache=tmp_path / "solo-cache", log=solo_log)
    _finish(solo, solo_log)
    solo_lines = [json.loads(x) for x in solo_log.read_text().splitlines() if x.startswith("{")]
    assert [r["path"] for r in solo_lines] == videos

    shared = tmp_path / "shared-cache"
    logs = {name: tmp_path / f"{name}.txt" for name in ("a", "b", "classify")}
    procs = {name: _videoseq(_compare_args(root, tmp_path / name, NEW), cache=shared, log=logs[name])
             for name in ("a", "b")}
    procs["classify"] = _videoseq(classify, cache=shared, log=logs["classify"])
    try:
        for name, proc in procs.items():
            _finish(proc, logs[name])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                _kill_group(proc)

    for name in ("a", "b"):
        printed = run_print(tmp_path / name)
        assert printed.metrics == reference.metrics, name
        for head, bundle in printed.bundles.items():
            want = reference.fingerprint.bundles[head]
            assert bundle.config == want.config and bundle.metrics == want.metrics, (name, head)
            assert all(torch.equal(bundle.state[k], want.state[k]) for k in want.state), (name, head)
    lines = [json.loads(x) for x in logs["classify"].read_text().splitlines() if x.startswith("{")]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(lines) == strip(solo_lines)

    n, torn = torn_cache_entries(shared)
    assert not torn, torn
    # every video ok in the index: 2 train views + val/test 1 view, with a frame entry, an encoder
    # entry and one entry per temporal stream each
    from videoseq.config import ModelConfig
    from videoseq.models.streams import motion_names

    counts = reference.metrics["dataset"]["counts"]
    per_clip = 2 + len(motion_names(ModelConfig().motion))
    assert n == per_clip * (2 * counts["train"] + counts["val"] + counts["test"]), n
