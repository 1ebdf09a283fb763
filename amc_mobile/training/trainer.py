"""Supervised training with per-epoch checkpoints and exact resume.

SGD (Nesterov momentum) or AdamW, linear warm-up then cosine decay computed per step (so the schedule
state is one integer), optional label smoothing, random-crop + flip augmentation, ``channels_last``.
Every epoch writes ``last.pt`` (model + optimizer + RNG state, all plain tensors/dicts so it loads with
``weights_only=True``) and ``metrics.json``; ``resume=True`` continues after the last finished epoch.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from amc_mobile.data import Dataset, TensorLoader
from amc_mobile.errors import UserError, unknown_name
from amc_mobile.models.arch import get_arch
from amc_mobile.models.checkpoint import arch_of, load_checkpoint, read_checkpoint, save_checkpoint
from amc_mobile.options import opt
from amc_mobile.progress import progress_bar
from amc_mobile.storage import atomic_write_json
from amc_mobile.training.evaluate import evaluate
from amc_mobile.training.rundir import check_positive_int, check_range, check_resume, open_run_dir

METRICS_SCHEMA = 1


@dataclass
class TrainConfig:
    """Hyperparameters of one training run: the single source of their defaults, checks and CLI help."""

    epochs: int = opt(8, "Passes over the training split.")
    batch_size: int = opt(128, "Images per step.")
    lr: float = opt(0.1, "Peak learning rate (linear warm-up, then cosine decay to 0, per step).")
    optimizer: str = opt("sgd", "sgd (Nesterov momentum 0.9) or adamw.")
    weight_decay: float = opt(5e-4, "Weight decay of conv/linear weights (not BatchNorm, not biases).")
    warmup_epochs: float = opt(0.5, "Length of the linear learning-rate warm-up, in epochs.")
    label_smoothing: float = opt(0.0, "Cross-entropy label smoothing.")
    augment: bool = opt(True, "Random crop (2 px padding up to 32 px images, else 4) + horizontal flip.")
    seed: int = opt(0, "Seed of model init, batch order and augmentation.")
    channels_last: bool = opt(True, "channels_last tensors (~1.7x faster convolutions on CPU).", cli=False)
    eval_batch_size: int = opt(250, "Images per evaluation batch (fastest for 28 px MobileNets on CPU).",
                               cli=False)
    init_from: str | None = opt(None, "Start from this checkpoint's weights (file or zoo:NAME; same "
                                      "architecture), then train with the given schedule.")

    def __post_init__(self) -> None:
        check_positive_int(self, "epochs", "batch_size", "eval_batch_size")
        check_range(self, "lr", low=0.0, low_open=True)
        check_range(self, "weight_decay", low=0.0)
        check_range(self, "warmup_epochs", low=0.0)
        check_range(self, "label_smoothing", low=0.0, high=1.0, high_open=True)
        if self.optimizer not in ("sgd", "adamw"):
            raise unknown_name("optimizer", self.optimizer, ("sgd", "adamw"))


_ARCH_FIELDS = ("name", "num_classes", "in_chans", "width_mult")


def init_weights_from(model: nn.Module, spec: str) -> None:
    """Copy the weights of checkpoint ``spec`` into ``model``; the architecture must be the same.

    Compares the recorded architecture (model name, classes, input channels, width) and every
    parameter/buffer shape, so a pruned checkpoint or a different width is one clear line.
    """
    source, _ = load_checkpoint(spec)
    theirs, ours = get_arch(source), get_arch(model)
    diffs = [f"{k} {getattr(theirs, k)} != {getattr(ours, k)}" for k in _ARCH_FIELDS
             if theirs is not None and ours is not None and getattr(theirs, k) != getattr(ours, k)]
    src_sd, dst_sd = source.state_dict(), model.state_dict()
    if not diffs:
        missing = sorted(set(dst_sd) ^ set(src_sd))
        if missing:
            diffs.append(f"layers differ ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        else:
            shapes = [k for k in dst_sd if tuple(dst_sd[k].shape) != tuple(src_sd[k].shape)]
            if shapes:
                diffs.append(f"{len(shapes)} tensor shape(s) differ, e.g. {shapes[0]} "
                             f"{list(src_sd[shapes[0]].shape)} != {list(dst_sd[shapes[0]].shape)} (pruned?)")
    if diffs:
        raise UserError(f"--init-from {spec} has a different architecture than the model to train "
                        f"(checkpoint vs model: {'; '.join(diffs)})")
    model.load_state_dict(src_sd)


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise UserError(f"unknown optimizer '{cfg.optimizer}'; valid optimizers: adamw, sgd")


def train_model(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset | None,
    out_dir: str | Path,
    cfg: TrainConfig,
    test_data: Dataset | None = None,
    resume: bool = False,
    command: str | None = None,
    progress: bool = True,
    log: Any = print,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place; returns the metrics dict (also written to ``out_dir/metrics.json``).

    ``out_dir/last.pt`` is the checkpoint after the latest finished epoch (with resume state),
    ``out_dir/final.pt`` the finished model without optimizer state. ``stop_after=k`` returns right
    after epoch ``k`` is saved, as if the process had been killed there (for resume tests).
    """
    out, lock = open_run_dir(out_dir, resume, "training")
    try:
        return _train(model, train_data, val_data, out, cfg, test_data, resume, command, progress, log, stop_after)
    finally:
        lock.release()


def _run_identity(model: nn.Module, data: Dataset) -> dict[str, dict[str, Any]]:
    """What a resumed run must share with the one it continues (besides the config)."""
    return {"model": arch_of(model), "data": {**data.data_info(), "split": data.split, "train_images": len(data)}}


def _train(model: nn.Module, train_data: Dataset, val_data: Dataset | None, out: Path, cfg: TrainConfig,
           test_data: Dataset | None, resume: bool, command: str | None, progress: bool, log: Any,
           stop_after: int | None) -> dict[str, Any]:
    last = out / "last.pt"
    metrics_path = out / "metrics.json"
    identity = _run_identity(model, train_data)
    torch.manual_seed(cfg.seed)
    pad = 2 if train_data.input_size <= 32 else 4
    train_loader = TensorLoader(train_data, cfg.batch_size, shuffle=True, augment=cfg.augment, pad=pad,
                                seed=cfg.seed, drop_last=len(train_data) > cfg.batch_size,
                                channels_last=cfg.channels_last)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    wall_s = 0.0
    if resume and last.exists():
        payload = read_checkpoint(last)
        state = payload.get("train_state")
        if not isinstance(state, dict):
            raise UserError(f"{last} holds no training state; cannot resume (start without --resume)")
        saved_cfg = state.get("config")
        if not isinstance(saved_cfg, dict):
            raise UserError(f"{last} holds no training settings; cannot resume (use another --out)")
        if cfg.init_from is None and saved_cfg.get("init_from"):
            cfg = replace(cfg, init_from=saved_cfg["init_from"])  # resume keeps the run's starting point
        check_resume(last, {"model": payload["arch"], "data": state.get("data") or {}, "config": saved_cfg},
                     {**identity, "config": asdict(cfg)}, ignore=("epochs", "eval_batch_size"))
        try:
            sd = {k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
            model.load_state_dict(sd)
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            history = list(state["history"])
            start_epoch = int(state["epoch"])
            wall_s = float(state["wall_s"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise UserError(f"{last} has a damaged training state ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); use another --out") from exc
        log(f"resuming from {last}: {start_epoch} epoch(s) done")
        if state["config"]["epochs"] != cfg.epochs:
            log(f"note: the run was started with {state['config']['epochs']} epochs, now {cfg.epochs}; "
                "the learning-rate schedule changes accordingly")
    else:
        if resume:
            log(f"nothing to resume in {out}; starting from scratch")
        if cfg.init_from:
            init_weights_from(model, cfg.init_from)
            log(f"initialised the weights from {cfg.init_from}")
    eval_kw = {"channels_last": cfg.channels_last}
    val_loader = (TensorLoader(val_data, cfg.eval_batch_size, **eval_kw) if val_data is not None else None)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        train_loader.set_epoch(epoch)
        loss_sum, correct, seen = 0.0, 0, 0
        lr = cfg.lr
        with progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", unit="step", enabled=progress) as bar:
            for i, (x, y) in enumerate(train_loader):
                step = epoch * steps_per_epoch + i
                lr = lr_at(step, total_steps, warmup_steps, cfg.lr)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                logits = model(x)
                loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * y.numel()
                correct += int((logits.argmax(1) == y).sum())
                seen += y.numel()
                bar.update(1)
                if i % 20 == 0:
                    bar.set_status(f"loss {loss_sum / seen:.3f} top-1 {100 * correct / seen:.1f}% lr {lr:.4f}")
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen),
                               "train_top1": 100.0 * correct / max(1, seen), "lr_end": lr}
        if val_loader is not None:
            v = evaluate(model, val_loader)
            row.update(val_loss=v["loss"], val_top1=v["top1"], val_top5=v["top5"])
        epoch_s = time.perf_counter() - t0
        wall_s += epoch_s
        row["epoch_s"] = round(epoch_s, 1)
        history.append(row)
        log("epoch {epoch}/{total}: train loss {tl:.4f} top-1 {ta:.2f}%{val} ({s:.0f} s)".format(
            epoch=epoch + 1, total=cfg.epochs, tl=row["train_loss"], ta=row["train_top1"], s=epoch_s,
            val=f", val top-1 {row['val_top1']:.2f}% top-5 {row['val_top5']:.2f}%" if val_loader else ""))
        train_state = {"epoch": epoch + 1, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                       "history": history, "wall_s": wall_s, "config": asdict(cfg),
                       "data": identity["data"]}
        save_checkpoint(last, model, data=train_data.data_info(), train_state=train_state)
        metrics = _write_metrics(metrics_path, cfg, history, wall_s, command, train_data, None, done=False)
        if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < cfg.epochs:
            return metrics
    test_metrics = None
    if test_data is not None:
        t = evaluate(model, TensorLoader(test_data, cfg.eval_batch_size, **eval_kw))
        test_metrics = {"top1": t["top1"], "top5": t["top5"], "loss": t["loss"], "n": t["n"]}
        log(f"test top-1 {t['top1']:.2f}% top-5 {t['top5']:.2f}% on {t['n']} images")
    metrics = _write_metrics(metrics_path, cfg, history, wall_s, command, train_data, test_metrics, done=True)
    save_checkpoint(out / "final.pt", model.to(memory_format=torch.contiguous_format),  # type: ignore[call-overload]
                    data=train_data.data_info(), metrics=_plain(metrics))
    return metrics


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without None values (safe inside a weights_only checkpoint)."""
    return json.loads(json.dumps(metrics, default=str), object_hook=lambda d: {k: v for k, v in d.items()
                                                                             if v is not None})


def _write_metrics(path: Path, cfg: TrainConfig, history: list[dict[str, Any]], wall_s: float,
                   command: str | None, data: Dataset, test: dict[str, Any] | None, done: bool) -> dict[str, Any]:
    metrics = {
        "schema_version": METRICS_SCHEMA,
        "done": done,
        "command": command,
        "seed": cfg.seed,
        "config": asdict(cfg),
        "data": {**data.data_info(), "split": data.split, "train_images": len(data)},
        "epochs_done": len(history),
        "history": history,
        "final_val_top1": history[-1].get("val_top1") if history else None,
        "final_val_top5": history[-1].get("val_top5") if history else None,
        "test": test,
        "train_wall_s": round(wall_s, 1),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''} "
                   f"torch {torch.__version__} threads {torch.get_num_threads()}".strip(),
    }
    atomic_write_json(path, metrics)
    return metrics
