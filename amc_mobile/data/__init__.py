"""Data sets (in-memory uint8 tensors + class names + normalisation) and a fast tensor loader."""

from amc_mobile.data import cifar, fashion_mnist, folder  # noqa: F401  (register the data sets)
from amc_mobile.data.datasets import (
    SPLITS,
    Dataset,
    DatasetEntry,
    candidate_dirs,
    get_dataset,
    get_entry,
    list_datasets,
    parse_classes,
    register_dataset,
    stratified_val_indices,
    teacher_data,
)
from amc_mobile.data.loader import TensorLoader, random_crop_flip

__all__ = [
    "SPLITS", "Dataset", "DatasetEntry", "TensorLoader", "candidate_dirs", "get_dataset", "get_entry",
    "list_datasets", "parse_classes", "random_crop_flip", "register_dataset", "stratified_val_indices",
    "teacher_data",
]
