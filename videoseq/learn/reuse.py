"""What a `compare` reuses from the run directory it replaces: work already done is not done again.

Two levels:
- the whole run: metrics.json records `inputs_key`, a digest of everything the run's numbers depend
  on (the config except where and how fast it runs, the heads and seeds, the classes, and every video's
  path, label, split, status and content digest). A compare whose inputs have that key, into a complete
  run directory, returns the stored metrics and touches nothing (`up_to_date`): the nightly rerun of
  an unchanged dataset loads no feature and trains nothing.
- one (head, seed): a finished training run is kept in the run directory as
  `runs/<head>/seed<k>/checkpoint.pt` (its best weights, history and fingerprint: `learn.train.fit`
  compacts it when training ends). A later compare into the same directory links these into its work
  folder (`seed_work`), and `fit` resumes a finished run with the same fingerprint without an epoch:
  adding a head or a seed trains only the new ones.

Content digests come from the persistent fingerprint store (`data.fingerprints`), so computing a key
reads no video bytes for files already seen.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from videoseq.config import Config, config_digest

log = logging.getLogger(__name__)

RUNS = "runs"                   # the run directory's folder of finished (head, seed) checkpoints


def video_records(index) -> list[tuple]:
    """(path, label, split, status, content digest or "") per video of a DatasetIndex, sorted by path:
    what a run learns and is tested on. Only usable videos are hashed."""
    from videoseq.data.cache import file_digest

    return sorted((e.path, e.label, e.split, e.status, file_digest(e.path) if e.status == "ok" else "")
                  for e in index.entries)


def results_config(config: Config, device: str) -> dict:
    """The config as it bears on the numbers: `runtime` reduced to the frame engine and the resolved
    device type (workers, timeouts, progress and task runners change how fast a run goes, not what it
    finds)."""
    cfg = config.to_dict()
    runtime = cfg.pop("runtime")
    cfg["runtime"] = {"engine": runtime.get("engine"), "device": device}
    return cfg


def inputs_key(index, config: Config, heads: list[str], seeds: list[int], *, device: str) -> str:
    """The digest of everything a compare's metrics depend on (see the module docstring)."""
    return config_digest({"config": results_config(config, device), "heads": list(heads), "seeds": list(seeds),
                          "classes": list(index.classes), "videos": video_records(index)})


def up_to_date(out: Path, key: str, heads: list[str]) -> dict | None:
    """The metrics of the complete run directory `out` if it was built from inputs with `key`, else None.
    Complete: metrics.json (readable, with this key), report.md and every head's bundle."""
    from videoseq.models.bundle import FILES

    try:
        metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or metrics.get("inputs_key") != key:
        return None
    if not (out / "report.md").is_file():
        return None
    if any(not (out / "models" / head / name).is_file() for head in heads for name in FILES):
        return None
    return metrics


def seed_work(out: Path, work: Path) -> int:
    """Link the finished (head, seed) checkpoints of the run directory `out` into the work folder
    (files already there, from a killed run, are kept); returns how many were linked. Checkpoints are
    replaced, never written in place, so a link never changes the file in `out`."""
    src = out / RUNS
    if not src.is_dir():
        return 0
    linked = 0
    for file in src.rglob("checkpoint.pt"):
        dest = work / RUNS / file.relative_to(src)
        if not dest.exists():
            _link(file, dest)
            linked += 1
    if linked:
        log.info("%s: %d finished training run(s) to reuse", out, linked)
    return linked


def keep_runs(work: Path, staged: Path, keys: list[tuple[str, int]]) -> None:
    """Link the checkpoints of this run's (head, seed) pairs from the work folder into the staged run
    directory (other pairs, from earlier configs, stay behind and go with the work folder). Links: the
    work folder keeps its copy until the staged directory is in place, so a kill at any point loses
    nothing a rerun needs."""
    for head, seed in keys:
        src = work / RUNS / head / f"seed{seed}" / "checkpoint.pt"
        if src.is_file():
            _link(src, staged / RUNS / head / f"seed{seed}" / "checkpoint.pt")


def _link(src: Path, dest: Path) -> None:
    """A hard link of `src` at `dest` (a copy where the file system has none)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)
