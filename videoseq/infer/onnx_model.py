"""Run an exported model (`videoseq export`, infer/export.py) with ONNX Runtime, without PyTorch.

    model = OnnxModel("model.onnx")                    # reads model.json beside it
    probs, steps = model.predict_clips(frames, mask)   # (B, T, S, S, 3) uint8, (B, T) bool
    for result in classify_paths_onnx(["a.mp4"], model):
        print(result.path, result.label if isinstance(result, Prediction) else result.error)

This module never imports torch (nor anything that does): a serving machine needs numpy, OpenCV (the
decoder, io/video.py) and onnxruntime (`pip install 'videoseq[onnx]'`). It also owns the sidecar
format that export.py writes, `<model>.json`:

    {"format": "videoseq-export", "format_version": 1, "videoseq_version", "export": {"format": "onnx" |
     "torchscript", "part": "model" | "head", "file", "opset", "exporter", "torch_version", "python"}, "bundle",
     "head", "encoder", "motion", "classes", "sampling": {"frames": T, "size": S, "short"},
     "preprocessing": {"layout", "input_size", "mean", "std", "resize", "in_graph"},
     "features": {"appearance": D, "motion": M}, "extensions",
     "inputs": [{"name", "dtype", "shape"}], "outputs": [{"name", "dtype", "shape"}]}

Shapes name the dynamic batch "batch"; T and S are fixed by the bundle. Results come as the PyTorch
path's (infer/predict.py `Prediction`, `FailedInput`), with probabilities equal to its to 1e-7..1e-5
(the same functions, floating-point sums in another order; tests/test_export.py holds them to 1e-4).
Unlike it, a batch is not padded to `batch_size`, so a result may differ in its last bits with the
batch it came in.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np

from videoseq import __version__
from videoseq.config import INFERENCE_BATCH_SIZE, JOB_TIMEOUT
from videoseq.errors import VideoseqError
from videoseq.infer.clips import Sampling, iter_clips
from videoseq.infer.predict import FailedInput, Result, prediction_of, prefetch_depth, thumbnails_of

FORMAT = "videoseq-export"
FORMAT_VERSION = 1
PARTS = ("model", "head")
FRAMES_LAYOUT = "uint8 RGB (B, T, S, S, 3)"


class ExportError(VideoseqError):
    """An export that cannot be made (format, part, head) or an exported model that cannot be used."""


def sidecar_path(model_path: str | Path) -> Path:
    """The JSON that describes an exported model: `model.onnx` -> `model.json`."""
    return Path(model_path).with_suffix(".json")


def read_export_meta(model_path: str | Path) -> dict[str, Any]:
    """The sidecar of an exported model, checked for format and the fields a runner reads."""
    model_path = Path(model_path)
    side = sidecar_path(model_path)
    if not model_path.is_file():
        raise ExportError(f"{model_path}: no such exported model")
    try:
        meta = json.loads(side.read_text())
    except FileNotFoundError:
        raise ExportError(f"{model_path}: no {side.name} beside it (written by `videoseq export`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{side}: not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{side}: not a videoseq export description")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{side}: export format {meta.get('format_version')!r} (written by videoseq "
                          f"{meta.get('videoseq_version', 'unknown')}); videoseq {__version__} reads "
                          f"{FORMAT_VERSION}")
    for key, kind in {"export": dict, "classes": list, "sampling": dict, "head": str,
                      "inputs": list, "outputs": list}.items():
        if not isinstance(meta.get(key), kind):
            raise ExportError(f"{side}: lacks {key!r}")
    if meta["export"].get("part") not in PARTS:
        raise ExportError(f"{side}: unknown part {meta['export'].get('part')!r}")
    return meta


class OnnxModel:
    """An ONNX export and its sidecar, run by ONNX Runtime on the CPU. `threads`: ONNX Runtime's
    intra-op threads (None: its default, one per core)."""

    def __init__(self, path: str | Path, *, threads: int | None = None):
        self.path = Path(path)
        self.meta = read_export_meta(self.path)
        if self.meta["export"].get("format") != "onnx":
            raise ExportError(f"{self.path}: a {self.meta['export'].get('format')} export, not ONNX")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError("onnxruntime is not installed: pip install 'videoseq[onnx]'") from None
        options = ort.SessionOptions()
        # idle threads sleep instead of spinning: decode workers share the cores (as OMP_WAIT_POLICY=PASSIVE
        # does for torch, cli.prepare_process)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001  onnxruntime raises its own types for any unreadable file
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ExportError(f"{self.path}: ONNX Runtime cannot load it ({reason})") from None
        sampling = self.meta["sampling"]
        self.part: str = self.meta["export"]["part"]
        self.head: str = self.meta["head"]
        self.classes: list[str] = [str(c) for c in self.meta["classes"]]
        self.sampling = Sampling(int(sampling["frames"]), int(sampling["size"]), str(sampling["short"]))
        self.frames, self.size = self.sampling.frames, self.sampling.size    # T, and the side S of its frames
        self.input_names = [i["name"] for i in self.meta["inputs"]]

    def predict_clips(self, frames: np.ndarray, mask: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(B, T, S, S, 3) uint8 RGB frames and a (B, T) bool prefix mask (None: all valid) ->
        (probabilities (B, C), steps (B, T, C): the probabilities after each step), float64."""
        if self.part != "model":
            raise ExportError(f"{self.path}: exports the head alone; use predict_features")
        frames = np.ascontiguousarray(frames)
        want = (self.frames, self.size, self.size, 3)
        if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[1:] != want:
            raise ValueError(f"frames: expected (B, {', '.join(map(str, want))}) uint8, "
                             f"got {frames.shape} {frames.dtype}")
        return self._run(frames, _check_mask(mask, frames.shape[:2]))

    def predict_features(self, features: np.ndarray, mask: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """A head export: (B, T, D + M) float32 features and a (B, T) bool prefix mask ->
        (probabilities (B, C), steps (B, T, C)), float64."""
        if self.part != "head":
            raise ExportError(f"{self.path}: exports the whole model; use predict_clips")
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 3 or features.shape[1] != self.frames:
            raise ValueError(f"features: expected (B, {self.frames}, D + M), got {features.shape}")
        return self._run(features, _check_mask(mask, features.shape[:2]))

    def _run(self, x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, steps = self.session.run(None, dict(zip(self.input_names, (x, mask))))
        return probs.astype(np.float64), steps.astype(np.float64)          # (B, C), (B, T, C)


def classify_paths_onnx(paths: Iterable[str | Path], model: OnnxModel, *,
                        batch_size: int = INFERENCE_BATCH_SIZE, workers: int = 2, thumbnails: bool = False,
                        prefetch: int | None = None, timeout: float | None = JOB_TIMEOUT) -> Iterator[Result]:
    """`infer.predict.classify_paths` for an ONNX export: one `Prediction` or `FailedInput` per path, in
    input order. Files decode ahead in `workers` processes (clips.iter_clips, as the PyTorch path does;
    a file still decoding after `timeout` seconds fails with "timed out after N s"); clips run
    `batch_size` at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if model.part != "model":
        raise ExportError(f"{model.path}: exports the head alone; classify needs the whole model")
    depth = prefetch or prefetch_depth(model.sampling, workers=workers, batch_size=batch_size)
    waiting: list[tuple[str, Any, float]] = []    # (path, clip or failure reason, decode seconds), in order
    for item in iter_clips(paths, model.sampling, workers=workers, prefetch=depth, timeout=timeout):
        if isinstance(item[1], str) and not waiting:
            yield FailedInput(item[0], item[1])
            continue
        waiting.append(item)
        if sum(not isinstance(clip, str) for _, clip, _ in waiting) == batch_size:
            yield from _predict_batch(waiting, model, thumbnails)
            waiting = []
    yield from _predict_batch(waiting, model, thumbnails)


class _Timed(NamedTuple):
    probs: np.ndarray              # (C,)
    steps: np.ndarray              # (T, C)
    seconds: float                 # this clip's share of the batch


def _predict_batch(items: list[tuple[str, Any, float]], model: OnnxModel, thumbnails: bool) -> list[Result]:
    clips = [clip for _, clip, _ in items if not isinstance(clip, str)]
    timed: list[_Timed] = []
    if clips:
        started = time.perf_counter()
        probs, steps = model.predict_clips(np.stack([c.frames for c in clips]),       # (B, T, S, S, 3)
                                           np.stack([c.mask for c in clips]).astype(bool))
        share = (time.perf_counter() - started) / len(clips)
        timed = [_Timed(p, s, share) for p, s in zip(probs, steps)]
    out: list[Result] = []
    for path, clip, decode_s in items:
        if isinstance(clip, str):
            out.append(FailedInput(path, clip))
            continue
        done = timed.pop(0)
        out.append(prediction_of(path, model.classes, model.head, done.probs, done.steps, clip,
                                 decode_s + done.seconds, thumbnails_of(clip.frames) if thumbnails else None))
    return out


def _check_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """A (B, T) bool prefix mask, each row non-empty (the graph does not check it)."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.ascontiguousarray(mask, dtype=bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask: expected shape {tuple(shape)}, got {mask.shape}")
    lengths = mask.sum(axis=1)
    if (lengths == 0).any() or not np.array_equal(mask, np.arange(shape[1])[None, :] < lengths[:, None]):
        raise ValueError("mask must mark a non-empty prefix of each row (valid steps first)")
    return mask

