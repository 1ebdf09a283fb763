"""Calibration and evaluation data for pruning a trained teacher (the CLI and benches share it).

AMC samples its calibration features from TRAINING images; accuracy is measured on a held-out
split (``val``: a stratified slice of the training set, as in AMC's search; or ``test``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from amc_mobile.errors import UserError


@dataclass
class PruningData:
    calib_images: torch.Tensor  # normalised float32 (N, C, H, W)
    eval_batches: list[tuple[torch.Tensor, torch.Tensor]]
    info: dict[str, Any]  # data_info() of the evaluation split


def load_pruning_data(meta: dict[str, Any] | None, dataset: str | None = None, data_dir: str | None = None,
                      calib_images: int = 3000, eval_split: str = "val", eval_images: int | None = None,
                      batch_size: int = 500, seed: int = 0) -> PruningData:
    """Images of the data set the teacher was trained on (``meta["data"]``), or of ``dataset``.

    Uses the teacher's class subset and normalisation when the checkpoint records them.
    """
    from amc_mobile.data import TensorLoader, teacher_data

    if calib_images < 1:
        raise UserError(f"need at least one calibration image (--calib-batches x --calib-batch-size), got {calib_images}")
    if eval_images is not None and eval_images < 1:
        raise UserError(f"--eval-images must be a positive integer, got {eval_images}")
    train = teacher_data(meta, "train", data_dir, dataset)
    held = teacher_data(meta, eval_split, data_dir, dataset)
    train = train.subset(min(calib_images, len(train)), seed)
    if eval_images is not None and eval_images < len(held):
        held = held.subset(eval_images, seed)
    calib = torch.cat([x for x, _ in TensorLoader(train, batch_size, channels_last=False)]).contiguous()
    batches = list(TensorLoader(held, batch_size, channels_last=False))
    return PruningData(calib, batches, held.data_info())
