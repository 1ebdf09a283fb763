"""Data set registry: in-memory uint8 image tensors, class names and normalisation stats.

Every data set loads fully into memory (Fashion-MNIST is 47 MB) as ``images`` (N, C, H, W) uint8
and ``labels`` (N,) int64. Splits: ``train`` = official training set minus a held-out, seeded,
stratified ``val`` set; ``trainval`` = the whole official training set; ``test`` = official test set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from amc_mobile.errors import UserError, unknown_name

SPLITS = ("train", "val", "test", "trainval")
VAL_SEED = 0  # fixed: the validation split must be the same for every tool and every run


@dataclass(frozen=True)
class RawData:
    """What a reader returns: the official training and test sets."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor | None
    test_labels: torch.Tensor | None
    classes: list[str]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    reader: Callable[[Path], RawData]
    default_dirs: tuple[str, ...]
    how_to_get: str
    mean: tuple[float, ...] | None  # None: computed from the training images
    std: tuple[float, ...] | None
    val_size: int = 5000
    presets: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Dataset:
    """One split of a data set, in memory."""

    name: str
    split: str
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64, 0..num_classes-1
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    data_dir: str

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def input_size(self) -> int:
        return int(self.images.shape[-1])

    def data_info(self) -> dict:
        """Stored in checkpoints so eval/search need no data flags."""
        return {"dataset": self.name, "mean": list(self.mean), "std": list(self.std),
                "classes": list(self.classes), "input_size": self.input_size, "in_chans": self.in_chans}

    def subset(self, n: int, seed: int = 0) -> Dataset:
        """A seeded random subset of ``n`` images (for quick runs and tests)."""
        if n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return Dataset(self.name, self.split, self.images[idx], self.labels[idx], self.classes,
                       self.mean, self.std, self.data_dir)


_REGISTRY: dict[str, DatasetEntry] = {}
_CACHE: dict[tuple[str, str], RawData] = {}


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    _REGISTRY[entry.name] = entry
    return entry


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> DatasetEntry:
    if name not in _REGISTRY:
        raise unknown_name("dataset", name, _REGISTRY)
    return _REGISTRY[name]


def candidate_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Where ``name`` is looked for: ``--data-dir`` alone if given, else $AMC_DATA_DIR/<name> and defaults."""
    entry = get_entry(name)
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    dirs = []
    env = os.environ.get("AMC_DATA_DIR")
    if env:
        dirs.append(Path(env).expanduser() / name)
    dirs += [Path(d).expanduser() for d in entry.default_dirs]
    return dirs


def check_raw(raw: RawData, where: str) -> None:
    """Images and labels must pair up and labels must name a class; else one line (a mixed-up or cut
    label file would otherwise train on shifted labels, or fail deep inside the loss)."""
    pairs: list[tuple[str, torch.Tensor | None, torch.Tensor | None]] = [
        ("training", raw.train_images, raw.train_labels)]
    if raw.test_images is not None or raw.test_labels is not None:
        pairs.append(("test", raw.test_images, raw.test_labels))
    for split, images, labels in pairs:
        if images is None or labels is None:
            raise UserError(f"{where}: the {split} split has {'no images' if images is None else 'no labels'}")
        if images.shape[0] != labels.numel():
            raise UserError(f"{where}: {images.shape[0]} {split} images but {labels.numel()} labels; "
                            "the image and label files do not belong together (re-download them)")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(raw.classes)):
            raise UserError(f"{where}: {split} labels range {int(labels.min())}..{int(labels.max())} but the data "
                            f"set has {len(raw.classes)} classes (corrupt label file?)")


def load_raw(name: str, data_dir: str | Path | None = None) -> tuple[RawData, Path]:
    """Read the whole data set (cached per process), or raise a UserError saying where it looked."""
    entry = get_entry(name)
    tried = candidate_dirs(name, data_dir)
    for d in tried:
        if not d.is_dir():
            continue
        key = (name, str(d.resolve()))
        if key not in _CACHE:
            try:
                raw = entry.reader(d)
            except FileNotFoundError:
                continue
            check_raw(raw, f"data set '{name}' in {d}")
            _CACHE[key] = raw
        return _CACHE[key], d
    where = ", ".join(str(d) for d in tried) or "(no directory)"
    raise UserError(f"data set '{name}' not found; looked in: {where}. To get it: {entry.how_to_get}")


def stratified_val_indices(labels: torch.Tensor, val_size: int, seed: int = VAL_SEED) -> torch.Tensor:
    """Seeded, class-stratified indices of the held-out validation images (sorted)."""
    n = labels.numel()
    val_size = min(val_size, n // 10)
    gen = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels)
    picked = []
    for c in classes.tolist():
        idx = (labels == c).nonzero().flatten()
        k = round(val_size * idx.numel() / n)
        picked.append(idx[torch.randperm(idx.numel(), generator=gen)[:k]])
    return torch.cat(picked).sort().values


def parse_classes(spec: str | Sequence[str] | None, classes: list[str],
                  presets: dict[str, list[str]] | None = None) -> list[int] | None:
    """``"T-shirt/top,Trouser"``, ``"0,1,3"`` or a preset name -> sorted-by-given-order indices."""
    if spec is None or spec == "" or spec == []:
        return None
    presets = presets or {}
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    if len(items) == 1 and items[0] in presets:
        items = presets[items[0]]
    lower = {c.lower(): i for i, c in enumerate(classes)}
    out: list[int] = []
    for item in items:
        if item.isdigit():
            i = int(item)
            if not 0 <= i < len(classes):
                raise UserError(f"class index {i} out of range 0..{len(classes) - 1}")
        elif item.lower() in lower:
            i = lower[item.lower()]
        else:
            valid = ", ".join(classes) + (("; presets: " + ", ".join(sorted(presets))) if presets else "")
            raise UserError(f"unknown class '{item}'; valid classes: {valid}")
        if i in out:
            raise UserError(f"class '{item}' given twice")
        out.append(i)
    if len(out) < 2:
        raise UserError("a class subset needs at least 2 classes")
    return out


def _select(images: torch.Tensor, labels: torch.Tensor, keep: list[int] | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    if keep is None:
        return images, labels
    remap = torch.full((int(labels.max()) + 1 if labels.numel() else 1,), -1, dtype=torch.long)
    for new, old in enumerate(keep):
        if old < remap.numel():
            remap[old] = new
    new_labels = remap[labels]
    mask = new_labels >= 0
    return images[mask], new_labels[mask]


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images[: 20000].float().div_(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def get_dataset(name: str, data_dir: str | Path | None = None, split: str = "train",
                classes: str | Sequence[str] | None = None) -> Dataset:
    """One split of a registered data set, optionally restricted to ``classes`` (remapped to 0..k-1)."""
    entry = get_entry(name)
    if split not in SPLITS:
        raise unknown_name("split", split, SPLITS)
    raw, found = load_raw(name, data_dir)
    if split == "test":
        if raw.test_images is None or raw.test_labels is None:
            raise UserError(f"data set '{name}' at {found} has no test set")
        images, labels = raw.test_images, raw.test_labels
    elif split == "trainval":
        images, labels = raw.train_images, raw.train_labels
    else:
        val_idx = stratified_val_indices(raw.train_labels, entry.val_size)
        if split == "val":
            idx = val_idx
        else:
            mask = torch.ones(raw.train_labels.numel(), dtype=torch.bool)
            mask[val_idx] = False
            idx = mask.nonzero().flatten()
        images, labels = raw.train_images[idx], raw.train_labels[idx]
    keep = parse_classes(classes, raw.classes, entry.presets)
    images, labels = _select(images, labels, keep)
    class_names = raw.classes if keep is None else [raw.classes[i] for i in keep]
    if entry.mean is not None and entry.std is not None:
        mean, std = entry.mean, entry.std
    else:
        mean, std = _channel_stats(raw.train_images)
    return Dataset(name, split, images, labels, class_names, tuple(mean), tuple(std), str(found))


def teacher_data(meta: Mapping[str, Any] | None, split: str, data_dir: str | Path | None = None,
                 dataset: str | None = None, classes: str | Sequence[str] | None = None) -> Dataset:
    """The one way to open a trained model's data: ``split`` of its recorded data set, with its class
    subset (in its output order) and the normalisation it was trained with.

    ``meta`` is what ``load_checkpoint`` returns next to the model (None: only ``dataset``).
    ``dataset``/``classes`` override the record; the recorded classes and normalisation apply only
    to the recorded data set. The recorded architecture must match the images (channels, size,
    number of classes), else one line. Used by eval, pruning, search, fine-tuning and the benches.
    """
    info = dict((meta or {}).get("data") or {})
    name = dataset or info.get("dataset")
    if not name:
        raise UserError("the checkpoint does not record its data set; pass --dataset NAME")
    same = info.get("dataset") == name
    if classes is None and same and info.get("classes"):
        all_classes = load_raw(name, data_dir)[0].classes
        if list(info["classes"]) != all_classes:
            missing = [c for c in info["classes"] if c not in all_classes]
            if missing:
                raise UserError(f"the checkpoint's classes {missing} are not in data set '{name}'")
            classes = [str(all_classes.index(c)) for c in info["classes"]]
    data = get_dataset(name, data_dir, split, classes)
    arch = (meta or {}).get("arch") or {}
    for key, have in (("in_chans", data.in_chans), ("input_size", data.input_size)):
        if arch.get(key) is not None and arch[key] != have:
            raise UserError(f"the model expects {key} {arch[key]} but {name} images have {have}")
    num_classes = arch.get("num_classes")
    if num_classes is not None and data.num_classes != num_classes:
        raise UserError(f"the model has {num_classes} outputs but {name} ({split}) has {data.num_classes} "
                        "classes; pass --classes to match")
    if same and info.get("mean") and info.get("std"):
        data.mean, data.std = tuple(info["mean"]), tuple(info["std"])
    return data
