"""Typed configuration: YAML files map onto these dataclasses; unknown keys are errors.

    cfg = load_config("configs/demo.yaml", overrides=["train.epochs=5", "compare.heads=[per_frame,gru]"])

Every default carries a comment saying why it is what it is. Sections:
data (what goes in), sampling (which frames), model (encoder + head), train, compare, runtime.

Loading checks every value's type, and `check_values` every enumeration and range (a one-line
`ConfigError` naming the key, the value and what the key accepts). Names that registries above this
layer own (model.encoder, model.motion, compare.heads; runtime.task_runner in flows/) are checked by
`videoseq.commands.common.check_config`, which every entry point calls before any work.
"""
from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from videoseq.errors import ConfigError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
                    ".wmv", ".flv", ".3gp", ".ogv", ".mts", ".m2ts")
# clips per motion-stream and head pass when classifying (classify, evaluate, the inbox flow share it:
# the batch size can change a result's last bits; predict.py says why 4)
INFERENCE_BATCH_SIZE = 4
# seconds one job (probing, extracting or decoding one video) may run in a worker process before it is
# killed and the video reported: a hung read (a stalled mount, a FIFO) must not block a run forever,
# while a long video decoded whole on a slow machine must still finish
JOB_TIMEOUT = 600.0
MAX_CONFIG_BYTES = 1 << 20       # a config file larger than this is refused (configs are a few KiB)
# what a model key missing from a saved config (a bundle's config.json) meant when it was saved: the
# head of that time (a layer-normalised joint projection of the streams, no summaries or modality dropout)
OLDER_MODEL_KEYS = {"stream_norm": True, "per_stream": False, "stream_bottleneck": 0, "stream_summary": False,
                    "modality_dropout": 0.0, "stream_stats": False, "stats_norm": False}
TRAIN_MODES = ("frozen", "finetune")
SHORT_POLICIES = ("repeat", "mask")
POOLINGS = ("avg", *(f"grid{k}" for k in range(1, 9)))   # models.encoders.parse_pooling
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")        # runtime.resolve_device
ENGINES = ("auto", "torch", "onnx")                       # models.engines.build_engine


@dataclass
class DataConfig:
    """The `data` section: which files are videos, how they are grouped and split, which are too short."""

    extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))  # files scanned as videos (case-insensitive)
    group_regex: str | None = None   # e.g. "_g(\\d+)_" (UCF101): clips of one group never span two splits
    val_fraction: float = 0.15       # share of each class carved out for validation when the layout has no val split
    test_fraction: float = 0.15      # share of each class held out for test (folder-per-class layout only)
    split_seed: int = 0              # the split is a pure function of (files, fractions, seed)
    min_frames: int = 1              # videos with fewer decodable frames are skipped as "too short"


@dataclass
class SamplingConfig:
    """The `sampling` section: frames taken per video, their size, and how short videos are filled."""

    frames: int = 16                 # T: frames per video, one per equal segment (TSN)
    size: int | None = None          # S: square side after shorter-side resize + centre crop; None = the encoder's input size
    short: str = "repeat"            # videos with < T frames: "repeat" frames, or "mask" the missing steps
    train_views: int = 1             # samplings per training video: view 0 = segment centres, views 1.. = random offsets


@dataclass
class ModelConfig:
    """The `model` section: frame encoder, its weights and pooling, motion stream, and the head's sizes."""

    encoder: str = "efficientnet_lite0"  # ImageNet features transfer to real footage; "small_cnn" for synthetic tasks
    weights: str | None = "DEFAULT"      # None (random init) | "DEFAULT" (the encoder's pretrained weights) | a local path
    pooling: str = "grid2"               # "avg" or "gridK" (KxK cells): motion direction is invisible after global avg
    motion: str = "blockmatch+photometric+speed+tempo"     # "blockmatch": temporal heads also read how the picture moved between frames; "none"
    input_size: int | None = None        # side frames are resized to for the encoder; None = the encoder's own (224 for Lite0)
    hidden: int = 128                    # width of every head's hidden layer / recurrent state
    layers: int = 1                      # recurrent or conv layers in the head
    dropout: float = 0.3                 # on head inputs and between layers; a few hundred clips overfit easily
    stream_dropout: float = 0.9          # with motion: share of training clips a temporal head sees without appearance
    stream_norm: bool = False            # LayerNorm after the temporal streams' projection (it erases how large a change is)
    per_stream: bool = True              # each temporal vector stream through its own Linear (False: one Linear for all)
    stream_bottleneck: int = 0           # per_stream: each stream's Linear goes through this many dims first; 0 = none
    stream_summary: bool = True          # per_stream: also read each stream's whole-frame summary (cells averaged)
    modality_dropout: float = 0.3        # share of training clips each temporal stream is hidden from (never all at once)
    stream_stats: bool = True            # stream_summary: also read the summaries' running mean, magnitude, max, min, unsteadiness
    stats_norm: bool = True              # stream_stats: standardise each statistic (BatchNorm) before its Linear
    bidirectional: bool = False          # a causal head can also give a belief after each frame


@dataclass
class TrainConfig:
    """The `train` section: frozen or end-to-end training, optimiser, early stopping and seeds."""

    mode: str = "frozen"             # "frozen": features once, heads on the cache; "finetune": encoder + head end to end
    epochs: int = 100                # upper bound; early stopping usually ends sooner
    batch_size: int = 32
    lr: float = 1e-3                 # AdamW, cosine schedule with warm-up
    weight_decay: float = 1e-2
    patience: int = 30               # epochs without validation improvement before stopping
    seed: int = 0                    # first seed; --seeds N uses seed, seed+1, ...
    seeds: int = 1                   # repeats of every head with different seeds, for mean and spread
    finetune_lr_scale: float = 0.1   # encoder learning rate = lr * this in finetune mode


@dataclass
class CompareConfig:
    """The `compare` section: the heads to compare (baseline first) and the bootstrap resamples."""

    heads: list[str] = field(default_factory=lambda: ["per_frame", "lstm"])  # the baseline first
    bootstrap: int = 2000            # resamples for paired bootstrap intervals


@dataclass
class RuntimeConfig:
    """The `runtime` section: worker processes, cache folder, device, progress bars, flow task runner."""

    workers: int = 2                 # decode worker processes (extraction is CPU bound)
    cache_dir: str | None = None     # frames/features cache; None = $VIDEOSEQ_CACHE or ~/.cache/videoseq
    device: str = "auto"             # "auto" (cuda if available), "cpu", "cuda"
    engine: str = "auto"             # frozen-feature encoding: "auto" (ONNX Runtime on a CPU when installed), "torch", "onnx"
    progress: bool = True            # progress bars on long work
    task_runner: str = "threads"     # flows: "threads" (bounded pool) or "dask"
    max_workers: int = 2             # flows: bound on concurrently running tasks
    dask_address: str | None = None  # flows: an existing dask scheduler; None = local cluster
    job_timeout: float | None = JOB_TIMEOUT  # seconds per video in a worker before it is killed and the
    #                                          video reported ("timed out after N s"); 0 or null: no limit

    def __post_init__(self) -> None:
        _check_job_timeout(self.job_timeout)

    @property
    def timeout(self) -> float | None:
        """`job_timeout` as the worker pools take it: seconds, or None for no limit."""
        return float(self.job_timeout) if self.job_timeout else None


@dataclass
class Config:
    """A whole configuration: one instance of each section, defaults wherever the YAML says nothing."""

    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain dicts, one per section."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The config as YAML text, fields in declaration order; `load_config` reads it back unchanged."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_config(path: str | Path | None = None, *, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file (if any), then `a.b=c` overrides, each validated."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml_file(_existing_config(Path(path)), what="config file")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for item in overrides:
        _apply_override(raw, item)
    return config_from_dict(raw)


def read_yaml_file(path: str | Path, *, what: str) -> Any:
    """The YAML document in `path` (an empty file: {}), with the safe loader: no tags that build
    objects. ConfigError naming the file and the reason when it is missing or not valid YAML."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: {what} of {p.stat().st_size} bytes, more than the limit of "
                          f"{MAX_CONFIG_BYTES} (MAX_CONFIG_BYTES)")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML ({_first_line(e)})") from None


def _existing_config(p: Path) -> Path:
    """`p`, or (when `p` is missing and names a file of the repository's `configs/` folder) the shipped
    config of that name: `--config configs/demo.yaml` works after a wheel install too."""
    if p.is_file() or p.parent not in (Path("configs"), Path(".")):
        return p
    from videoseq.configs import shipped_configs, config_file

    return config_file(p.name) if p.name in shipped_configs() else p


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def config_from_dict(raw: dict[str, Any]) -> Config:
    """A `Config` from nested dicts (as YAML loads them), missing keys at their defaults.

    Raises `ConfigError` on an unknown key, a value of the wrong type, or one outside its enumeration
    or range (`check_values`)."""
    config = _build(Config, raw, "")
    check_values(config)
    return config


def check_values(config: Config) -> None:
    """`ConfigError`, one line naming the key, the value and what it accepts, for the first value of
    `config` outside its enumeration or range. Registry names are not checked here (see the module
    docstring)."""
    d, s, m, t, c, r = config.data, config.sampling, config.model, config.train, config.compare, config.runtime
    if not d.extensions:
        raise ConfigError("data.extensions: expected at least one extension, e.g. [.mp4]")
    for ext in d.extensions:
        if not re.fullmatch(r"\.?[^./\\\s]+", ext):
            raise ConfigError(f"data.extensions: {ext!r} is not a file extension (e.g. .mp4)")
    if d.group_regex is not None:
        try:
            re.compile(d.group_regex)
        except re.error as e:
            raise ConfigError(f"data.group_regex: {d.group_regex!r} is not a valid regular expression ({e})") from None
    _in_range("data.val_fraction", d.val_fraction, low=0.0, below=1.0)
    _in_range("data.test_fraction", d.test_fraction, low=0.0, below=1.0)
    if d.val_fraction + d.test_fraction >= 1.0:
        raise ConfigError(f"data.val_fraction + data.test_fraction: {d.val_fraction} + {d.test_fraction} "
                          f"leaves nothing for train; expected a sum below 1")
    _in_range("data.min_frames", d.min_frames, low=1)
    _in_range("sampling.frames", s.frames, low=1)
    _in_range("sampling.size", s.size, low=1)
    _one_of("sampling.short", s.short, SHORT_POLICIES)
    _in_range("sampling.train_views", s.train_views, low=1)
    _one_of("model.pooling", m.pooling, POOLINGS)
    _in_range("model.input_size", m.input_size, low=1)
    _in_range("model.hidden", m.hidden, low=1)
    _in_range("model.layers", m.layers, low=1)
    _in_range("model.dropout", m.dropout, low=0.0, below=1.0)
    _in_range("model.stream_dropout", m.stream_dropout, low=0.0, high=1.0)
    _in_range("model.stream_bottleneck", m.stream_bottleneck, low=0)
    _in_range("model.modality_dropout", m.modality_dropout, low=0.0, below=1.0)
    _one_of("train.mode", t.mode, TRAIN_MODES)
    for key in ("epochs", "batch_size", "seeds"):
        _in_range(f"train.{key}", getattr(t, key), low=1)
    for key in ("patience", "seed"):
        _in_range(f"train.{key}", getattr(t, key), low=0)
    _in_range("train.weight_decay", t.weight_decay, low=0.0)
    _in_range("train.finetune_lr_scale", t.finetune_lr_scale, low=0.0)
    if not t.lr > 0:
        raise ConfigError(f"train.lr: expected a number > 0, got {t.lr!r}")
    if not c.heads:
        raise ConfigError("compare.heads: expected at least one head, the baseline first")
    twice = sorted({h for h in c.heads if c.heads.count(h) > 1})
    if twice:
        raise ConfigError(f"compare.heads: {twice[0]!r} is listed twice")
    _in_range("compare.bootstrap", c.bootstrap, low=1)
    _in_range("runtime.workers", r.workers, low=0)
    _in_range("runtime.max_workers", r.max_workers, low=1)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", r.device):
        raise ConfigError(f"runtime.device: {r.device!r} is not one of {', '.join(DEVICES)}")
    if r.engine not in ENGINES:
        raise ConfigError(f"runtime.engine: {r.engine!r} is not one of {', '.join(ENGINES)}")
    _check_job_timeout(r.job_timeout)


def _check_job_timeout(value: float | None) -> None:
    if value is not None and not value >= 0:
        raise ConfigError(f"runtime.job_timeout: expected seconds >= 0 (0 or null: no limit), got {value!r}")


def _one_of(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")


def _in_range(key: str, value: float | None, *, low: float, high: float | None = None,
              below: float | None = None) -> None:
    """ConfigError unless low <= value (<= high) (< below); None (an optional value left out) passes."""
    if value is None or (low <= value and (high is None or value <= high) and (below is None or value < below)):
        return
    kind = "an integer" if isinstance(value, int) else "a number"
    upper = f" and <= {high:g}" if high is not None else f" and < {below:g}" if below is not None else ""
    raise ConfigError(f"{key}: expected {kind} >= {low:g}{upper}, got {value!r}")


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=10")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: not a valid YAML value ({_first_line(e)})") from None


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key {where + unknown[0]!r}; "
                          f"{where.rstrip('.') or 'top level'} has: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{where}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(value, opt, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, key) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {hint!r}")


def config_digest(obj: Any) -> str:
    """A short stable hash of a config section (or any JSON-able value), for cache keys."""
    import hashlib

    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()
