"""Training throughput: the real data pipeline vs the same model on random tensors, plus encoder speed.

    .venv/bin/python benchmarks/train.py [--videos-per-class 16] [--epochs 3] [--json]

1. Finetune (small_cnn + lstm, end to end): clips/s when batches come from the frame cache through
   `ClipBatches` (npz reads, normalisation, prefetch threads) vs random tensors of the same shape fed
   to the same model. Target: real >= 0.85 x random (the input pipeline is not the bottleneck).
2. Frozen (lstm head on cached features): the same comparison with `FeatureBatches`.
3. Encoder frames/s at batch 32, inference mode: small_cnn (64x64), efficientnet_lite0 (224x224 and 112x112).

Rounds alternate real/random so that load from other processes hits both alike; the best round counts.
It prints the figures (`--json`: one JSON object); they are recorded in docs/benchmarks/train.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from videoseq.data.batches import ClipBatches, FeatureBatches  # noqa: E402
from videoseq.data.cache import FrameCache, extract_dataset  # noqa: E402
from videoseq.config import load_config  # noqa: E402
from videoseq.data.dataset import scan_dataset  # noqa: E402
from videoseq.models.encoders import build_encoder  # noqa: E402
from videoseq.data.features import FeatureStore  # noqa: E402
from videoseq.models.heads import build_head  # noqa: E402
from videoseq.models.classifier import build_model, feature_dims  # noqa: E402
from videoseq.models.streams import build_motion  # noqa: E402
from videoseq.synthetic.generate import generate_dataset  # noqa: E402
from videoseq.learn.train import make_optimizer, train_one_epoch, warmup_cosine  # noqa: E402


class RandomBatches:
    """Random tensors shaped exactly like another iterator's batches (made before timing starts)."""

    def __init__(self, like):
        self.batches = [(torch.randn_like(x), m.clone(), y.clone()) for x, m, y in like]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def clips_per_second(model, batches, *, epochs: int) -> float:
    opt = make_optimizer(model, load_config().train)
    sched = warmup_cosine(opt, total_steps=10_000, warmup_steps=1)
    clips, seconds = 0, 0.0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        row = train_one_epoch(model, batches, opt, sched, device=torch.device("cpu"), epoch=epoch)
        seconds += time.perf_counter() - t0
        clips += row["clips"]
    return clips / seconds


def compare_pipelines(make_model, real, *, epochs: int, rounds: int) -> dict:
    rand = RandomBatches(real)
    best = {"real": 0.0, "random": 0.0}
    for _ in range(rounds):
        for name, batches in (("real", real), ("random", rand)):
            torch.manual_seed(0)
            best[name] = max(best[name], clips_per_second(make_model(), batches, epochs=epochs))
    return {"real_clips_per_s": round(best["real"], 1), "random_clips_per_s": round(best["random"], 1),
            "ratio": round(best["real"] / best["random"], 3)}


def encoder_fps(name: str, *, input_size: int | None = None, seconds: float = 5.0) -> float:
    enc = build_encoder(name, weights=None if name == "small_cnn" else "DEFAULT", pooling="grid2",
                        input_size=input_size).freeze()
    x = torch.randn(32, 3, enc.input_size, enc.input_size)        # (32, 3, S, S)
    with torch.inference_mode():
        enc(x)
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            enc(x)
            n += 32
    return round(n / (time.perf_counter() - t0), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos-per-class", type=int, default=40)
    p.add_argument("--epochs", type=int, default=2, help="epochs per timed round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    cfg = load_config("configs/synthetic.yaml", overrides=["runtime.progress=false"])
    out = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(Path(tmp) / "direction", task="direction", progress=False,
                                videos_per_class=args.videos_per_class)
        index = scan_dataset(root, cfg.data)
        cache = FrameCache(Path(tmp) / "cache" / "frames")
        size = cfg.sampling.size
        extract_dataset(index, cache, cfg.sampling, size=size, views=1, progress=False)
        train = index.ok("train")
        labels = [index.classes.index(e.label) for e in train]
        enc = build_encoder("small_cnn", pooling=cfg.model.pooling)
        real = ClipBatches([e.path for e in train], labels, cache, cfg.sampling, size=size,
                           input_size=enc.input_size, mean=enc.mean, std=enc.std,
                           batch_size=cfg.train.batch_size, shuffle=True, workers=2)
        out["finetune"] = compare_pipelines(lambda: build_model(cfg.model, "lstm", len(index.classes)), real,
                                            epochs=args.epochs, rounds=args.rounds)
        out["finetune"]["clips"] = len(train)

        motion = build_motion(cfg.model.motion)          # as compare caches it, with the features
        store = FeatureStore(Path(tmp) / "cache" / "features", enc.freeze(), motion=motion)
        split = store.load_split(train, cache, cfg.sampling, size=size, views=1, classes=index.classes)
        feats = FeatureBatches(split, batch_size=cfg.train.batch_size, shuffle=True)
        torch.set_num_threads(1)       # as compare trains heads on features
        out["frozen"] = compare_pipelines(
            lambda: build_head("lstm", feature_dims(enc, motion)[0], len(index.classes), hidden=cfg.model.hidden,
                               motion_dim=feature_dims(enc, motion)[1]),
            feats, epochs=args.epochs * 5, rounds=args.rounds)
        torch.set_num_threads(out["torch_threads"])
    out["encoder_frames_per_s"] = {"small_cnn@64": encoder_fps("small_cnn"),
                                   "efficientnet_lite0@224": encoder_fps("efficientnet_lite0"),
                                   # the demo's size (configs/demo.yaml)
                                   "efficientnet_lite0@112": encoder_fps("efficientnet_lite0", input_size=112)}
    out["load_average"] = round(os.getloadavg()[0], 1)   # the machine may be shared: say how busy it was
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for mode in ("finetune", "frozen"):
        r = out[mode]
        print(f"{mode:9s} real {r['real_clips_per_s']:8.1f} clips/s   random {r['random_clips_per_s']:8.1f} clips/s"
              f"   ratio {r['ratio']:.3f}  (target >= 0.85)")
    for name, fps in out["encoder_frames_per_s"].items():
        print(f"encoder {name:24s} {fps:8.1f} frames/s (batch 32)")
    print(f"load average at the end: {out['load_average']}")


if __name__ == "__main__":
    main()
