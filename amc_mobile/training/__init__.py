"""Training loop with exact resume, and fast batched evaluation."""

from amc_mobile.training.evaluate import evaluate, fold_batchnorm
from amc_mobile.training.trainer import TrainConfig, lr_at, train_model

__all__ = ["TrainConfig", "evaluate", "fold_batchnorm", "lr_at", "train_model"]
