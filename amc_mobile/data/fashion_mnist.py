"""Fashion-MNIST (Xiao et al., 2017): 60k/10k 28x28 grey images of 10 clothing classes, IDX files."""

from __future__ import annotations

from pathlib import Path

from amc_mobile.data.datasets import DatasetEntry, RawData, register_dataset
from amc_mobile.data.idx import find_idx, read_idx
from amc_mobile.errors import UserError

FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                  "Bag", "Ankle boot"]
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"


def read_fashion_mnist(root: Path) -> RawData:
    files = {}
    for key, stem in (("xtr", "train-images-idx3-ubyte"), ("ytr", "train-labels-idx1-ubyte"),
                      ("xte", "t10k-images-idx3-ubyte"), ("yte", "t10k-labels-idx1-ubyte")):
        path = find_idx(root, stem)
        if path is None:
            raise FileNotFoundError(root / stem)
        files[key] = path
    xtr, xte = read_idx(files["xtr"]).unsqueeze(1), read_idx(files["xte"]).unsqueeze(1)
    ytr, yte = read_idx(files["ytr"]).long(), read_idx(files["yte"]).long()
    for images, labels, xk, yk in ((xtr, ytr, "xtr", "ytr"), (xte, yte, "xte", "yte")):
        if images.shape[0] != labels.numel():
            raise UserError(f"{files[yk]} holds {labels.numel()} labels but {files[xk].name} holds "
                            f"{images.shape[0]} images; the files do not belong together (re-download them)")
    return RawData(xtr, ytr, xte, yte, list(FMNIST_CLASSES))


register_dataset(DatasetEntry(
    name="fashion-mnist",
    description="Fashion-MNIST, 28x28 grey, 10 classes, IDX files (.gz or raw)",
    reader=read_fashion_mnist,
    default_dirs=(DEFAULT_DIR, "~/.cache/amc-mobile/fashion-mnist"),
    how_to_get="'apt-get install dataset-fashion-mnist' (Debian), or 'make data', or pass --data-dir "
               "DIR holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-*.gz",
    mean=(0.2860,), std=(0.3530,),
    presets={"tops": ["T-shirt/top", "Pullover", "Coat", "Shirt"],
             "footwear": ["Sandal", "Sneaker", "Ankle boot"]},
))
