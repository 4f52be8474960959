"""The Python API: load a trained model and classify videos or frames; scan a dataset; compare heads.

    import videoseq
    model = videoseq.load("runs/mine")                     # a run folder (its best head) or one bundle
    model.predict("clip.mp4").label                        # a file ...
    model.predict(frames).label                            # ... or its frames, (N, H, W, 3) uint8 RGB
    result = videoseq.compare("my_videos", "runs/mine", train__epochs=20)

Config overrides are keyword arguments named `section__key` (two underscores), with Python values:
`train__epochs=20`, `compare__heads=["per_frame", "gru"]`, `model__weights=None`; they apply on top
of the config given (a `Config`, a YAML path, or None for the defaults) and are validated like
`--set section.key=value` on the command line. Every function here is what a `videoseq` command runs,
with the same results: `Model.predict` and `Model.predict_many` are `videoseq classify`'s path
(`infer.predict.classify_paths`), `compare` is `videoseq compare`'s, `scan` is `videoseq scan`'s.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from videoseq.commands.common import check_config
from videoseq.config import INFERENCE_BATCH_SIZE, Config, config_from_dict
from videoseq.config import load_config as _read_config
from videoseq.errors import ConfigError, VideoReadError

if TYPE_CHECKING:
    from videoseq.data.dataset import DatasetIndex
    from videoseq.infer.predict import FailedInput, Prediction
    from videoseq.infer.segments import Segment
    from videoseq.models.bundle import Bundle

VideoPath = str | os.PathLike


class Model:
    """A trained classifier (one model bundle) ready to classify videos: files, or frames in memory.

    Made by `videoseq.load`; `bundle` is the loaded `models.bundle.Bundle` underneath."""

    def __init__(self, bundle: "Bundle"):
        self.bundle = bundle

    @property
    def classes(self) -> list[str]:
        """The class names, in the order of the model's outputs (and of `Prediction.probs`)."""
        return list(self.bundle.classes)

    @property
    def config(self) -> Config:
        """The full config the model was trained with."""
        return self.bundle.config

    @property
    def head(self) -> str:
        """The temporal head: "per_frame", "lstm", "gru", "rnn" or "conv1d"."""
        return self.bundle.head

    @property
    def path(self) -> Path:
        """The bundle folder the model was loaded from."""
        return self.bundle.path

    def __repr__(self) -> str:
        b = self.bundle
        return (f"Model(head={b.head!r}, encoder={b.encoder!r}, classes={len(b.classes)}, frames={b.frames}, "
                f"size={b.size}, path={str(b.path)!r})")

    def predict(self, video: VideoPath | Any, *, thumbnails: bool = False,
                batch_size: int = INFERENCE_BATCH_SIZE, workers: int = 2, min_score: float = 0.0) -> "Prediction":
        """Classify one video: a file path, or all its frames as a (N, H, W, 3) uint8 RGB numpy array
        or torch tensor (sampled, resized and cropped like a file that decodes to them, with
        bit-identical probabilities). `VideoReadError` for a file that cannot be decoded, `ValueError`
        for frames of the wrong shape or dtype. `thumbnails=True` keeps (T, 64, 64, 3) thumbnails for
        `infer.timeline.plot_timeline`; `batch_size` and `workers` as in `videoseq classify`. A top
        probability below `min_score` gives the label "unknown" (`infer.predict.abstain`; score and
        probs unchanged), as `videoseq classify --min-score`; 0 never abstains.

            model = videoseq.load("runs/demo")
            print(model.predict("clip.mp4").top(3))
        """
        from videoseq.infer.predict import abstain

        if isinstance(video, (str, os.PathLike)):
            from videoseq.infer.predict import FailedInput, classify_paths

            (result,) = list(classify_paths([video], self.bundle, batch_size=batch_size, workers=workers,
                                            thumbnails=thumbnails))
            if isinstance(result, FailedInput):
                raise VideoReadError(result.path, result.error)
            return abstain(result, min_score)
        from videoseq.infer.frames import predict_frames

        return abstain(predict_frames(self.bundle, video, batch_size=batch_size, workers=workers,
                                      thumbnails=thumbnails), min_score)

    def predict_many(self, paths: Iterable[VideoPath], *, thumbnails: bool = False,
                     batch_size: int = INFERENCE_BATCH_SIZE,
                     workers: int = 2) -> Iterator["Prediction | FailedInput"]:
        """Classify video files, lazily and in input order: a `Prediction` per file, or a `FailedInput`
        (path, error) for one that cannot be decoded; the rest still run. Decoding runs ahead in
        `workers` processes, memory stays flat over any number of files (`videoseq classify`'s path).

            model = videoseq.load("runs/demo")
            labels = {r.path: getattr(r, "label", None) for r in model.predict_many(["a.mp4", "b.mp4"])}
        """
        from videoseq.infer.predict import classify_paths

        if isinstance(paths, (str, os.PathLike)):
            raise ValueError("predict_many takes a list of video paths; use predict for one")
        return classify_paths(paths, self.bundle, batch_size=batch_size, workers=workers,
                              thumbnails=thumbnails)

    def predict_segments(self, video: VideoPath | Iterable[Any], *, window: float, stride: float | None = None,
                         fps: float | None = None, batch_size: int = INFERENCE_BATCH_SIZE,
                         workers: int = 2) -> Iterator["Segment"]:
        """Classify a long video in overlapping windows of `window` seconds every `stride` seconds
        (default window / 2), lazily: one `infer.segments.Segment` (start, end, label, score, probs) per
        window, read in one streaming pass with bounded memory (`videoseq classify --window`'s path).
        `video`: a file path (its own frame rate), or any iterable of (H, W, 3) uint8 RGB frames (a
        camera, a generator, an (N, H, W, 3) array) with `fps` given; the same frames give the same
        segments either way, bit for bit. `ValueError` for bad window/stride/fps or frames.

            for seg in model.predict_segments("match.mp4", window=4, stride=2):
                print(f"{seg.start:.1f}-{seg.end:.1f} s: {seg.label} ({seg.score:.2f})")
        """
        from videoseq.infer.segments import classify_segments, iter_segments

        stride = window / 2 if stride is None and isinstance(window, (int, float)) else stride
        if isinstance(video, (str, os.PathLike)):
            if fps is not None:
                raise ValueError("fps is read from the file; give fps only with frames")
            return classify_segments(video, self.bundle, window=window, stride=stride, batch_size=batch_size,
                                     workers=workers)
        if fps is None:
            raise ValueError("predict_segments on frames needs their frame rate: fps=...")
        return iter_segments(video, fps, self.bundle, window=window, stride=stride, batch_size=batch_size,
                             workers=workers)


@dataclass(frozen=True)
class Comparison:
    """What `compare` wrote: the run folder and its metrics.json (docs/design.md has the schema)."""

    run_dir: Path
    metrics: dict[str, Any]

    @property
    def heads(self) -> list[str]:
        """The compared heads, the baseline first."""
        return list(self.metrics["models"])

    @property
    def accuracy(self) -> dict[str, float]:
        """head -> test accuracy (the mean over seeds)."""
        return {head: float(m["accuracy"]) for head, m in self.metrics["models"].items()}

    def verdicts(self) -> list[str]:
        """One plain-words sentence for each head against the baseline."""
        from videoseq.learn.report import verdicts

        return verdicts(self.metrics)

    def table(self) -> str:
        """The markdown comparison table `videoseq compare` prints."""
        from videoseq.learn.report import table

        return table(self.metrics)

    def load(self, head: str | None = None, *, device: str = "auto") -> Model:
        """The run's model for `head`, or its best head by validation accuracy."""
        return load(self.run_dir, head=head, device=device)

    def __str__(self) -> str:
        return "\n".join([self.table(), "", *self.verdicts()])


def load(path: str | os.PathLike, *, head: str | None = None, device: str = "auto") -> Model:
    """Load a trained model: a bundle folder, or a run folder (its best head by validation accuracy,
    or `head`). `device`: "auto" (cuda when available), "cpu", "cuda". `BundleError` when it can't.

        model = videoseq.load("runs/demo")
        print(model.head, model.classes)
    """
    from videoseq.models.bundle import choose_bundle, load_bundle

    return Model(load_bundle(choose_bundle(path, head=head), device=device))


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> Config:
    """The defaults, then the YAML file at `path` (if any; a name of `configs/` also finds the shipped
    one), then `section__key=value` overrides, every value checked (`commands.common.check_config`).
    `ConfigError` on an unknown key or a bad value, naming the key, the value and the choices.

        config = videoseq.load_config("configs/demo.yaml", train__epochs=5)
        print(config.train.epochs, config.compare.heads)
    """
    config = _with_overrides(_read_config(path), overrides)
    check_config(config)
    return config


def scan(root: str | os.PathLike, config: Config | str | os.PathLike | None = None,
         **overrides: Any) -> "DatasetIndex":
    """Index and validate a dataset: every video file under `root` with its class, split and status
    (usable, or why not). `DatasetError` when the root cannot be used at all (as `videoseq scan`).

        index = videoseq.scan("data/demo")
        print(index.counts(), [(e.path, e.status) for e in index.skipped()])
    """
    from videoseq.data.dataset import scan_dataset

    cfg = _config(config, overrides)
    return scan_dataset(root, cfg.data, workers=cfg.runtime.workers,
                        progress=cfg.runtime.progress and sys.stderr.isatty(), timeout=cfg.runtime.timeout)


def compare(root: str | os.PathLike, out: str | os.PathLike, config: Config | str | os.PathLike | None = None,
            *, force: bool = False, **overrides: Any) -> Comparison:
    """Train `compare.heads` (default per_frame and lstm) on the same data and compare them on the
    test split, as `videoseq compare` does: writes the run folder `out` (metrics.json, report.md,
    plots/, models/<head>/) and returns its metrics. A killed compare, rerun, continues where it stopped;
    a compare into a folder built from the same config and videos returns it as it is, and finished
    (head, seed) runs kept there are reused, unless `force`.

        result = videoseq.compare("data/demo", "runs/demo", "configs/demo.yaml", train__epochs=5)
        print(result)                                  # the table and the verdicts
    """
    from videoseq.learn.compare import compare_heads

    cfg = _config(config, overrides)
    metrics = compare_heads(root, out, cfg, progress=cfg.runtime.progress, force=force)
    return Comparison(Path(out), metrics)


# --- internals -----------------------------------------------------------------------------------

def _config(config: Config | str | os.PathLike | None, overrides: dict[str, Any]) -> Config:
    """A Config from a Config, a YAML path or None (the defaults), with `section__key` overrides,
    every value checked before any work (`commands.common.check_config`)."""
    if isinstance(config, Config):
        config = _with_overrides(config, overrides)
    elif config is None or isinstance(config, (str, os.PathLike)):
        config = _with_overrides(_read_config(config), overrides)
    else:
        raise ConfigError(f"config: expected a Config, a YAML path or None, got {type(config).__name__}")
    check_config(config)
    return config


def _with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A new Config: `config` with each `section__key=value` set and validated (`config` is unchanged)."""
    if not overrides:
        return config
    raw = config.to_dict()
    for name, value in overrides.items():
        *sections, key = name.split("__")
        if not sections or not key or not all(sections):
            raise ConfigError(f"{name}={value!r}: name an override section__key (two underscores), "
                              f"e.g. train__epochs=3")
        node = raw
        for section in sections:
            if not isinstance(node.get(section), dict):
                raise ConfigError(f"{name}: unknown config section {section!r}; "
                                  f"sections: {', '.join(k for k, v in node.items() if isinstance(v, dict))}")
            node = node[section]
        node[key] = value
    return config_from_dict(raw)
