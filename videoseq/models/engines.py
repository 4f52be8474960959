"""Frame engines: what runs a frozen encoder over many frames (frozen-feature caching, data/features.py).

    engine = build_engine(encoder, engine="auto", device="cpu")   # ONNX Runtime on a CPU, if installed
    feats = engine(x)                      # (n, 3, S, S) float32 normalised frames -> (n, D) float32, CPU
    folder = f"{identity}+{engine.cache_tag}" if engine.cache_tag else identity

Two engines compute the same function, the encoder with its BatchNorm folded into the convolutions
(`classifier.fold_batchnorm`) and its pooling:

- `torch`: eager PyTorch under `torch.inference_mode()`, on any device. `cache_tag` "" (feature
  folders without a tag hold its features), `tolerance` 0: it is the reference.
- `onnx`: the folded encoder exported with torch.onnx's TorchScript-based exporter (`dynamo=False`, as
  infer/export.py does; in torch 2.14 it writes with the `onnx` package), opset 17, a dynamic batch axis, run by ONNX Runtime
  on the CPU (graph optimisation level all, intra-op threads = torch's count when built). In the
  graph, adaptive pooling is two constant matrix products (the exporter refuses a grid that does not
  divide the feature map, such as Lite0's 7x7 into 2x2) and Lite0's strided convolutions pad by
  constants (`fix_same_padding`). One export per (encoder `cache_id()`, input size), kept in memory
  for the process (Lite0: 13 MB, 0.5-1.8 s to build). `cache_tag` "ort", `tolerance` 1e-4.

On the 2-core development machine ONNX Runtime encodes 1.8-3.9x the frames/s of eager PyTorch
with Lite0 (docs/benchmarks/encode.md); measured differences to the torch engine: at most 1.9e-5
(Lite0, features up to 6) and 7e-8 (small_cnn). Every ONNX engine is checked when built: 3 random frames
through both engines must agree within `tolerance` (the export traces a batch of 2, so a batch size
baked into the graph would show). An export that fails or disagrees logs a warning and gives the torch
engine instead, so features are never silently wrong.

"auto" is `onnx` where `onnx` and `onnxruntime` are importable (the `onnx` extra) and the device is a
CPU, else `torch` (a GPU keeps PyTorch). Asking for "onnx" without them, or with a non-CPU device, is
an `EngineError`.
"""
from __future__ import annotations

import copy
import importlib.util
import io
import logging
import threading
import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from videoseq.errors import VideoseqError
from videoseq.models import lite0
from videoseq.models.classifier import fold_batchnorm
from videoseq.models.motion import pool_matrix

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "onnx")
OPSET = 17                  # ONNX opset of the export (ONNX Runtime >= 1.14 runs it)
ONNX_TOLERANCE = 1e-4       # max abs difference to the torch engine that the onnx engine guarantees
TRACE_BATCH = 2             # frames in the example input the graph is traced with (the batch stays dynamic)
CHECK_BATCH = 3             # random frames both engines encode when an onnx engine is built
EXPORT_CACHE_SIZE = 4       # exported graphs kept in memory, most recently used first
_exports: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
_exports_lock = threading.Lock()


class EngineError(VideoseqError, ValueError):
    """An engine that cannot be used as asked: unknown name, onnx/onnxruntime missing, onnx on a GPU."""


def onnx_engine_available() -> bool:
    """Whether `onnx` (torch.onnx's exporter writes with it) and `onnxruntime` can be imported (located,
    not imported: importing them takes ~0.3 s)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def resolve_engine(engine: str, device: str | torch.device = "cpu") -> str:
    """"torch" or "onnx": the engine `build_engine` tries for this name and device (before its check,
    which may fall back to "torch"). Raise `EngineError` for an unknown name or an unusable "onnx"."""
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    on_cpu = torch.device(device).type == "cpu"
    if engine == "auto":
        return "onnx" if on_cpu and onnx_engine_available() else "torch"
    if engine == "onnx":
        if not on_cpu:
            raise EngineError(f"engine 'onnx' runs on the CPU, the device is {torch.device(device)}; "
                              f"use engine auto or torch")
        if not onnx_engine_available():
            raise EngineError("engine 'onnx' needs onnx and onnxruntime: pip install 'videoseq[onnx]' "
                              "(or use engine auto or torch)")
    return engine


class FrameEngine:
    """Callable: (n, 3, S, S) float32 normalised frames -> (n, D) float32 features on the CPU, any n >= 0.

    `name` ("torch" | "onnx"), `cache_tag` (for feature folder names: "" or "ort"), `tolerance` (max abs
    difference to the torch engine's features), `input_size` S and `out_dim` D of the encoder."""

    name: str = ""
    cache_tag: str = ""
    tolerance: float = 0.0

    def __init__(self, *, input_size: int, out_dim: int):
        self.input_size = int(input_size)
        self.out_dim = int(out_dim)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, input_size={self.input_size}, out_dim={self.out_dim})"


class TorchEngine(FrameEngine):
    """Eager PyTorch on `device`: a BatchNorm-folded copy of the encoder, in eval and inference mode."""

    name, cache_tag, tolerance = "torch", "", 0.0

    def __init__(self, encoder: nn.Module, *, device: str | torch.device = "cpu"):
        super().__init__(input_size=encoder.input_size, out_dim=encoder.out_dim)
        self.device = torch.device(device)
        self.encoder = folded_copy(encoder).to(self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.encoder(x.to(self.device)).float().cpu()        # (n, 3, S, S) -> (n, D)


class OnnxEngine(FrameEngine):
    """ONNX Runtime on the CPU, from the bytes of an exported graph (`export_encoder`)."""

    name, cache_tag, tolerance = "onnx", "ort", ONNX_TOLERANCE

    def __init__(self, graph: bytes, *, input_size: int, out_dim: int, threads: int | None = None):
        super().__init__(input_size=input_size, out_dim=out_dim)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # idle threads sleep instead of spinning (as OMP_WAIT_POLICY=PASSIVE does for torch): as fast on
        # quiet cores, up to 1.9x faster on cores shared with other processes (docs/benchmarks/encode.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads = options.intra_op_num_threads
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"onnx engine: expected (n, 3, {s}, {s}) frames, got {tuple(x.shape)}")
        if x.shape[0] == 0:
            return torch.zeros(0, self.out_dim)                               # (0, D)
        frames = x.detach().to("cpu", torch.float32).contiguous().numpy()     # (n, 3, S, S) NCHW
        (feats,) = self.session.run(None, {self.input_name: frames})         # (n, D) float32
        return torch.from_numpy(feats)


def build_engine(encoder: nn.Module, *, engine: str = "auto", device: str | torch.device = "cpu",
                 threads: int | None = None) -> FrameEngine:
    """The engine `engine` ("auto" | "torch" | "onnx") for a FrameEncoder (`input_size`, `out_dim`,
    `forward_map`, `pool`, `cache_id`) on `device`; the encoder itself is never changed.

    `threads`: ONNX Runtime's intra-op threads (None: `torch.get_num_threads()` now). An onnx engine
    whose export fails or whose features differ from the torch engine's by more than its tolerance on
    a random batch is replaced by the torch engine, with a warning. `EngineError` for an unknown name,
    or "onnx" without onnx and onnxruntime or with a non-CPU device."""
    if resolve_engine(engine, device) == "torch":
        return TorchEngine(encoder, device=device)
    reference = TorchEngine(encoder, device="cpu")
    try:
        graph = export_encoder(encoder, reference=reference.encoder)
        built = OnnxEngine(graph, input_size=reference.input_size, out_dim=reference.out_dim, threads=threads)
        diff = engine_difference(built, reference)
    except Exception as e:  # noqa: BLE001  the exporter and onnxruntime raise many types
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        log.warning("%s: ONNX Runtime engine unavailable (%s); encoding with PyTorch", _label(encoder), reason)
        return reference
    if not diff <= built.tolerance:                                  # NaN fails too
        log.warning("%s: ONNX Runtime features differ from PyTorch's by %.3g (> %.0e); encoding with "
                    "PyTorch", _label(encoder), diff, built.tolerance)
        return reference
    import onnxruntime as ort

    log.info("%s: ONNX Runtime %s engine, %d threads (max difference to PyTorch %.1e on %d random frames)",
             _label(encoder), ort.__version__, built.threads, diff, CHECK_BATCH)
    return built


def engine_difference(engine: FrameEngine, reference: FrameEngine, *, frames: int = CHECK_BATCH) -> float:
    """Max abs difference of two engines' features on `frames` seeded random frames (inf when the
    shapes differ)."""
    g = torch.Generator().manual_seed(0)
    s = reference.input_size
    x = torch.randn(frames, 3, s, s, generator=g)                        # (frames, 3, S, S)
    a, b = engine(x), reference(x)                                       # (frames, D) each
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max())


def folded_copy(encoder: nn.Module) -> nn.Module:
    """A copy of `encoder` in eval mode with its BatchNorm folded (the inference form of both engines)."""
    enc = copy.deepcopy(encoder).eval()
    fold_batchnorm(enc)
    return enc


def export_encoder(encoder: nn.Module, *, reference: nn.Module | None = None) -> bytes:
    """The ONNX graph (bytes) of `encoder` BatchNorm-folded with its pooling: input `frames`
    (batch, 3, S, S) float32 -> output `features` (batch, D) float32, S = `encoder.input_size`.

    Exported once per (`encoder.cache_id()`, S, opset) and process; `reference` is the folded copy to
    export when the caller has one."""
    key = (encoder.cache_id(), int(encoder.input_size), OPSET) if hasattr(encoder, "cache_id") else None
    with _exports_lock:
        if key is not None and key in _exports:
            _exports.move_to_end(key)
            return _exports[key]
    folded = copy.deepcopy(reference).cpu() if reference is not None else folded_copy(encoder).cpu()
    s = int(folded.input_size)
    fix_same_padding(folded, s)
    module = GraphEncoder(folded)
    example = torch.randn(TRACE_BATCH, 3, s, s, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")         # tracer and deprecation warnings: the graph is checked
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=OPSET,
                          input_names=["frames"], output_names=["features"],
                          dynamic_axes={"frames": {0: "batch"}, "features": {0: "batch"}},
                          do_constant_folding=True)
    graph = buf.getvalue()
    if key is not None:
        with _exports_lock:
            _exports[key] = graph
            while len(_exports) > EXPORT_CACHE_SIZE:
                _exports.popitem(last=False)
    return graph


def fix_same_padding(encoder: nn.Module, size: int) -> int:
    """Replace, in place, each strided TF-"SAME" convolution (`lite0.SameConv2d`) of `encoder` by the plain
    Conv2d it equals at input side `size`; return how many were replaced.

    SameConv2d pads from the input's shape at run time: traced, that is a Pad of computed amounts
    between two convolutions, where ONNX Runtime leaves its blocked (NCHWc) layout and comes back (one
    reorder each way). At a known size the amounts are constants, and an asymmetric one (one row more
    at the bottom) is the same as a symmetric padding one larger with a kernel one larger whose first
    row is zero: the same products in the same order, plus exact zeros. Encoding is 1.4x faster in
    ONNX Runtime for Lite0; eager PyTorch keeps SameConv2d."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(lambda _, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
             for name, m in encoder.named_modules() if isinstance(m, lite0.SameConv2d) and m.stride != (1, 1)]
    try:
        with torch.no_grad():
            encoder.forward_map(torch.zeros(1, 3, size, size))                 # (1, C, h, w)
    finally:
        for hook in hooks:
            hook.remove()
    for name, (ih, iw) in sizes.items():
        parent, _, child = name.rpartition(".")
        setattr(encoder.get_submodule(parent), child, _padded_conv(encoder.get_submodule(name), ih, iw))
    return len(sizes)


def _padded_conv(conv: nn.Conv2d, ih: int, iw: int) -> nn.Conv2d:
    """The Conv2d (symmetric padding) equal to the SameConv2d `conv` on (ih, iw) inputs."""
    kernel, padding, offset = [], [], []
    for size, k, s in ((ih, conv.kernel_size[0], conv.stride[0]), (iw, conv.kernel_size[1], conv.stride[1])):
        total = max((-(-size // s) - 1) * s + k - size, 0)      # TF: total // 2 before, the rest after
        odd = total % 2
        kernel.append(k + odd)
        padding.append(total // 2 + odd)
        offset.append(odd)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, tuple(kernel), stride=conv.stride, padding=tuple(padding),
                    groups=conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        out.weight.zero_()
        out.weight[:, :, offset[0]:, offset[1]:] = conv.weight                # (cout, cin/groups, kh, kw)
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out.eval()


class GraphEncoder(nn.Module):
    """`FrameEncoder.forward` with its adaptive average pooling as two constant matrix products (the
    same windows and weights), which the exporter takes for any grid: (n, 3, S, S) -> (n, C*gh*gw)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder.eval()
        self.input_size = int(encoder.input_size)
        s = self.input_size
        with torch.no_grad():
            h, w = encoder.forward_map(torch.zeros(1, 3, s, s)).shape[-2:]   # (1, C, h, w)
        grid = encoder.pool.output_size
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        self.register_buffer("rows", pool_matrix(h, gh))                    # (gh, h)
        self.register_buffer("cols", pool_matrix(w, gw))                    # (gw, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.rows @ self.encoder.forward_map(x) @ self.cols.T).flatten(1)   # (n, C*gh*gw)


def _label(encoder: nn.Module) -> str:
    return f"{getattr(encoder, 'name', type(encoder).__name__)}@{getattr(encoder, 'input_size', '?')}"
