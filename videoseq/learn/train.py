"""Training loop: `train_one_epoch`, `evaluate`, `fit` (torchvision references style).

A model is either a bare temporal head trained on cached features (mode "frozen") or a
`VideoClassifier` trained end to end on cached frames (mode "finetune"). Both read batches of
`(x, mask, y)` from `batches.py`:

    frozen:   x (B, T, D) features         finetune: x (B, T, 3, S, S) frames
    mask (B, T) bool, y (B,) int64

`fit` runs AdamW with a cosine schedule after a linear warm-up, stops early on validation accuracy
(ties broken by validation loss), keeps the best weights, and writes a checkpoint after every epoch
(atomically) so a killed run resumes where it stopped and ends with the same result. When training
ends the checkpoint is compacted to the finished run (fingerprint, best weights, loop state): `fit`
called again with it returns that result without an epoch (`FitResult.reused`), which is how a
compare reuses finished runs (learn/reuse.py). A checkpoint that cannot be used (torn, corrupt,
another run's) is ignored with a warning: that run starts over.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from videoseq.io.atomic import atomic_torch_save
from videoseq.config import TrainConfig

log = logging.getLogger(__name__)


class EvalResult(NamedTuple):
    """One evaluation pass over a split: mean loss and accuracy, and per video its label, logits, mask
    and (when asked) log-probs after each step."""

    loss: float
    accuracy: float
    labels: np.ndarray          # (N,) int64
    logits: np.ndarray          # (N, C) float32
    steps: np.ndarray | None    # (N, T, C) log-probs after each step (head.forward_steps), if asked
    mask: np.ndarray            # (N, T) bool


class FitResult(NamedTuple):
    """What `fit` returns: the per-epoch history and the best epoch with its validation scores and weights."""

    history: list[dict]         # one row per epoch: epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr, seconds
    best_epoch: int             # 1-based
    best_val_accuracy: float
    best_val_loss: float
    best_state: dict            # the model's state_dict at best_epoch
    seconds: float              # training time summed over every (resumed) attempt
    resumed_from: int           # epochs already done when this call started (0 = fresh)
    reused: bool = False        # the run was already finished: no epoch ran in this call


def split_model(model: nn.Module) -> tuple[nn.Module | None, nn.Module]:
    """(encoder or None, head): a VideoClassifier has both, a bare head trains on features."""
    if hasattr(model, "head") and hasattr(model, "forward_features"):
        return model.encoder, model.head
    return None, model


def _features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, nn.Module]:
    encoder, head = split_model(model)
    if encoder is None:
        return x, head                                  # (B, T, D) already
    return model.forward_features(x), head              # (B, T, 3, S, S) -> (B, T, D)


def train_one_epoch(model: nn.Module, batches, optimizer: torch.optim.Optimizer, scheduler, *,
                    device: torch.device, epoch: int, progress: bool = False) -> dict:
    """One pass over `batches`; returns {train_loss, train_accuracy, clips, seconds}."""
    from tqdm.auto import tqdm

    model.train()
    encoder, _ = split_model(model)
    t0, total_loss, correct, seen = time.perf_counter(), 0.0, 0, 0
    bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False,
               disable=not progress or encoder is None)
    for x, mask, y in bar:
        x, mask, y = x.to(device), mask.to(device), y.to(device)
        feats, head = _features(model, x)               # (B, T, D)
        logits = head(feats, mask)                      # (B, C)
        loss = head.loss(feats, mask, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return {"train_loss": total_loss / max(1, seen), "train_accuracy": correct / max(1, seen),
            "clips": seen, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def evaluate(model: nn.Module, batches, *, device: torch.device, steps: bool = False) -> EvalResult:
    """Loss and accuracy over `batches` (eval mode); per-step log-probs too when `steps`."""
    model.eval()
    losses, labels, logits_all, steps_all, masks = [], [], [], [], []
    for x, mask, y in batches:
        x, mask, y = x.to(device), mask.to(device), y.to(device)
        feats, head = _features(model, x)               # (B, T, D)
        logits = head(feats, mask)                      # (B, C)
        losses.append(float(nn.functional.cross_entropy(logits, y, reduction="sum")))
        labels.append(y.cpu().numpy())
        logits_all.append(logits.float().cpu().numpy())
        masks.append(mask.cpu().numpy())
        if steps:
            steps_all.append(head.forward_steps(feats, mask).float().cpu().numpy())   # (B, T, C)
    y_all = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    lg = np.concatenate(logits_all) if logits_all else np.zeros((0, 0), np.float32)
    n = max(1, len(y_all))
    return EvalResult(loss=sum(losses) / n, accuracy=float((lg.argmax(1) == y_all).mean()) if len(y_all) else 0.0,
                      labels=y_all, logits=lg, steps=np.concatenate(steps_all) if steps else None,
                      mask=np.concatenate(masks) if masks else np.zeros((0, 0), bool))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; in a VideoClassifier the encoder learns at `lr * finetune_lr_scale`."""
    encoder, head = split_model(model)
    groups = [{"params": [p for p in head.parameters() if p.requires_grad], "lr": cfg.lr}]
    if encoder is not None:
        groups.append({"params": [p for p in encoder.parameters() if p.requires_grad],
                       "lr": cfg.lr * cfg.finetune_lr_scale})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int):
    """Linear warm-up to each group's lr, then cosine decay to zero at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(model: nn.Module, train_batches, val_batches, cfg: TrainConfig, *, device: torch.device,
        checkpoint: str | Path | None = None, fingerprint: str = "", progress: bool = False,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train until `cfg.epochs` or early stopping; resume from `checkpoint` if it holds this run.

    `train_batches` must have `generator` (a torch.Generator, its state is checkpointed) and
    `__len__`. `fingerprint` names the run (config, head, seed, data); a checkpoint written by a
    different run, or one that is torn or corrupt, is ignored (a warning) and training starts from
    scratch. `on_epoch(row)` is called after each epoch's checkpoint is on disk; a checkpoint that
    cannot be written (full disk) is an OutputError.
    """
    from tqdm.auto import tqdm

    model.to(device)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = max(1, len(train_batches))
    total = steps_per_epoch * cfg.epochs
    scheduler = warmup_cosine(optimizer, total_steps=total, warmup_steps=min(steps_per_epoch, max(1, total // 5)))
    state = {"epoch": 0, "history": [], "best_epoch": 0, "best_acc": -1.0, "best_loss": math.inf,
             "bad_epochs": 0, "seconds": 0.0, "finished": False}
    best_state = copy.deepcopy(model.state_dict())
    ckpt = Path(checkpoint) if checkpoint else None
    saved = _load_checkpoint(ckpt, fingerprint) if ckpt is not None and ckpt.is_file() else None
    finished = _finished(saved, state) if saved is not None else None
    if finished is not None:
        log.info("%s: finished run, reused (best epoch %d)", ckpt, finished[1]["best_epoch"])
        best_state, state = finished
        return FitResult(history=state["history"], best_epoch=state["best_epoch"],
                         best_val_accuracy=state["best_acc"], best_val_loss=state["best_loss"],
                         best_state=best_state, seconds=state["seconds"], resumed_from=state["epoch"],
                         reused=True)
    if saved is not None and "model" not in saved:
        saved = None                                 # a compact record of an unfinished run: start over
    if saved is not None:
        fresh = (train_batches.generator.get_state(), torch.get_rng_state())
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            train_batches.generator.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
            best_state, state = saved["best_state"], _checked_state(saved["state"], state)
            log.info("%s: resuming after epoch %d", ckpt, state["epoch"])
        except Exception as e:  # noqa: BLE001  loads, but does not fit this run: start over, as if absent
            log.warning("%s: unusable checkpoint (%s); training from scratch", ckpt, _first_line(e))
            model.load_state_dict(best_state)        # still the initial weights
            train_batches.generator.set_state(fresh[0])
            torch.set_rng_state(fresh[1])
            optimizer = make_optimizer(model, cfg)
            scheduler = warmup_cosine(optimizer, total_steps=total,
                                      warmup_steps=min(steps_per_epoch, max(1, total // 5)))
    resumed_from = state["epoch"]

    bar = tqdm(total=cfg.epochs, initial=state["epoch"], desc="train", unit="epoch", leave=False,
               disable=not progress)
    try:
        while not state["finished"] and state["epoch"] < cfg.epochs:
            epoch = state["epoch"] + 1
            row = train_one_epoch(model, train_batches, optimizer, scheduler, device=device,
                                  epoch=epoch, progress=progress)
            val = evaluate(model, val_batches, device=device)
            row = {"epoch": epoch, "train_loss": row["train_loss"], "train_accuracy": row["train_accuracy"],
                   "val_loss": val.loss, "val_accuracy": val.accuracy,
                   "lr": optimizer.param_groups[0]["lr"], "seconds": row["seconds"]}
            state["history"].append(row)
            state["seconds"] += row["seconds"]
            state["epoch"] = epoch
            if (val.accuracy, -val.loss) > (state["best_acc"], -state["best_loss"]):
                state.update(best_epoch=epoch, best_acc=val.accuracy, best_loss=val.loss, bad_epochs=0)
                best_state = copy.deepcopy(model.state_dict())
            else:
                state["bad_epochs"] += 1
            state["finished"] = state["bad_epochs"] >= cfg.patience or epoch >= cfg.epochs
            if ckpt is not None:
                atomic_torch_save(ckpt, {
                    "fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "generator": train_batches.generator.get_state(),
                    "torch_rng": torch.get_rng_state(), "best_state": best_state, "state": state})
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{val.accuracy:.3f}")
            if on_epoch is not None:
                on_epoch(row)
    finally:
        bar.close()
    if ckpt is not None and state["finished"]:      # keep only what a finished run is reused from
        atomic_torch_save(ckpt, {"fingerprint": fingerprint, "best_state": best_state, "state": state})
    return FitResult(history=state["history"], best_epoch=state["best_epoch"],
                     best_val_accuracy=state["best_acc"], best_val_loss=state["best_loss"],
                     best_state=best_state, seconds=state["seconds"], resumed_from=resumed_from)


def _load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The checkpoint at `path` if it is this run's; None (start over) when torn, corrupt or another's."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  torn or corrupt: start over
        log.warning("%s: unreadable checkpoint (%s); training from scratch", path, _first_line(e))
        return None
    if not isinstance(saved, dict):
        log.warning("%s: not a checkpoint; training from scratch", path)
        return None
    if saved.get("fingerprint") != fingerprint:
        log.info("%s: checkpoint of a different run; training from scratch", path)
        return None
    return saved


def _finished(saved: dict, template: dict) -> tuple[dict, dict] | None:
    """(best_state, loop state) of a checkpoint whose run had finished, else None."""
    try:
        state = _checked_state(saved.get("state"), template)
    except ValueError:
        return None
    best = saved.get("best_state")
    if not state["finished"] or not isinstance(best, dict) or not state["history"]:
        return None
    return best, state


def _checked_state(saved: object, template: dict) -> dict:
    """The loop state of a checkpoint, with the keys and types of `template` (else ValueError)."""
    if not isinstance(saved, dict) or set(saved) != set(template):
        raise ValueError("loop state has other keys")
    for key, value in template.items():
        if not isinstance(saved[key], type(value) if not isinstance(value, float) else (int, float)):
            raise ValueError(f"loop state: {key} is {type(saved[key]).__name__}")
    return saved


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
