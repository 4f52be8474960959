"""Model bundles: one trained classifier in a folder that rebuilds it without anything else.

    BUNDLE/
      model.pt      state dicts only (tensors): loads with torch.load(weights_only=True)
      config.json   format + library version, head, encoder, preprocessing, sampling, classes, full Config
      metrics.json  what training measured (val_accuracy, ...)

    path = save_bundle(run / "models" / "lstm", model=model, head="lstm", config=cfg,
                       classes=classes, metrics={"val_accuracy": 0.9})
    bundle = load_bundle(path)           # Bundle(model in eval mode, BatchNorm folded, config, classes, ...)

A bundle is written into a temporary sibling folder and swapped into place (`io.atomic.replace_dir`),
so a killed run leaves either the old bundle or the new one; every loader first completes a swap that
was killed halfway (`recover_dir`). Loading never downloads weights (the encoder is rebuilt with
weights=None and the saved state dict loaded strictly) and never unpickles anything but tensors.
JSON files are refused above a size limit before they are read, and a run folder's metrics.json may
only name bundles inside that folder. Every failure is a `BundleError` with one line naming the
bundle and what is wrong.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videoseq import __version__
from videoseq.io.atomic import (atomic_torch_save, atomic_write_json, check_replaceable, output_errors,
                                recover_dir, replace_dir)
from videoseq.config import OLDER_MODEL_KEYS, Config, RuntimeConfig, config_from_dict
from videoseq.errors import BundleError, ConfigError, OutputError
from videoseq.runtime import resolve_device

if TYPE_CHECKING:  # torch is imported lazily: `videoseq --help` must stay instant
    import torch

    from videoseq.models.classifier import VideoClassifier

log = logging.getLogger(__name__)

FORMAT = "videoseq-bundle"
FORMAT_VERSION = 1                 # bump when config.json or model.pt change shape
READABLE_FORMATS = (1,)            # bundle formats this library can load
FILES = ("model.pt", "config.json", "metrics.json")
MAX_CONFIG_BYTES = 1 << 20         # config.json: a few KiB in practice
MAX_METRICS_BYTES = 16 << 20       # metrics.json (a bundle's or a run folder's)


@dataclass
class Bundle:
    """A loaded bundle: everything prediction needs, rebuilt from the folder alone."""
    path: Path
    model: "VideoClassifier"       # eval mode, on `device`
    config: Config                 # the config the model was trained with; runtime: this machine's defaults
    head: str                      # "per_frame", "lstm", ...
    encoder: str                   # encoder registry name
    classes: list[str]             # index -> class name
    size: int                      # S: frames are decoded, resized and centre-cropped to S x S
    input_size: int                # the encoder's input side (frames are resized to it as tensors)
    frames: int                    # T: frames sampled per video
    short: str                     # "repeat" | "mask" for videos with fewer than T frames
    mean: tuple[float, ...]        # normalisation the encoder expects (RGB, 0..1 scale)
    std: tuple[float, ...]
    metrics: dict[str, Any]
    device: str
    meta: dict[str, Any]           # config.json as read

    @property
    def val_accuracy(self) -> float | None:
        """The validation accuracy recorded in metrics.json, or None when it has none."""
        value = self.metrics.get("val_accuracy")
        return float(value) if isinstance(value, (int, float)) else None


def save_bundle(dest: str | Path, *, model: "VideoClassifier", head: str, config: Config,
                classes: list[str], metrics: dict[str, Any]) -> Path:
    """Write `model` as a bundle folder at `dest` (replacing one that is there) and return the path."""
    dest = Path(dest)
    classes = [str(c) for c in classes]
    encoder = model.encoder
    from videoseq.models.encoders import frame_size

    size = frame_size(config.sampling, config.model)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "videoseq_version": __version__,
        "head": head,
        "encoder": {"name": encoder.name, "weights": config.model.weights,
                    "pooling": config.model.pooling, "input_size": int(encoder.input_size),
                    "out_dim": int(encoder.out_dim),
                    "mean": [float(m) for m in encoder.mean], "std": [float(s) for s in encoder.std]},
        "sampling": {"frames": int(config.sampling.frames), "size": size,
                     "short": config.sampling.short},
        "classes": classes,
        "config": config.to_dict(),
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # tensors only

    check_replaceable(dest, FILES, what="model bundle")
    with output_errors(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        atomic_torch_save(tmp / "model.pt", state)
        atomic_write_json(tmp / "config.json", meta)
        atomic_write_json(tmp / "metrics.json", _jsonable(metrics))
        replace_dir(tmp, dest)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OutputError):     # named after the bundle, not its temp folder
            raise OutputError(dest, e.reason) from None
        raise
    log.info("saved %s bundle (%d classes) to %s", head, len(classes), dest)
    return dest


def load_bundle(path: str | Path, *, device: str = "cpu") -> Bundle:
    """Rebuild the classifier stored at `path` (a bundle, or a run folder: its best head) on `device`
    ("cpu", "cuda", "auto"), for inference: in eval mode, BatchNorm folded into the convolutions
    (`models.classifier.fold_batchnorm`). Raise `BundleError` saying what is wrong if it can't."""
    path = Path(path)
    recover_dir(path)
    if path.is_dir() and not (path / "config.json").exists() and (path / "models").is_dir():
        path = choose_bundle(path)
    meta = read_bundle_meta(path)
    cfg = _config_of(path, meta)
    head, classes = meta["head"], meta["classes"]
    enc = meta["encoder"]
    state = _load_state(path / "model.pt")

    from videoseq.models.encoders import list_encoders
    from videoseq.models.heads import list_heads
    from videoseq.models.classifier import build_model, fold_batchnorm

    if enc["name"] not in list_encoders():
        raise BundleError(f"{path}: unknown encoder {enc['name']!r} in config.json; "
                          f"this videoseq has: {', '.join(sorted(list_encoders()))}")
    if head not in list_heads():
        raise BundleError(f"{path}: unknown head {head!r} in config.json; "
                          f"this videoseq has: {', '.join(sorted(list_heads()))}")
    model_cfg = dataclasses.replace(cfg.model, encoder=enc["name"], pooling=enc["pooling"])
    try:  # random init: the state dict brings the weights, nothing is downloaded or read elsewhere
        model = build_model(model_cfg, head, len(classes), load_weights=False)
    except (ValueError, TypeError, ConfigError) as e:
        raise BundleError(f"{path}: cannot rebuild the model from config.json ({_first_line(e)})") from None
    _check_shapes(path, model, state, len(classes))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise BundleError(f"{path}: model.pt does not fit the {enc['name']}+{head} model "
                          f"({_first_line(e)})") from None
    device = str(resolve_device(device))
    model.to(device).eval()
    fold_batchnorm(model)   # inference only: BatchNorm folded into the conv before it (~1e-7 change)
    sampling = meta["sampling"]
    return Bundle(path=path, model=model, config=cfg, head=head, encoder=enc["name"],
                  classes=list(classes), size=int(sampling["size"]),
                  input_size=int(model.encoder.input_size), frames=int(sampling["frames"]),
                  short=str(sampling["short"]), mean=tuple(enc["mean"]), std=tuple(enc["std"]),
                  metrics=_read_metrics(path), device=str(device), meta=meta)


def read_bundle_meta(path: str | Path) -> dict[str, Any]:
    """config.json of a bundle, checked for size, format and version (no torch needed)."""
    path = Path(path)
    recover_dir(path)
    if not path.exists():
        raise BundleError(f"{path}: no such model bundle")
    if not path.is_dir():
        raise BundleError(f"{path}: not a model bundle (expected a folder with {', '.join(FILES)})")
    missing = [name for name in ("model.pt", "config.json") if not (path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: not a model bundle (missing {', '.join(missing)})")
    meta = read_json_limited(path / "config.json", MAX_CONFIG_BYTES)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{path}: config.json is not a videoseq bundle config")
    version = meta.get("format_version")
    made_by = meta.get("videoseq_version", "unknown")
    if version not in READABLE_FORMATS:
        raise BundleError(f"{path}: bundle format {version!r} (written by videoseq {made_by}) is not "
                          f"readable by videoseq {__version__}, which reads format "
                          f"{', '.join(map(str, READABLE_FORMATS))}")
    if _api_level(str(made_by)) != _api_level(__version__):
        raise BundleError(f"{path}: written by videoseq {made_by}, incompatible with videoseq "
                          f"{__version__}; retrain or use videoseq {_api_level(str(made_by))}.x")
    required = {"head": str, "encoder": dict, "sampling": dict, "classes": list, "config": dict}
    for key, kind in required.items():
        if not isinstance(meta.get(key), kind):
            raise BundleError(f"{path}: config.json lacks {key!r}")
    for key in ("name", "pooling", "mean", "std"):
        if key not in meta["encoder"]:
            raise BundleError(f"{path}: config.json lacks encoder.{key}")
    for key in ("frames", "size", "short"):
        if key not in meta["sampling"]:
            raise BundleError(f"{path}: config.json lacks sampling.{key}")
    if not meta["classes"]:
        raise BundleError(f"{path}: config.json lists no classes")
    return meta


def find_bundles(run_dir: str | Path) -> dict[str, Path]:
    """head -> bundle folder, for a run folder (RUN_DIR/models/<head>/) or a single bundle. A run
    folder's metrics.json, when present, lists them; a bundle it names outside the folder is refused."""
    run_dir = Path(run_dir)
    recover_dir(run_dir)
    if (run_dir / "config.json").is_file():
        return {read_bundle_meta(run_dir)["head"]: run_dir}
    models = run_dir / "models"
    if not run_dir.exists():
        raise BundleError(f"{run_dir}: no such model bundle or run folder")
    if not models.is_dir():
        raise BundleError(f"{run_dir}: neither a model bundle (config.json) nor a run folder (models/)")
    for p in models.iterdir():            # a bundle swap killed between its renames
        if p.name.startswith(".") and p.name.endswith(".old"):
            recover_dir(models / p.name[1:-len(".old")])
    if (run_dir / "metrics.json").is_file():
        found = _bundles_of_run(run_dir)
    else:
        found = {p.name: p for p in sorted(models.iterdir())
                 if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()}
    if not found:
        raise BundleError(f"{run_dir}: run folder holds no bundles under models/")
    inside = run_dir.resolve()
    for head, p in found.items():
        if not p.resolve().is_relative_to(inside):
            raise BundleError(f"{run_dir}: the {head!r} bundle leads outside the run folder ({p.resolve()})")
    return found


def read_run_metrics(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's metrics.json (refused above MAX_METRICS_BYTES); a one-line BundleError if it is
    missing, malformed or not an object."""
    run_dir = Path(run_dir)
    recover_dir(run_dir)
    metrics = read_json_limited(run_dir / "metrics.json", MAX_METRICS_BYTES)
    if not isinstance(metrics, dict):
        raise BundleError(f"{run_dir}: metrics.json is not a JSON object")
    return metrics


def read_json_limited(file: str | Path, limit: int) -> Any:
    """The JSON value in `file`, a regular file of at most `limit` bytes (checked before reading, so
    memory never depends on what the file claims); any failure is a one-line BundleError."""
    file = Path(file)
    where = f"{file.parent}: {file.name}"
    try:
        with os.fdopen(os.open(file, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:   # a FIFO never blocks
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"{where} is not a regular file")
            if info.st_size > limit:
                raise BundleError(f"{where} is over the {limit}-byte limit ({info.st_size} bytes)")
            raw = f.read(limit + 1)
    except OSError as e:
        raise BundleError(f"{where} cannot be read ({_first_line(e)})") from None
    if len(raw) > limit:
        raise BundleError(f"{where} is over the {limit}-byte limit")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BundleError(f"{where} is not valid JSON ({_first_line(e)})") from None


def choose_bundle(model_path: str | Path, *, head: str | None = None) -> Path:
    """The bundle to use: `--head` if given, else the run's best head by validation accuracy."""
    bundles = find_bundles(model_path)
    if head is not None:
        if head not in bundles:
            raise BundleError(f"{model_path}: no {head!r} model; it has: {', '.join(sorted(bundles))}")
        return bundles[head]
    if len(bundles) == 1:
        return next(iter(bundles.values()))

    def val_acc(item: tuple[str, Path]) -> float:
        value = _read_metrics(item[1]).get("val_accuracy")
        return float(value) if isinstance(value, (int, float)) else float("-inf")

    best = max(sorted(bundles.items()), key=val_acc)  # ties: alphabetical first
    log.info("best head by validation accuracy: %s", best[0])
    return best[1]


# --- helpers -----------------------------------------------------------------------------------

def _load_state(file: Path) -> dict[str, "torch.Tensor"]:
    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses globals (functions, classes) before calling them: nothing ran.
        detail = _unpickler_detail(e)
        if "global" in detail.lower():
            what = re.search(r"GLOBAL (\S+)", detail)
            raise BundleError(f"{file}: refused to load: it holds objects other than tensors "
                              f"({what.group(1) if what else 'a Python global'}), which could run code "
                              f"when unpickled") from None
        raise BundleError(f"{file}: corrupt or not a torch file ({detail})") from None
    except Exception as e:  # noqa: BLE001  torch raises RuntimeError/EOFError/... for a damaged zip
        raise BundleError(f"{file}: corrupt or not a torch file ({_first_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError(f"{file}: expected a state dict of tensors")
    return state


def _check_shapes(path: Path, model: Any, state: dict, num_classes: int) -> None:
    """Say *which* disagreement it is (class count, encoder, head size) before load_state_dict does."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}")
        raise BundleError(f"{path}: model.pt does not match the model config.json describes "
                          f"({what}; {len(missing)} missing, {len(unexpected)} unexpected tensors)")
    for key, tensor in expected.items():
        got = state[key]
        if tuple(got.shape) == tuple(tensor.shape):
            continue
        if tensor.ndim >= 1 and got.ndim == tensor.ndim and tensor.shape[0] == num_classes \
                and tuple(got.shape[1:]) == tuple(tensor.shape[1:]):
            raise BundleError(f"{path}: config.json lists {num_classes} classes but model.pt's "
                              f"{key} has {got.shape[0]} outputs")
        raise BundleError(f"{path}: model.pt's {key} has shape {tuple(got.shape)}, the model "
                          f"config.json describes expects {tuple(tensor.shape)}")


def _bundles_of_run(run_dir: Path) -> dict[str, Path]:
    """head -> folder, as metrics.json's models.<head>.bundle names them (relative to the run folder)."""
    models = read_run_metrics(run_dir).get("models")
    if not isinstance(models, dict) or not all(isinstance(m, dict) for m in models.values()):
        raise BundleError(f"{run_dir}: metrics.json's 'models' is not an object of heads")
    found = {}
    for head, m in models.items():
        rel = m.get("bundle", f"models/{head}")
        if not isinstance(rel, str) or os.path.isabs(rel) or ".." in Path(rel).parts:
            raise BundleError(f"{run_dir}: metrics.json names bundle {rel!r} for {head!r}, which is "
                              f"not a path inside the run folder")
        if (run_dir / rel / "config.json").is_file():
            found[head] = run_dir / rel
    return found


def _config_of(path: Path, meta: dict[str, Any]) -> Config:
    """The training config; its runtime section (cache folder, device, workers, dask address) described
    the machine that trained, so this machine's defaults replace it: a bundle never points elsewhere."""
    raw = meta["config"]
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):   # keys the bundle may predate
        raw = {**raw, "model": {**OLDER_MODEL_KEYS, **raw["model"]}}
    try:
        return dataclasses.replace(config_from_dict(raw), runtime=RuntimeConfig())
    except ConfigError as e:
        raise BundleError(f"{path}: config.json holds a config this videoseq cannot read ({e})") from None


def _read_metrics(path: Path) -> dict[str, Any]:
    """A bundle's metrics.json; {} when it has none or it is not an object, BundleError when too large
    or malformed."""
    file = Path(path) / "metrics.json"
    if not file.exists():
        return {}
    metrics = read_json_limited(file, MAX_METRICS_BYTES)
    return metrics if isinstance(metrics, dict) else {}


def _api_level(version: str) -> str:
    """The part of a version that must match: major, or major.minor while major is 0 (semver)."""
    parts = version.split(".")
    return ".".join(parts[:2]) if parts[0] == "0" else parts[0]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch scalars and arrays
        return obj.tolist()
    return obj


def _unpickler_detail(e: BaseException) -> str:
    """The reason inside torch's long weights_only message ("Unsupported global: GLOBAL io.open ...")."""
    text = str(e)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return found.group(1).strip()[:200] if found else _first_line(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]
