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
from amc_mobile.models.checkpoint import read_checkpoint, save_checkpoint

METRICS_SCHEMA = 1


@dataclass
class FinetuneConfig:
    """Hyperparameters of a KD fine-tune (field comments double as CLI help)."""

    epochs: int = 5  # passes over the training split
    batch_size: int = 128  # images per step
    lr: float = 0.02  # peak learning rate (SGD, Nesterov momentum 0.9)
    weight_decay: float = 5e-4  # conv/linear weights only
    warmup_epochs: float = 0.2  # linear warm-up, then cosine decay to 0
    lam: float = 0.7  # weight of the soft (teacher) term, DDC eq. 12
    temperature: float = 4.0  # softmax temperature of the soft term
    augment: bool = True  # random crop + horizontal flip
    seed: int = 0
    channels_last: bool = True
    eval_batch_size: int = 1000
    max_train_images: int = 0  # 0: the whole training split; else a seeded subset (quick runs)


def finetune(student: nn.Module, teacher: nn.Module, train_data: Any, val_data: Any, out_dir: str | Path,
             cfg: FinetuneConfig, test_data: Any = None, resume: bool = False, progress: bool = True,
             log: Any = print, command: str | None = None) -> dict[str, Any]:
    """Distil ``teacher`` into ``student`` (in place); returns metrics (also ``out_dir/metrics.json``);
    ``out_dir/final.pt`` is the fine-tuned student."""
    from amc_mobile.data import TensorLoader
    from amc_mobile.training import TrainConfig, evaluate, lr_at
    from amc_mobile.training.trainer import _progress, make_optimizer

    if not 0.0 <= cfg.lam <= 1.0:
        raise UserError(f"--lambda must be in [0, 1], got {cfg.lam}")
    if cfg.temperature <= 0:
        raise UserError(f"--temperature must be positive, got {cfg.temperature}")
    n_student, n_teacher = (getattr(m, "arch_kwargs", {}).get("num_classes") for m in (student, teacher))
    if n_student is not None and n_teacher is not None and n_student != n_teacher:
        raise UserError(f"the student has {n_student} outputs and the teacher {n_teacher}; cut the teacher to the "
                        "student's classes first (amc_mobile.search.subset.restrict_classes, CLI --classes)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    torch.manual_seed(cfg.seed)
    if cfg.max_train_images and cfg.max_train_images < len(train_data):
        train_data = train_data.subset(cfg.max_train_images, cfg.seed)
    pad = 2 if train_data.input_size <= 32 else 4
    loader = TensorLoader(train_data, cfg.batch_size, shuffle=True, augment=cfg.augment, pad=pad, seed=cfg.seed,
                          drop_last=len(train_data) > cfg.batch_size, channels_last=cfg.channels_last)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    student.to(memory_format=fmt)
    teacher.to(memory_format=fmt).eval()
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
        if state["config"] != json.loads(json.dumps(asdict(cfg))):
            diff = [k for k, v in asdict(cfg).items() if state["config"].get(k) != v and k != "epochs"]
            if diff:
                raise UserError(f"{last} was fine-tuned with different settings ({', '.join(diff)}); resume with "
                                "the same values")
        student.load_state_dict({k: (v.float() if v.is_floating_point() else v)
                                 for k, v in payload["state_dict"].items()})
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        history, start, wall_s = list(state["history"]), int(state["epoch"]), float(state["wall_s"])
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
        bar = _progress(steps, f"finetune {epoch + 1}/{cfg.epochs}", progress)
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
                bar.set_postfix(kd_loss=f"{loss_sum / seen:.4f}", lr=f"{lr:.4f}")
        bar.close()
        row: dict[str, Any] = {"epoch": epoch + 1, "train_kd_loss": loss_sum / max(1, seen), "lr_end": lr}
        if val_loader is not None:
            v = evaluate(student, val_loader)
            row.update(val_top1=v["top1"], val_top5=v["top5"], val_loss=v["loss"])
        row["epoch_s"] = round(time.perf_counter() - t0, 1)
        wall_s += time.perf_counter() - t0
        history.append(row)
        state = {"epoch": epoch + 1, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                 "history": history, "wall_s": wall_s, "config": json.loads(json.dumps(asdict(cfg)))}
        save_checkpoint(last, student, data=train_data.data_info(), finetune_state=state)
        log(f"epoch {epoch + 1}/{cfg.epochs}: kd loss {row['train_kd_loss']:.4f}"
            + (f", val top-1 {row['val_top1']:.2f}%" if "val_top1" in row else "") + f" ({row['epoch_s']:.0f} s)")
    test = None
    if test_data is not None:
        t = evaluate(student, TensorLoader(test_data, cfg.eval_batch_size, channels_last=cfg.channels_last))
        test = {"top1": t["top1"], "top5": t["top5"], "n": t["n"]}
        log(f"test top-1 {t['top1']:.2f}% on {t['n']} images")
    metrics = {"schema_version": METRICS_SCHEMA, "command": command, "config": asdict(cfg), "history": history,
               "final_val_top1": history[-1].get("val_top1") if history else None, "test": test, "wall_s": wall_s}
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(out / "metrics.json")
    student.to(memory_format=torch.contiguous_format)
    save_checkpoint(out / "final.pt", student, data=train_data.data_info(),
                    metrics=json.loads(json.dumps({k: v for k, v in metrics.items() if v is not None})))
    return metrics
