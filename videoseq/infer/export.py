"""Export a model bundle as one graph, ONNX (for ONNX Runtime: infer/onnx_model.py) or TorchScript.

    export_bundle("runs/demo", "model.onnx")                     # the best head; + model.json beside it
    export_bundle(bundle, "head.onnx", part="head")              # features -> head only
    export_bundle("runs/demo", "model.pt", format="torchscript", head="lstm")

The whole model (part="model"): inputs `frames` (B, T, S, S, 3) uint8 RGB, decoded as io.video.read_frames
gives them (resized and centre-cropped to the bundle's S), and `mask` (B, T) bool, a prefix of valid
steps (all True unless the bundle masks short videos, `short: mask`); outputs `probabilities` (B, C) and
`steps` (B, T, C), the class probabilities after each step (`Prediction.steps`). B is dynamic; T and S
are the bundle's. `frames_to_tensor` is in the graph: to float, resize to the encoder's input size when
S differs (bilinear, antialiased when shrinking, as two constant matrix products: the same linear map),
normalise. The head alone (part="head"): `features` (B, T, D + M) float32 and `mask` -> the same outputs.
The sidecar `<out>.json` (format: onnx_model.py) names classes, sampling, preprocessing, inputs, outputs.

ONNX goes through torch.onnx's TorchScript-based exporter (`dynamo=False`): it needs nothing beyond
torch, while the torch.export-based one needs onnxscript. The graphs are traced, and the modules take
their traceable forms when traced, with the same numbers: the motion stream correlates patches instead
of a grouped convolution (models/motion.py), causal recurrent heads run unpacked and read each row's
last valid step (models/heads.py). Bidirectional rnn/lstm/gru heads are refused: unpacked, their
backward direction would read the padded steps. A bidirectional conv1d head exports (padded steps are
zeroed before every convolution; its steps recompute each prefix, as in PyTorch).
"""
from __future__ import annotations

import copy
import dataclasses
import platform
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videoseq import __version__
from videoseq.infer.onnx_model import FORMAT, FORMAT_VERSION, FRAMES_LAYOUT, PARTS, ExportError, sidecar_path
from videoseq.io.atomic import atomic_write_json
from videoseq.models.bundle import Bundle, choose_bundle, load_bundle
from videoseq.models.engines import GraphEncoder
from videoseq.models.heads import RecurrentHead, TemporalHead

FORMATS = ("onnx", "torchscript")
OPSET = 17                 # ONNX opset: LayerNormalization is one op from 17; ONNX Runtime >= 1.14 runs it
OPSETS = range(14, 21)     # what the TorchScript-based exporter writes for these graphs
TRACE_BATCH = 2            # clips in the example input the graph is traced with (B stays dynamic)


def export_bundle(bundle_or_path: Bundle | str | Path, out: str | Path, *, format: str = "onnx",
                  part: str = "model", head: str | None = None, opset: int = OPSET) -> Path:
    """Write `out` (the graph) and its sidecar `out` with suffix .json; return `out`.

    `bundle_or_path`: a loaded `Bundle`, a bundle folder, or a run folder (`head`, else its best head).
    Raise `ExportError` for an unknown format or part or a head that cannot be exported, `BundleError`
    for an unusable bundle."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose {' or '.join(FORMATS)}")
    if part not in PARTS:
        raise ExportError(f"unknown part {part!r}; choose {' or '.join(PARTS)}")
    if format == "onnx" and opset not in OPSETS:
        raise ExportError(f"ONNX opset {opset} is not available; choose {OPSETS[0]}..{OPSETS[-1]}")
    out = Path(out)
    if out.suffix.lower() == ".json":
        raise ExportError(f"{out}: the graph needs another name than .json (its description goes there)")
    bundle = bundle_or_path if isinstance(bundle_or_path, Bundle) \
        else load_bundle(choose_bundle(bundle_or_path, head=head), device="cpu")
    model = bundle.model if str(bundle.device) == "cpu" else copy.deepcopy(bundle.model).cpu()
    check_exportable(model.head, bundle.head)
    module = ExportHead(model.head) if part == "head" \
        else ExportModel(model, frames=bundle.frames, size=bundle.size, mean=bundle.mean, std=bundle.std)
    example = example_inputs(bundle, part)
    names = ["frames", "mask"] if part == "model" else ["features", "mask"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")     # tracer and deprecation warnings: the graph is tested
            module.eval()
            if format == "onnx":
                torch.onnx.export(module, example, str(tmp), dynamo=False, opset_version=opset,
                                  input_names=names, output_names=["probabilities", "steps"],
                                  dynamic_axes={n: {0: "batch"} for n in [*names, "probabilities", "steps"]},
                                  do_constant_folding=True)
            else:
                traced = torch.jit.trace(module, example, check_trace=False)
                torch.jit.save(traced, str(tmp))
        tmp.replace(out)
    except RuntimeError as e:   # the exporters raise RuntimeErrors (an op a graph cannot hold)
        raise ExportError(f"{bundle.path}: cannot export the {bundle.encoder}+{bundle.head} model to "
                          f"{format} ({str(e).strip().splitlines()[0][:200]})") from e
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_json(sidecar_path(out), export_meta(bundle, out, format=format, part=part, opset=opset))
    return out


def check_exportable(head: TemporalHead, name: str) -> None:
    """Raise `ExportError` for a head whose graph would let padded steps change a result."""
    if isinstance(head, RecurrentHead) and head.bidirectional:
        raise ExportError(f"a bidirectional {name} head cannot be exported: a graph runs the recurrence "
                          f"unpacked, and the backward direction would read the padded steps")


class Preprocess(nn.Module):
    """`models.transforms.frames_to_tensor` as graph ops: (B, T, S, S, 3) uint8 RGB ->
    (B, T, 3, S', S') float32, (x/255 resized to S' - mean) / std."""

    def __init__(self, size: int, input_size: int, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("resize", resize_matrix(size, input_size) if size != input_size else None)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 1, 4, 2, 3).float() / 255.0                    # (B, T, 3, S, S)
        if self.resize is not None:
            x = self.resize @ x @ self.resize.T                              # (B, T, 3, S', S')
        return (x - self.mean) / self.std


def resize_matrix(size: int, out: int) -> torch.Tensor:
    """(out, size): the 1-D resize of `frames_to_tensor` (bilinear, antialiased when shrinking) as a
    matrix, read off by resizing the rows of the identity; a square image resizes as R @ x @ R.T."""
    eye = torch.eye(size, dtype=torch.float64)[None, None]                   # (1, 1, size, size)
    rows = F.interpolate(eye, size=(out, size), mode="bilinear", align_corners=False,
                         antialias=size > out)                               # (1, 1, out, size)
    return rows[0, 0].contiguous().float()                                   # (out, size)


class ExportHead(nn.Module):
    """A head as a graph: (B, T, D + M) features, (B, T) bool mask -> (probabilities (B, C),
    steps (B, T, C) probabilities after each step), from the head's `forward_and_steps`."""

    def __init__(self, head: TemporalHead):
        super().__init__()
        self.head = head

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, steps = self.head.forward_and_steps(feats, mask)            # (B, C), (B, T, C) log-probs
        return torch.softmax(logits, dim=1), steps.exp()


class ExportModel(nn.Module):
    """The whole classifier as a graph: (B, T, S, S, 3) uint8 frames, (B, T) bool mask ->
    (probabilities (B, C), steps (B, T, C)). The encoder runs on all B*T frames at once (chunks, as
    `VideoClassifier.forward_features` makes them, would be fixed in number); a head that never reads
    the motion stream gets zeros for it, as `VideoClassifier.clip_features` gives it."""

    def __init__(self, model: nn.Module, *, frames: int, size: int, mean, std):
        super().__init__()
        self.frames = frames                                                 # T: a constant in the graph
        self.preprocess = Preprocess(size, int(model.encoder.input_size), mean, std)
        self.encoder, self.motion = GraphEncoder(model.encoder), model.motion
        self.out_dim = int(model.encoder.out_dim)                            # D
        self.head = ExportHead(model.head)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.preprocess(frames)                                          # (B, T, 3, S', S')
        # step-major (T*B, 3, S', S') by concatenation: a reshape would hide S' from the exporter,
        # whose adaptive pooling needs it
        flat = torch.cat(x.unbind(1), dim=0)
        feats = self.encoder(flat).reshape(self.frames, -1, self.out_dim).transpose(0, 1)  # (B, T, D)
        if self.motion is not None:
            if self.head.head.reads_motion:
                feats = torch.cat([feats, self.motion(x).to(feats.dtype)], dim=2)   # (B, T, D + M)
            else:
                feats = F.pad(feats, (0, self.motion.out_dim))               # (B, T, D + M), unread zeros
        return self.head(feats, mask)


def example_inputs(bundle: Bundle, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs to trace with: TRACE_BATCH random clips, the second one short by a step."""
    t = bundle.frames
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(TRACE_BATCH, t, dtype=torch.bool)
    mask[1:, max(1, t - 1):] = False                                         # (B, T) prefix masks
    if part == "model":
        frames = torch.randint(0, 256, (TRACE_BATCH, t, bundle.size, bundle.size, 3), generator=g,
                               dtype=torch.uint8)                            # (B, T, S, S, 3)
        return frames, mask
    return torch.randn(TRACE_BATCH, t, bundle.model.head.in_dim, generator=g), mask   # (B, T, D + M)


def export_meta(bundle: Bundle, out: Path, *, format: str, part: str, opset: int) -> dict[str, Any]:
    """The sidecar's content (format: infer/onnx_model.py)."""
    t, s, c = bundle.frames, bundle.size, len(bundle.classes)
    head = bundle.model.head
    motion = head.motion_dim
    if part == "model":
        inputs = [{"name": "frames", "dtype": "uint8", "shape": ["batch", t, s, s, 3],
                   "layout": FRAMES_LAYOUT}]
    else:
        inputs = [{"name": "features", "dtype": "float32", "shape": ["batch", t, head.in_dim],
                   "layout": "float32 (B, T, D + M): encoder features, then the motion stream"}]
    inputs.append({"name": "mask", "dtype": "bool", "shape": ["batch", t],
                   "layout": "True on valid steps, a non-empty prefix of each row"})
    model_cfg = bundle.config.model
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "videoseq_version": __version__,
        "export": {"format": format, "part": part, "file": out.name,
                   "opset": opset if format == "onnx" else None,
                   "exporter": "torch.onnx.export(dynamo=False)" if format == "onnx" else "torch.jit.trace",
                   "torch_version": torch.__version__, "python": platform.python_version()},
        "bundle": str(bundle.path), "head": bundle.head, "encoder": bundle.encoder,
        "motion": model_cfg.motion if motion else "none",
        "classes": list(bundle.classes),
        "sampling": {"frames": t, "size": s, "short": bundle.short},
        "preprocessing": {"layout": FRAMES_LAYOUT, "input_size": int(bundle.input_size),
                          "mean": [float(m) for m in bundle.mean], "std": [float(v) for v in bundle.std],
                          "resize": "frames S x S (shorter side to S, centre crop) by the decoder; then to "
                                    "input_size, bilinear, antialiased when shrinking",
                          "in_graph": part == "model"},
        "features": {"appearance": head.in_dim - motion, "motion": motion},
        "extensions": list(dataclasses.asdict(bundle.config.data).get("extensions") or []),
        "inputs": inputs,
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": ["batch", c]},
                    {"name": "steps", "dtype": "float32", "shape": ["batch", t, c],
                     "layout": "class probabilities after each step; padded steps repeat the last valid"}],
    }
