"""One training job from names: which model and data (:class:`TrainInputs`), how (:class:`TrainConfig`).

:func:`run_training` is what ``amc-mobile train`` calls: it resolves ``--init-from`` (the model name and
width default to the checkpoint's), opens the data splits, builds the model and runs
:func:`amc_mobile.training.train_model` into ``out_dir``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.options import opt
from amc_mobile.training.trainer import TrainConfig, train_model

SPLITS = ("train", "trainval")


@dataclass(frozen=True)
class TrainInputs:
    """What is trained on what (the CLI options of ``amc-mobile train`` besides the hyperparameters)."""

    model: str | None = opt(None, "Registered model name (see 'amc-mobile models') [--init-from's].", short="-m")
    dataset: str = opt("fashion-mnist", "Data set (see 'amc-mobile data').", short="-d")
    data_dir: str | None = opt(None, "Directory holding the data set files.")
    width: float | None = opt(None, "Width multiplier [--init-from's, else 1.0].")
    resolution: int | None = opt(None, "Input size recorded in the model [the data set's image size].",
                                 short="-r")
    classes: str | None = opt(None, "Class subset: names or indices, comma separated, or a preset name.")
    split: str = opt("train", "Training split: train (val held out) or trainval (no validation).")
    test: bool = opt(True, "Evaluate on the test split at the end.")
    limit_train: int | None = opt(None, "Use a seeded subset of this many training images (testing).", cli=False)
    limit_eval: int | None = opt(None, "Use at most this many val/test images (testing).", cli=False)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise UserError(f"--split must be train or trainval, not '{self.split}'")
        for name in ("limit_train", "limit_eval"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def resolve_model(inputs: TrainInputs, cfg: TrainConfig) -> TrainInputs:
    """Model name and width from ``cfg.init_from`` where not given; unknown names fail here (before data)."""
    from amc_mobile.data import get_entry as get_data_entry
    from amc_mobile.models import get_entry

    model, width = inputs.model, inputs.width
    if cfg.init_from is not None:
        from amc_mobile.models.checkpoint import read_checkpoint

        arch = read_checkpoint(cfg.init_from)["arch"]  # a bad or missing checkpoint fails before the data
        model = model or str(arch.get("name"))
        width = float(arch.get("width_mult", 1.0)) if width is None else width
    if model is None:
        raise UserError("give --model NAME (see 'amc-mobile models') or --init-from CHECKPOINT")
    get_entry(model)
    get_data_entry(inputs.dataset)
    return replace(inputs, model=model, width=1.0 if width is None else width)


def run_training(inputs: TrainInputs, cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
                 command: str | None = None, progress: bool = True, log: Callable[[str], None] = print,
                 stop_after: int | None = None) -> dict[str, Any]:
    """Train ``inputs.model`` on ``inputs.dataset`` into ``out_dir``; returns the metrics (see train_model)."""
    from amc_mobile.data import get_dataset
    from amc_mobile.models import create_model, describe_model

    inputs = resolve_model(inputs, cfg)
    assert inputs.model is not None and inputs.width is not None
    train_data = get_dataset(inputs.dataset, inputs.data_dir, inputs.split, inputs.classes)
    val_data = get_dataset(inputs.dataset, inputs.data_dir, "val", inputs.classes) if inputs.split == "train" else None
    test_data = get_dataset(inputs.dataset, inputs.data_dir, "test", inputs.classes) if inputs.test else None
    if inputs.limit_train:
        train_data = train_data.subset(inputs.limit_train)
    if inputs.limit_eval:
        val_data = val_data.subset(inputs.limit_eval) if val_data is not None else None
        test_data = test_data.subset(inputs.limit_eval) if test_data is not None else None
    size = train_data.input_size if inputs.resolution is None else inputs.resolution
    net: Any = create_model(inputs.model, num_classes=train_data.num_classes, in_chans=train_data.in_chans,
                            width_mult=inputs.width, input_size=size)
    if net.input_size != train_data.input_size:
        raise UserError(f"--resolution {net.input_size} differs from the data set's {train_data.input_size} px "
                        "images; resizing is not supported")
    desc = describe_model(net)
    log(f"{inputs.model} width {inputs.width} @ {net.input_size}px, {train_data.in_chans} channel(s), "
        f"{train_data.num_classes} classes: {desc.macs / 1e6:.2f}M MACs, {desc.params / 1e6:.3f}M params; "
        f"{len(train_data)} training images ({inputs.split})")
    return train_model(net, train_data, val_data, out_dir, cfg, test_data=test_data, resume=resume,
                       command=command, progress=progress, log=log, stop_after=stop_after)
