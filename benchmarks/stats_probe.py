"""How much the temporal streams' whole-frame summaries tell per clip: a linear probe on their statistics.

    .venv/bin/python benchmarks/stats_probe.py [--data DIR] [--tasks real_cut,...] [--videos-per-class N]

For each task (the datasets `benchmarks/streams.py` generates under DATA/data), the cached features of
configs/default.yaml's streams are read, each stream's whole-frame summary is taken per step
(`streams.summary_matrix`: K numbers, 28 for the default streams, standardised over the training
steps), and per clip the statistics of steps 1..T that `model.stream_stats` gives a head at the last
step (`embed.running_stats`: mean, mean magnitude, maximum, minimum, unsteadiness: 5K numbers). An
L2-regularised logistic regression (weight 0.1, L-BFGS) is fitted on the training clips and scored on
val and test. No appearance feature and no per-cell stream is read: it shows what the clip-level
summary statistics alone can tell.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from streams import TASKS, task_size  # noqa: E402  (benchmarks/streams.py: the same datasets)

NEW_TASKS = "real_fade_partial,real_light,real_speed,real_cut,real_camspeed"


def clip_statistics(feats, appearance_dim: int, motion, mu=None, sd=None):
    """(N, T, D + M) features -> (N, 5K) statistics of the K summary numbers at the last step, and the
    (mu, sd) the summaries were standardised with (computed from these features when not given)."""
    import torch

    from videoseq.models.embed import running_stats

    x = torch.as_tensor(feats[..., appearance_dim:], dtype=torch.float32)     # (N, T, M)
    parts = [x[..., dims] @ m                                                 # (N, T, s_k)
             for (_, _, dims), m in zip(motion.parts(), motion.summary_matrices())]
    s = torch.cat(parts, dim=-1)                                              # (N, T, K)
    if mu is None:
        flat = s.reshape(-1, s.shape[-1])
        mu, sd = flat.mean(0), flat.std(0) + 1e-6
    return running_stats((s - mu) / sd)[:, -1], mu, sd                        # (N, 5K)


def fit_probe(x, y, l2: float = 0.1):
    """An L2-regularised logistic regression on standardised x (N, F), labels y (N,)."""
    import torch

    m, s = x.mean(0), x.std(0) + 1e-6
    lin = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=500)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin((x - m) / s), y) + l2 * (lin.weight ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return lambda z: lin((z - m) / s).argmax(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "videoseq-streams")
    ap.add_argument("--tasks", default=NEW_TASKS)
    ap.add_argument("--videos-per-class", type=int, default=None, metavar="N")
    args = ap.parse_args()
    os.chdir(ROOT)
    import numpy as np
    import torch

    from videoseq.config import load_config
    from videoseq.learn.prepare import prepare_data
    from videoseq.models.streams import build_motion

    torch.manual_seed(0)
    config = load_config("configs/default.yaml", overrides=["runtime.progress=false", "runtime.engine=torch"])
    motion = build_motion(config.model.motion)
    for task in [t for t in args.tasks.split(",") if t]:
        if task not in TASKS:
            raise SystemExit(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        vpc, seed = task_size(task, args.videos_per_class)
        root = args.data / "data" / f"{task}-{vpc}-s{seed}"
        if not root.is_dir():
            raise SystemExit(f"{root}: not generated yet (run benchmarks/streams.py first)")
        data = prepare_data(root, config, device=torch.device("cpu"), progress=False)
        d = data.train.feats.shape[-1] - motion.out_dim
        x, mu, sd = clip_statistics(np.asarray(data.train.feats[:, 0]), d, motion)
        predict = fit_probe(x, torch.as_tensor(data.train.labels))
        acc = {}
        for split in ("train", "val", "test"):
            part = getattr(data, split)
            z, _, _ = clip_statistics(np.asarray(part.feats[:, 0]), d, motion, mu, sd)
            acc[split] = 100 * float((predict(z) == torch.as_tensor(part.labels)).float().mean())
        print(f"{task:18s} {vpc} videos/class  probe accuracy: train {acc['train']:.1f}  val {acc['val']:.1f}  "
              f"test {acc['test']:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
