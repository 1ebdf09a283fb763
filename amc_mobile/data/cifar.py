"""CIFAR-10 / CIFAR-100 (Krizhevsky, 2009) from the standard python-pickle files.

CIFAR-10: ``data_batch_1..5``, ``test_batch``, ``batches.meta`` (``cifar-10-batches-py/``).
CIFAR-100: ``train``, ``test``, ``meta`` with fine labels (``cifar-100-python/``).
Pickles are read with a restricted unpickler that only admits numpy arrays and builtins.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amc_mobile.data.datasets import DatasetEntry, RawData, register_dataset
from amc_mobile.errors import UserError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a CIFAR python-pickle file ({exc})") from exc
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a CIFAR python-pickle file (no dict inside)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _names(values: list) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _images(batch: dict, path: Path) -> torch.Tensor:
    data = np.asarray(batch.get("data"), dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{path}: 'data' must be N x 3072 uint8 (got shape {data.shape})")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())


def _locate(root: Path, folder: str, marker: str) -> Path:
    if (root / marker).is_file():
        return root
    if (root / folder / marker).is_file():
        return root / folder
    raise FileNotFoundError(root / marker)


def read_cifar10(root: Path) -> RawData:
    root = _locate(root, "cifar-10-batches-py", "batches.meta")
    classes = _names(load_pickle(root / "batches.meta")["label_names"])
    xs, ys = [], []
    for i in range(1, 6):
        path = root / f"data_batch_{i}"
        if not path.is_file():
            raise UserError(f"CIFAR-10 at {root} lacks {path.name}")
        batch = load_pickle(path)
        xs.append(_images(batch, path))
        ys.append(torch.tensor(batch["labels"], dtype=torch.long))
    test = load_pickle(root / "test_batch")
    return RawData(torch.cat(xs), torch.cat(ys), _images(test, root / "test_batch"),
                   torch.tensor(test["labels"], dtype=torch.long), classes)


def read_cifar100(root: Path) -> RawData:
    root = _locate(root, "cifar-100-python", "meta")
    classes = _names(load_pickle(root / "meta")["fine_label_names"])
    train, test = load_pickle(root / "train"), load_pickle(root / "test")
    return RawData(_images(train, root / "train"), torch.tensor(train["fine_labels"], dtype=torch.long),
                   _images(test, root / "test"), torch.tensor(test["fine_labels"], dtype=torch.long), classes)


CIFAR10_PRESETS = {
    "vehicles": ["airplane", "automobile", "ship", "truck"],
    "animals": ["bird", "cat", "deer", "dog", "frog", "horse"],
}

register_dataset(DatasetEntry(
    name="cifar10",
    description="CIFAR-10, 32x32 RGB, 10 classes, python-pickle batches",
    reader=read_cifar10,
    default_dirs=("~/.cache/amc-mobile/cifar-10-batches-py", "/usr/share/datasets/cifar-10-batches-py"),
    how_to_get="download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, unpack "
               "it and pass --data-dir .../cifar-10-batches-py",
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    presets=CIFAR10_PRESETS,
))

register_dataset(DatasetEntry(
    name="cifar100",
    description="CIFAR-100, 32x32 RGB, 100 fine classes, python-pickle files",
    reader=read_cifar100,
    default_dirs=("~/.cache/amc-mobile/cifar-100-python", "/usr/share/datasets/cifar-100-python"),
    how_to_get="download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, unpack "
               "it and pass --data-dir .../cifar-100-python",
    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
))
