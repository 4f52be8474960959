"""train.py: the loop learns, is deterministic per seed, resumes after a kill, stops early, and the
frozen-feature cache encodes every sampled frame exactly once across heads and seeds."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from videoseq.data.batches import FeatureBatches
from videoseq.config import TrainConfig
from videoseq.data.features import SplitFeatures
from videoseq.models.heads import build_head
from videoseq.learn.train import evaluate, fit, warmup_cosine


def order_task(n: int, *, seed: int, t: int = 6, d: int = 8) -> SplitFeatures:
    """Features whose class is the ORDER of two marker vectors: a per-frame model is at chance (50%),
    a recurrent one can be perfect. (N, V=2, T, D) float16 with 2 views per video."""
    g = np.random.default_rng(seed)
    feats = g.normal(0, 0.3, size=(n, 2, t, d)).astype(np.float16)
    labels = np.arange(n) % 2
    for i in range(n):
        for v in range(2):
            first, second = sorted(g.choice(t, 2, replace=False))
            a, b = (0, 1) if labels[i] == 0 else (1, 0)
            feats[i, v, first, a] += 2.0
            feats[i, v, second, b] += 2.0
    return SplitFeatures(torch.from_numpy(feats), torch.ones(n, 2, t, dtype=torch.bool),
                         torch.from_numpy(labels).long(), [f"v{i}" for i in range(n)])


def strip(history: list[dict]) -> list[dict]:
    """Epoch rows without their wall-clock seconds (the only field allowed to differ)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


CFG = TrainConfig(epochs=12, batch_size=16, lr=3e-3, weight_decay=1e-2, patience=50, seed=0)


def _fit(head: str, cfg: TrainConfig, *, seed: int = 0, checkpoint=None, on_epoch=None):
    torch.manual_seed(seed)
    train, val = order_task(96, seed=1), order_task(48, seed=2)
    model = build_head(head, 8, 2, hidden=32, dropout=0.1)
    tb = FeatureBatches(train, batch_size=cfg.batch_size, shuffle=True, random_view=True, seed=seed)
    vb = FeatureBatches(val, batch_size=64)
    result = fit(model, tb, vb, cfg, device=torch.device("cpu"), checkpoint=checkpoint,
                 fingerprint=f"{head}-{seed}", on_epoch=on_epoch)
    return model, result


def test_lstm_learns_order_while_per_frame_cannot():
    _, lstm = _fit("lstm", CFG)
    _, pf = _fit("per_frame", CFG)
    assert lstm.best_val_accuracy >= 0.9, lstm.history[-1]
    assert pf.best_val_accuracy <= 0.75, pf.history[-1]
    assert lstm.history[-1]["train_loss"] < lstm.history[0]["train_loss"]


def test_same_seed_same_metrics_and_other_seed_differs():
    cfg = replace(CFG, epochs=4)
    _, a = _fit("gru", cfg)
    _, b = _fit("gru", cfg)
    _, c = _fit("gru", cfg, seed=1)
    assert strip(a.history) == strip(b.history)
    assert strip(a.history) != strip(c.history)
    for k in a.best_state:
        assert torch.equal(a.best_state[k], b.best_state[k])


class Killed(Exception):
    pass


def _killed_run(cfg, ckpt, *, after: int):
    """(the uninterrupted run's result, the checkpoint of a run killed after epoch `after`)."""
    _, full = _fit("lstm", cfg)

    def kill(row):
        if row["epoch"] == after:
            raise Killed()

    with pytest.raises(Killed):
        _fit("lstm", cfg, checkpoint=ckpt, on_epoch=kill)
    return full, ckpt


def test_resume_after_kill_gives_the_same_result(tmp_path):
    cfg = replace(CFG, epochs=6)
    full, ckpt = _killed_run(cfg, tmp_path / "ckpt.pt", after=3)
    assert ckpt.is_file()
    seen = []
    _, resumed = _fit("lstm", cfg, checkpoint=ckpt, on_epoch=lambda r: seen.append(r["epoch"]))
    assert resumed.resumed_from == 3 and seen == [4, 5, 6]
    assert strip(resumed.history) == strip(full.history)
    for k in full.best_state:
        assert torch.equal(full.best_state[k], resumed.best_state[k])
    # a finished checkpoint: a rerun trains nothing; another run's checkpoint is ignored
    again = []
    _fit("lstm", cfg, checkpoint=ckpt, on_epoch=lambda r: again.append(r))
    assert again == []
    other = []
    _fit("lstm", cfg, seed=1, checkpoint=ckpt, on_epoch=lambda r: other.append(r["epoch"]))
    assert other == [1, 2, 3, 4, 5, 6]


def _torn(ckpt) -> None:
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])           # a checkpoint cut short (torn write, bad disk)


def _not_a_dict(ckpt) -> None:
    torch.save([1, 2, 3], ckpt)


def _wrong_optimizer(ckpt) -> None:
    saved = torch.load(ckpt, weights_only=True)         # this run's: the model loads, the optimizer not
    saved["optimizer"] = {"state": {}, "param_groups": []}
    torch.save(saved, ckpt)


def _bad_loop_state(ckpt) -> None:
    saved = torch.load(ckpt, weights_only=True)
    saved["state"] = {"epoch": 3}
    torch.save(saved, ckpt)


@pytest.mark.parametrize("damage", [_torn, _not_a_dict, _wrong_optimizer, _bad_loop_state],
                         ids=["truncated", "not-a-dict", "wrong-optimizer", "bad-loop-state"])
def test_an_unusable_checkpoint_is_ignored_and_the_run_starts_over(tmp_path, caplog, damage):
    cfg = replace(CFG, epochs=4)
    full, ckpt = _killed_run(cfg, tmp_path / "ckpt.pt", after=2)
    damage(ckpt)
    seen = []
    with caplog.at_level("WARNING", logger="videoseq.learn.train"):
        _, again = _fit("lstm", cfg, checkpoint=ckpt, on_epoch=lambda r: seen.append(r["epoch"]))
    assert "training from scratch" in caplog.text
    assert again.resumed_from == 0 and seen == [1, 2, 3, 4]
    assert strip(again.history) == strip(full.history)             # exactly a fresh run
    for k in full.best_state:
        assert torch.equal(full.best_state[k], again.best_state[k])
    assert torch.load(ckpt, weights_only=True)["state"]["epoch"] == 4   # replaced by a good one


def test_early_stopping_keeps_the_best_epoch():
    cfg = replace(CFG, epochs=40, patience=2, lr=3e-2)
    model, result = _fit("per_frame", cfg)          # at chance: validation stops improving fast
    assert len(result.history) < 40
    assert len(result.history) - result.best_epoch == 2
    best = max(result.history, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert best["epoch"] == result.best_epoch
    model.load_state_dict(result.best_state)
    val = evaluate(model, FeatureBatches(order_task(48, seed=2), batch_size=64), device=torch.device("cpu"))
    assert val.accuracy == pytest.approx(result.best_val_accuracy)


def test_warmup_then_cosine():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
