"""Fine-tune a pruned student with knowledge distillation from its teacher (DDC sec. 3.5).

Reuses the training module's pieces (seeded tensor loader with augmentation, warm-up + cosine
schedule, optimizer with weight decay on weights only, fast evaluation, checkpoints); only the
loss differs. Every epoch writes ``last.pt`` (student + optimizer + RNG + history, loadable with
``weights_only=True``); ``resume=True`` continues after the last finished epoch.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from amc_mobile.distill.loss import kd_loss
from amc_mobile.errors import UserError
from amc_mobile.models.arch import get_arch
from amc_mobile.models.checkpoint import arch_of, read_checkpoint, save_checkpoint
from amc_mobile.options import opt
from amc_mobile.progress import progress_bar
from amc_mobile.storage import atomic_write_json
from amc_mobile.training.rundir import check_positive_int, check_range, check_resume, open_run_dir

METRICS_SCHEMA = 1


@dataclass
class FinetuneConfig:
    """Hyperparameters of a KD fine-tune: the single source of their defaults, checks and CLI help."""

    epochs: int = opt(5, "Passes over the training split.", short="-e")
    batch_size: int = opt(128, "Images per step.")
    lr: float = opt(0.02, "Peak learning rate (SGD, Nesterov momentum 0.9; warm-up, then cosine decay).")
    weight_decay: float = opt(5e-4, "Weight decay of conv/linear weights only.")
    warmup_epochs: float = opt(0.2, "Length of the linear learning-rate warm-up, in epochs.")
    lam: float = opt(0.7, "Weight of the soft (teacher) loss, DDC eq. 12.", flag="--lambda")
    temperature: float = opt(4.0, "Softmax temperature of the soft loss.", short="-T")
    augment: bool = opt(True, "Random crop + horizontal flip.")
    seed: int = opt(0, "Seed of batch order, augmentation and the training subset.")
    channels_last: bool = opt(True, "channels_last tensors (faster convolutions on CPU).", cli=False)
    eval_batch_size: int = opt(1000, "Images per evaluation batch.", cli=False)
    max_train_images: int = opt(0, "Use a seeded subset of this many training images (0: all).")

    def __post_init__(self) -> None:
        check_positive_int(self, "epochs", "batch_size", "eval_batch_size")
        check_range(self, "lr", low=0.0, low_open=True)
        check_range(self, "weight_decay", low=0.0)
        check_range(self, "warmup_epochs", low=0.0)
        check_range(self, "max_train_images", low=0)
        if not (isinstance(self.lam, (int, float)) and 0.0 <= self.lam <= 1.0):
            raise UserError(f"--lambda must be in [0, 1], got {self.lam}")
        if not (isinstance(self.temperature, (int, float)) and 0 < self.temperature < float("inf")):
            raise UserError(f"--temperature must be positive, got {self.temperature}")


def finetune(student: nn.Module, teacher: nn.Module, train_data: Any, val_data: Any, out_dir: str | Path,
             cfg: FinetuneConfig, test_data: Any = None, resume: bool = False, progress: bool = True,
             log: Any = print, command: str | None = None) -> dict[str, Any]:
    """Distil ``teacher`` into ``student`` (in place); returns metrics (also ``out_dir/metrics.json``);
    ``out_dir/final.pt`` is the fine-tuned student. ``resume`` as in :func:`amc_mobile.training.train_model`:
    without it an existing run in ``out_dir`` is refused; with it the run continues if its model, data
    and settings match."""
    out, lock = open_run_dir(out_dir, resume, "fine-tuning")
    try:
        return _finetune(student, teacher, train_data, val_data, out, cfg, test_data, resume, progress, log, command)
    finally:
        lock.release()


def _finetune(student: nn.Module, teacher: nn.Module, train_data: Any, val_data: Any, out: Path,
              cfg: FinetuneConfig, test_data: Any, resume: bool, progress: bool, log: Any,
              command: str | None) -> dict[str, Any]:
    from amc_mobile.data import TensorLoader
    from amc_mobile.training import TrainConfig, evaluate, lr_at
    from amc_mobile.training.trainer import make_optimizer

    n_student, n_teacher = (spec.num_classes if spec else None for spec in (get_arch(student), get_arch(teacher)))
    if n_student is not None and n_teacher is not None and n_student != n_teacher:
        raise UserError(f"the student has {n_student} outputs and the teacher {n_teacher}; cut the teacher to the "
                        "student's classes first (amc_mobile.search.subset.restrict_classes, CLI --classes)")
    last = out / "last.pt"
    torch.manual_seed(cfg.seed)
    if cfg.max_train_images and cfg.max_train_images < len(train_data):
        train_data = train_data.subset(cfg.max_train_images, cfg.seed)
    identity = {"model": arch_of(student),
                "data": {**train_data.data_info(), "split": train_data.split, "train_images": len(train_data)}}
    pad = 2 if train_data.input_size <= 32 else 4
    loader = TensorLoader(train_data, cfg.batch_size, shuffle=True, augment=cfg.augment, pad=pad, seed=cfg.seed,
                          drop_last=len(train_data) > cfg.batch_size, channels_last=cfg.channels_last)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    student.to(memory_format=fmt)  # type: ignore[call-overload]
    teacher.to(memory_format=fmt).eval()  # type: ignore[call-overload]
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer="sgd",
                       weight_decay=cfg.weight_decay, seed=cfg.seed)
    optimizer = make_optimizer(student, tcfg)
    steps = len(loader)
    total, warm = steps * cfg.epochs, int(cfg.warmup_epochs * steps)
    history: list[dict[str, Any]] = []
    start, wall_s = 0, 0.0
    if resume and last.exists():
        payload = read_checkpoint(last)
        state = payload.get("finetune_state")
        if not isinstance(state, dict):
            raise UserError(f"{last} holds no fine-tuning state; start without --resume")
        saved_cfg = state.get("config")
        if not isinstance(saved_cfg, dict):
            raise UserError(f"{last} holds no fine-tuning settings; cannot resume (use another --out)")
        check_resume(last, {"model": payload["arch"], "data": state.get("data") or {}, "config": saved_cfg},
                     {**identity, "config": json.loads(json.dumps(asdict(cfg)))},
                     ignore=("epochs", "eval_batch_size"))
        try:
            student.load_state_dict({k: (v.float() if v.is_floating_point() else v)
                                     for k, v in payload["state_dict"].items()})
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            history, start, wall_s = list(state["history"]), int(state["epoch"]), float(state["wall_s"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise UserError(f"{last} has a damaged fine-tuning state ({type(exc).__name__}); "
                            "use another --out") from exc
        log(f"resuming from {last}: {start} epoch(s) done")
    val_loader = TensorLoader(val_data, cfg.eval_batch_size, channels_last=cfg.channels_last) if val_data else None
    if not history and val_loader is not None:
        v0 = evaluate(student, val_loader)
        log(f"before fine-tuning: val top-1 {v0['top1']:.2f}%")
        history.append({"epoch": 0, "val_top1": v0["top1"], "val_top5": v0["top5"], "val_loss": v0["loss"]})
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        student.train()
        loader.set_epoch(epoch)
        loss_sum, seen = 0.0, 0
        with progress_bar(steps, f"finetune {epoch + 1}/{cfg.epochs}", unit="step", enabled=progress) as bar:
            lr = cfg.lr
            for i, (x, y) in enumerate(loader):
                lr = lr_at(epoch * steps + i, total, warm, cfg.lr)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                with torch.no_grad():
                    t_logits = teacher(x)
                loss = kd_loss(student(x), t_logits, y, cfg.lam, cfg.temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * y.numel()
                seen += y.numel()
                bar.update(1)
                if i % 20 == 0:
                    bar.set_status(f"kd loss {loss_sum / seen:.4f} lr {lr:.4f}")
        row: dict[str, Any] = {"epoch": epoch + 1, "train_kd_loss": loss_sum / max(1, seen), "lr_end": lr}
        if val_loader is not None:
            v = evaluate(student, val_loader)
            row.update(val_top1=v["top1"], val_top5=v["top5"], val_loss=v["loss"])
        row["epoch_s"] = round(time.perf_counter() - t0, 1)
        wall_s += time.perf_counter() - t0
        history.append(row)
        state = {"epoch": epoch + 1, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                 "history": history, "wall_s": wall_s, "config": json.loads(json.dumps(asdict(cfg))),
                 "data": identity["data"]}
        save_checkpoint(last, student, data=train_data.data_info(), finetune_state=state)
        _write_metrics(out, cfg, history, None, wall_s, command, done=False)
        log(f"epoch {epoch + 1}/{cfg.epochs}: kd loss {row['train_kd_loss']:.4f}"
            + (f", val top-1 {row['val_top1']:.2f}%" if "val_top1" in row else "") + f" ({row['epoch_s']:.0f} s)")
    test = None
    if test_data is not None:
        t = evaluate(student, TensorLoader(test_data, cfg.eval_batch_size, channels_last=cfg.channels_last))
        test = {"top1": t["top1"], "top5": t["top5"], "n": t["n"]}
        log(f"test top-1 {t['top1']:.2f}% on {t['n']} images")
    metrics = _write_metrics(out, cfg, history, test, wall_s, command, done=True)
    student.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    save_checkpoint(out / "final.pt", student, data=train_data.data_info(),
                    metrics=json.loads(json.dumps({k: v for k, v in metrics.items() if v is not None})))
    return metrics


def _write_metrics(out: Path, cfg: FinetuneConfig, history: list[dict[str, Any]], test: dict[str, Any] | None,
                   wall_s: float, command: str | None, done: bool) -> dict[str, Any]:
    """``out/metrics.json`` (atomically): written after every epoch (``done`` false) and at the end."""
    metrics = {"schema_version": METRICS_SCHEMA, "done": done, "command": command, "config": asdict(cfg),
               "epochs_done": max((int(h["epoch"]) for h in history), default=0), "history": history,
               "final_val_top1": history[-1].get("val_top1") if history else None, "test": test, "wall_s": wall_s}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
