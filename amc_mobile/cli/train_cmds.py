"""``amc-mobile train``, ``amc-mobile eval`` and ``amc-mobile data``."""

from __future__ import annotations

import inspect
import json
import shlex
import sys
from typing import Any, Optional

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


def _train_params() -> list[inspect.Parameter]:
    """Options of ``train``: TrainInputs and TrainConfig fields (their help and defaults), plus the run's own."""
    from amc_mobile.options import cli_parameters
    from amc_mobile.training import TrainConfig, TrainInputs

    def option(name: str, kind: Any, default: Any, *decls: str, help: str, hidden: bool = False  # noqa: A002
               ) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                 default=typer.Option(default, *decls, help=help, hidden=hidden))

    return [
        *cli_parameters(TrainInputs),
        option("out", str, ..., "--out", "-o", help="Output directory (last.pt, final.pt, metrics.json)."),
        option("resume", bool, False, "--resume",
               help="Continue the run in --out after its last finished epoch (same model, data and settings; "
                    "--epochs may grow). Without it an existing run in --out is refused."),
        *cli_parameters(TrainConfig),
        option("threads", Optional[int], None, "--threads", help="torch CPU threads (default: torch's choice)."),  # noqa: UP045
        option("limit_train", Optional[int], None, "--limit-train", hidden=True, help="Seeded training subset."),  # noqa: UP045
        option("limit_eval", Optional[int], None, "--limit-eval", hidden=True, help="Limit val/test images."),  # noqa: UP045
        option("stop_after", Optional[int], None, "--stop-after", hidden=True,  # noqa: UP045
               help="Stop after this epoch as if killed (testing resume)."),
    ]


def train(**options: Any) -> None:
    """Train a registered model on a data set; checkpoints every epoch, resumable with --resume."""
    from amc_mobile.options import config_from_options
    from amc_mobile.training import TrainConfig, TrainInputs, run_training

    out, resume, threads, stop_after = (options.pop(k) for k in ("out", "resume", "threads", "stop_after"))
    inputs = config_from_options(TrainInputs, options)
    cfg = config_from_options(TrainConfig, options)  # validated here, before any data are read
    _set_threads(threads)
    command = "amc-mobile " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    if command is None or "train" not in command:
        command = None
    metrics = run_training(inputs, cfg, out, resume=resume, command=command,
                           log=lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True),
                           stop_after=stop_after)
    if not metrics["done"]:
        console.print(f"stopped after epoch {metrics['epochs_done']}; continue with --resume", markup=False,
                      highlight=False, soft_wrap=True)
        return
    console.print(f"wrote {out}/final.pt, {out}/last.pt and {out}/metrics.json "
                  f"({metrics['train_wall_s']:.0f} s training)", markup=False, highlight=False, soft_wrap=True)


train.__signature__ = inspect.Signature(_train_params())  # type: ignore[attr-defined]


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
    from amc_mobile.data import TensorLoader, teacher_data
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.training import evaluate

    _set_threads(threads)
    net, meta = load_checkpoint(checkpoint)
    data = teacher_data(meta, split, data_dir=data_dir, dataset=dataset, classes=classes)
    res = evaluate(net, TensorLoader(data, batch_size))
    report: dict[str, Any] = {"checkpoint": checkpoint, "dataset": data.name, "split": split, **res}
    if as_json:
        print(json.dumps(report, indent=2))
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
