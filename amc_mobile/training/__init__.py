"""Training loop with exact resume, and fast batched evaluation."""

from amc_mobile.training.evaluate import evaluate, fold_batchnorm
from amc_mobile.training.run import TrainInputs, run_training
from amc_mobile.training.trainer import TrainConfig, lr_at, train_model

__all__ = ["TrainConfig", "TrainInputs", "evaluate", "fold_batchnorm", "lr_at", "run_training", "train_model"]
