"""Image folders: one sub-folder per class (PNG/JPEG/BMP read with Pillow).

Layout ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*``, or just ``ROOT/<class>/*`` (then there is
no test split). Images are converted to grey when every training image is grey, else RGB, and resized
to the size of the first training image. Normalisation stats are computed from the training images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from amc_mobile.data.datasets import DatasetEntry, RawData, register_dataset
from amc_mobile.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise UserError("reading image folders needs Pillow: pip install pillow") from exc
    return Image


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _files(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    out = []
    for i, c in enumerate(classes):
        d = root / c
        if d.is_dir():
            out += [(p, i) for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return out


def _load(files: list[tuple[Path, int]], mode: str, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    image_mod = _pil()
    arrays = []
    for path, _ in files:
        try:
            with image_mod.open(path) as im:
                im = im.convert(mode)
                if im.size != size:
                    im = im.resize(size, image_mod.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except OSError as exc:
            raise UserError(f"cannot read image {path}: {exc}") from exc
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, 1 if mode == "L" else 3, *size[::-1],
                                                                                dtype=torch.uint8)
    return images, torch.tensor([c for _, c in files], dtype=torch.long)


def read_image_folder(root: Path) -> RawData:
    train_root = root / "train" if (root / "train").is_dir() else root
    test_root = root / "test" if (root / "test").is_dir() and train_root != root else None
    classes = [d.name for d in _class_dirs(train_root)]
    if len(classes) < 2:
        raise FileNotFoundError(train_root / "<class>")
    train_files = _files(train_root, classes)
    if not train_files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {train_root}/<class>/")
    image_mod = _pil()
    modes = set()
    for path, _ in train_files:
        with image_mod.open(path) as im:
            modes.add(im.mode)
            if len(modes) > 1 and any(m not in ("L", "1") for m in modes):
                break
    mode = "L" if modes <= {"L", "1"} else "RGB"
    with image_mod.open(train_files[0][0]) as im:
        size = im.size
    xtr, ytr = _load(train_files, mode, size)
    xte = yte = None
    if test_root is not None:
        xte, yte = _load(_files(test_root, classes), mode, size)
    return RawData(xtr, ytr, xte, yte, classes)


register_dataset(DatasetEntry(
    name="image-folder",
    description="your images: DIR/<class>/*.png|jpg (or DIR/train/<class>, DIR/test/<class>); needs Pillow",
    reader=read_image_folder,
    default_dirs=(),
    how_to_get="pass --data-dir DIR with one sub-folder per class (optionally DIR/train/<class> and "
               "DIR/test/<class>); images are read with Pillow",
    mean=None, std=None,
    val_size=500,
))
