"""``amc-mobile train``, ``amc-mobile eval`` and ``amc-mobile data``."""

from __future__ import annotations

import json
import shlex
import sys

import typer

from amc_mobile.cli.common import console, err_console


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(eval_cmd)
    app.command("data")(data)


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def train(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name (see 'amc-mobile models')."),
    dataset: str = typer.Option("fashion-mnist", "--dataset", "-d", help="Data set (see 'amc-mobile data')."),
    out: str = typer.Option(..., "--out", "-o", help="Output directory (last.pt, final.pt, metrics.json)."),
    data_dir: str = typer.Option(None, "--data-dir", help="Directory holding the data set files."),
    width: float = typer.Option(1.0, "--width", help="Width multiplier."),
    resolution: int = typer.Option(None, "--resolution", "-r",
                                   help="Input size recorded in the model (default: the data set's image size)."),
    classes: str = typer.Option(None, "--classes",
                                help="Class subset: names or indices, comma separated, or a preset name."),
    epochs: int = typer.Option(8, "--epochs", help="Passes over the training split."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per step."),
    lr: float = typer.Option(0.1, "--lr", help="Peak learning rate (warm-up, then cosine decay)."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (Nesterov momentum 0.9) or adamw."),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="Weight decay of conv/linear weights."),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing", help="Cross-entropy label smoothing."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Disable random crop + flip."),
    seed: int = typer.Option(0, "--seed", help="Seed of init, batch order and augmentation."),
    split: str = typer.Option("train", "--split",
                              help="Training split: train (val held out) or trainval (no validation)."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
    resume: bool = typer.Option(False, "--resume", help="Continue after the last finished epoch in --out."),
    no_test: bool = typer.Option(False, "--no-test", help="Skip the final test-set evaluation."),
    limit_train: int = typer.Option(None, "--limit-train", hidden=True, help="Use a seeded subset (testing)."),
    limit_eval: int = typer.Option(None, "--limit-eval", hidden=True, help="Limit val/test images (testing)."),
    stop_after: int = typer.Option(None, "--stop-after", hidden=True,
                                   help="Stop after this epoch as if killed (testing resume)."),
) -> None:
    """Train a registered model on a data set; checkpoints every epoch, resumable with --resume."""
    from amc_mobile.data import get_dataset
    from amc_mobile.data import get_entry as get_data_entry
    from amc_mobile.errors import UserError
    from amc_mobile.models import create_model, describe_model, get_entry
    from amc_mobile.training import TrainConfig, train_model

    get_entry(model)  # unknown names fail before the data are read
    get_data_entry(dataset)
    if split not in ("train", "trainval"):
        raise UserError(f"--split must be train or trainval, not '{split}'")
    _set_threads(threads)
    train_data = get_dataset(dataset, data_dir, split, classes)
    val_data = get_dataset(dataset, data_dir, "val", classes) if split == "train" else None
    test_data = None if no_test else get_dataset(dataset, data_dir, "test", classes)
    if limit_train:
        train_data = train_data.subset(limit_train)
    if limit_eval:
        val_data = val_data.subset(limit_eval) if val_data is not None else None
        test_data = test_data.subset(limit_eval) if test_data is not None else None
    net = create_model(model, num_classes=train_data.num_classes, in_chans=train_data.in_chans,
                       width_mult=width, input_size=resolution or train_data.input_size)
    if net.input_size != train_data.input_size:
        raise UserError(f"--resolution {net.input_size} differs from the data set's {train_data.input_size} px "
                        "images; resizing is not supported")
    desc = describe_model(net)
    console.print(f"{model} width {width} @ {net.input_size}px, {train_data.in_chans} channel(s), "
                  f"{train_data.num_classes} classes: {desc.macs / 1e6:.2f}M MACs, {desc.params / 1e6:.3f}M params; "
                  f"{len(train_data)} training images ({split})", highlight=False, soft_wrap=True)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                      weight_decay=weight_decay, label_smoothing=label_smoothing, augment=not no_augment,
                      seed=seed)
    command = "amc-mobile " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    if command is None or "train" not in command:
        command = None
    metrics = train_model(net, train_data, val_data, out, cfg, test_data=test_data, resume=resume,
                          command=command, log=lambda s: console.print(s, highlight=False, soft_wrap=True),
                          stop_after=stop_after)
    if not metrics["done"]:
        console.print(f"stopped after epoch {metrics['epochs_done']}; continue with --resume", highlight=False, soft_wrap=True)
        return
    console.print(f"wrote {out}/final.pt, {out}/last.pt and {out}/metrics.json "
                  f"({metrics['train_wall_s']:.0f} s training)", highlight=False, soft_wrap=True)


def eval_cmd(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Checkpoint file or zoo:NAME."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Data set (default: the one in the checkpoint)."),
    split: str = typer.Option("test", "--split", help="val, test, train or trainval."),
    data_dir: str = typer.Option(None, "--data-dir", help="Directory holding the data set files."),
    classes: str = typer.Option(None, "--classes", help="Class subset (default: the checkpoint's classes)."),
    batch_size: int = typer.Option(250, "--batch-size", help="Images per batch."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (keys: top1, top5, loss, n)."),
) -> None:
    """Top-1 / top-5 accuracy and loss of a checkpoint on a data split."""
    from amc_mobile.data import TensorLoader, checkpoint_dataset
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.training import evaluate

    _set_threads(threads)
    net, meta = load_checkpoint(checkpoint)
    data = checkpoint_dataset(meta, split, data_dir=data_dir, dataset=dataset, classes=classes)
    res = evaluate(net, TensorLoader(data, batch_size))
    res = {"checkpoint": checkpoint, "dataset": data.name, "split": split, **res}
    if as_json:
        print(json.dumps(res, indent=2))
        return
    console.print(f"{checkpoint} on {data.name}/{split} ({res['n']} images): top-1 {res['top1']:.2f}%  "
                  f"top-5 {res['top5']:.2f}%  loss {res['loss']:.4f}", highlight=False, soft_wrap=True)


def data(
    data_dir: str = typer.Option(None, "--data-dir", help="Check this directory instead of the defaults."),
) -> None:
    """List the data sets, where each is looked for and whether it was found."""
    from rich.table import Table

    from amc_mobile.data import candidate_dirs, get_entry, list_datasets
    from amc_mobile.data.datasets import load_raw
    from amc_mobile.errors import UserError

    table = Table("data set", "status", "looked in", "description")
    missing = []
    for name in list_datasets():
        entry = get_entry(name)
        dirs = candidate_dirs(name, data_dir)
        try:
            raw, found = load_raw(name, data_dir)
            n_test = 0 if raw.test_labels is None else raw.test_labels.numel()
            status = f"found: {found} ({raw.train_labels.numel()} train, {n_test} test, {len(raw.classes)} classes)"
        except UserError:
            status = "missing"
            missing.append(f"{name}: {entry.how_to_get}")
        table.add_row(name, status, "\n".join(str(d) for d in dirs) or "-", entry.description)
    console.print(table)
    for line in missing:
        err_console.print(f"to get {line}", markup=False, highlight=False, soft_wrap=True)
