"""``amc-mobile search`` (latency-aware AMC, baselines) and ``amc-mobile finetune`` (KD)."""

from __future__ import annotations

import shlex
import sys

import typer

from amc_mobile.cli.common import console


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("finetune")(finetune)


def _command_line() -> str:
    return "amc-mobile " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def search(
    checkpoint: str = typer.Option(None, "--checkpoint", "-c", help="Teacher checkpoint file or zoo:NAME."),
    device: str = typer.Option(None, "--device", "-d", help="Target device profile (its latency table is used)."),
    latency_budget: str = typer.Option(None, "--latency-budget", help="e.g. 20ms, 1500us, or 50% of the teacher's "
                                       "latency on the device (predicted from its table)."),
    flops_budget: str = typer.Option(None, "--flops-budget", help="MACs budget, e.g. 50% or 5M."),
    params_budget: str = typer.Option(None, "--params-budget", help="Parameter budget, e.g. 60% or 400k."),
    episodes: int = typer.Option(None, "--episodes", "-n", help="Episodes in total, warm-up included [400]."),
    warmup: int = typer.Option(None, "--warmup", help="Episodes of random actions before the agent learns "
                               "[AMC's 100; a quarter of --episodes when that is below 400; 0 with "
                               "--transfer-from]."),
    classes: str = typer.Option(None, "--classes", help="Search for this class subset (DDC): names, indices of "
                                "the teacher's outputs or a preset, e.g. 'Sandal,Sneaker,Ankle boot'; the "
                                "teacher's classifier is cut to these rows."),
    transfer_from: str = typer.Option(None, "--transfer-from", help="Start the agent (actor + critic) from the "
                                      "finished search in this directory (DDC policy transfer)."),
    init_sigma: float = typer.Option(None, "--init-sigma", help="Exploration noise after the warm-up, decaying "
                                     "x0.95 per episode [0.5; 0.2 with --transfer-from]."),
    out: str = typer.Option(None, "--out", "-o", help="Output directory (required unless --resume)."),
    resume: str = typer.Option(None, "--resume", help="Continue the interrupted search in this directory."),
    reward: str = typer.Option("err", "--reward", help="err | flops | params | latency | ddc."),
    metric: str = typer.Option("top1", "--metric", help="Accuracy the reward sees: top1 | top5."),
    val_size: int = typer.Option(3000, "--val-size", help="Held-out val images scoring each candidate."),
    min_ratio: float = typer.Option(0.2, "--min-ratio", help="Smallest keep ratio of a group."),
    method: str = typer.Option("amc", "--method", help="amc (DDPG search) | uniform (baseline: one ratio)."),
    ddc_thresholds: str = typer.Option("0.9,0.3,0.6", "--ddc-thresholds", help="DDC A_th,T_th,C_th."),
    latency_table: str = typer.Option(None, "--latency-table", help="Use this latency table file."),
    dataset: str = typer.Option(None, "--dataset", help="Data set (default: the one in the checkpoint)."),
    data_dir: str = typer.Option(None, "--data-dir", help="Directory holding the data set."),
    seed: int = typer.Option(0, "--seed", help="Seed of agent, calibration sample and val subset."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure final model and teacher "
                                 "on the device at the end."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Search per-group keep ratios under latency / MACs / params budgets (AMC, DDPG)."""
    from amc_mobile.errors import UserError
    from amc_mobile.search.runner import SearchConfig, SearchInputs, load_saved_settings, run_search

    if resume:
        inputs, cfg = load_saved_settings(resume)
        if episodes is not None:
            cfg.episodes = episodes
        out_dir = resume
    else:
        if checkpoint is None or out is None:
            raise UserError("give --checkpoint FILE|zoo:NAME and --out DIR (or --resume DIR)")
        if method not in ("amc", "uniform"):
            raise UserError(f"unknown method '{method}'; valid methods: amc, uniform")
        try:
            th = tuple(float(v) for v in ddc_thresholds.split(","))
        except ValueError:
            th = ()
        if len(th) != 3:
            raise UserError(f"--ddc-thresholds {ddc_thresholds}: expected three numbers A,T,C like 0.9,0.3,0.6")
        if transfer_from and method != "amc":
            raise UserError("--transfer-from needs --method amc (it starts the DDPG agent)")
        inputs = SearchInputs(checkpoint, device, latency_budget, flops_budget, params_budget, latency_table,
                              dataset, data_dir, method, classes, transfer_from)
        n = 400 if episodes is None else episodes
        if warmup is None:
            warmup = 0 if transfer_from else min(100, n // 4)
        if init_sigma is None:
            init_sigma = 0.2 if transfer_from else 0.5
        cfg = SearchConfig(episodes=n, warmup=warmup, reward=reward, metric=metric, val_size=val_size,
                           min_ratio=min_ratio, ddc_thresholds=th, seed=seed, init_sigma=init_sigma)
        out_dir = out
    cfg.measure = measure
    summary = run_search(inputs, cfg, out_dir, resume=bool(resume), progress=progress,
                         log=lambda m: console.print(m, markup=False, highlight=False), command=_command_line())
    f, t = summary["final"], summary["teacher"]
    line = (f"best (episode {summary['best_episode']}): val top-1 {f['val_top1']:.2f}% (teacher {t['val_top1']:.2f}%), "
            f"{f['macs'] / 1e6:.2f}M MACs, {f['params'] / 1e6:.3f}M params")
    if f["predicted_latency_ms"] is not None:
        line += f", predicted {f['predicted_latency_ms']:.3f} ms (teacher {t['predicted_latency_ms']:.3f} ms)"
    if f["measured_latency_ms"] is not None:
        line += (f", measured {f['measured_latency_ms']:.3f} ms vs teacher {t['measured_latency_ms']:.3f} ms "
                 f"({summary['measured_speedup']:.2f}x)")
    console.print(line, markup=False, highlight=False)
    console.print(f"outputs in {out_dir}: policy.json, pruned.pt, episodes.csv, summary.json, search.png",
                  markup=False, highlight=False)


def finetune(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Pruned student checkpoint (e.g. OUT/pruned.pt)."),
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher checkpoint file or zoo:NAME."),
    epochs: int = typer.Option(5, "--epochs", "-e", help="Passes over the training split."),
    out: str = typer.Option(..., "--out", "-o", help="Output directory (last.pt, final.pt, metrics.json)."),
    lam: float = typer.Option(0.7, "--lambda", help="Weight of the soft (teacher) loss, DDC eq. 12."),
    temperature: float = typer.Option(4.0, "--temperature", "-T", help="Softmax temperature of the soft loss."),
    lr: float = typer.Option(0.02, "--lr", help="Peak learning rate (SGD, cosine decay)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per step."),
    max_train_images: int = typer.Option(0, "--max-train-images", help="Use a seeded subset (0: all)."),
    seed: int = typer.Option(0, "--seed"),
    data_dir: str = typer.Option(None, "--data-dir", help="Directory holding the data set."),
    test: bool = typer.Option(False, "--test", help="Also report accuracy on the test split."),
    resume: bool = typer.Option(False, "--resume", help="Continue after the last finished epoch in --out."),
    classes: str = typer.Option(None, "--classes", help="Class subset (as in 'amc-mobile search --classes'): "
                                "the teacher's logits are cut to these classes [default: the student's "
                                "recorded classes when they are a subset of the teacher's]."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fine-tune a pruned model with knowledge distillation from its teacher (DDC)."""
    from amc_mobile.data import get_dataset
    from amc_mobile.distill import FinetuneConfig
    from amc_mobile.distill import finetune as run_finetune
    from amc_mobile.errors import UserError
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.search.subset import subset_teacher, teacher_classes

    student, meta = load_checkpoint(checkpoint)
    teacher_model, tmeta = load_checkpoint(teacher)
    student_classes = (meta.get("data") or {}).get("classes")
    if classes is None and student_classes and tmeta.get("data"):
        t_names = teacher_classes(tmeta, data_dir)
        if list(student_classes) != t_names and set(student_classes) <= set(t_names):
            classes = [str(t_names.index(c)) for c in student_classes]  # a subset search's pruned.pt
    if classes:
        teacher_model, tmeta, names = subset_teacher(teacher_model, tmeta, classes, data_dir)
        if student_classes and len(student_classes) == len(names) and list(student_classes) != names:
            raise UserError(f"{checkpoint} was searched/trained for classes {', '.join(student_classes)}, not "
                            f"{', '.join(names)} (same classes in the same order are needed)")
        meta = {**meta, "data": {**(meta.get("data") or tmeta["data"]), "classes": names}}
    n_student = int(student.arch_kwargs["num_classes"])
    if n_student != int(teacher_model.arch_kwargs["num_classes"]):
        raise UserError(f"the student has {n_student} outputs but the teacher has "
                        f"{teacher_model.arch_kwargs['num_classes']}; pass --classes to cut the teacher to the "
                        "student's classes")
    info = meta.get("data") or tmeta.get("data") or {}
    if not info.get("dataset"):
        raise UserError(f"{checkpoint} does not record its data set")
    classes = info.get("classes")

    def split(name: str):  # noqa: ANN202
        d = get_dataset(info["dataset"], data_dir, split=name)
        if classes and list(classes) != list(d.classes):
            d = get_dataset(info["dataset"], data_dir, split=name, classes=list(classes))
        if info.get("mean") and info.get("std"):
            d.mean, d.std = tuple(info["mean"]), tuple(info["std"])
        return d

    cfg = FinetuneConfig(epochs=epochs, batch_size=batch_size, lr=lr, lam=lam, temperature=temperature, seed=seed,
                         max_train_images=max_train_images)
    metrics = run_finetune(student, teacher_model, split("train"), split("val"), out, cfg,
                           test_data=split("test") if test else None, resume=resume, progress=progress,
                           log=lambda m: console.print(m, markup=False, highlight=False), command=_command_line())
    console.print(f"fine-tuned model: {out}/final.pt (val top-1 {metrics['final_val_top1']:.2f}%)",
                  markup=False, highlight=False)
