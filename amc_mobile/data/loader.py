"""Fast batch iterator over in-memory uint8 tensors (no per-sample Python Dataset).

Normalisation and light augmentation (random crop with zero padding, horizontal flip) are done on
whole batches with tensor ops; the order and augmentation come from a seeded generator, so a run is
reproducible and a resumed epoch sees exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from amc_mobile.data.datasets import Dataset
from amc_mobile.errors import UserError


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Per-image random ``pad``-pixel-shift crop and horizontal flip of a uint8 batch (B, C, H, W)."""
    b, _, h, w = x.shape
    if pad > 0:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
        cols = (ox[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
        x = padded[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)
    if flip:
        mask = torch.rand(b, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


class TensorLoader:
    """Yields ``(images float32 normalised, labels int64)`` batches from a :class:`Dataset`."""

    def __init__(self, data: Dataset, batch_size: int = 256, shuffle: bool = False, augment: bool = False,
                 pad: int = 2, flip: bool = True, seed: int = 0, drop_last: bool = False,
                 channels_last: bool = True, cache: bool | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"--batch-size must be a positive integer, got {batch_size!r}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.pad = pad
        self.flip = flip
        self.seed = seed
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.epoch = 0
        # A fixed-order, unaugmented loader (evaluation) keeps its normalised batches: the search
        # evaluates the same validation images hundreds of times. Auto only below 64 MB of floats.
        fixed = not shuffle and not augment
        self.cache = fixed and data.images.numel() * 4 <= 64 * 2**20 if cache is None else cache and fixed
        self._batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        c = data.in_chans
        self._mean = torch.tensor(data.mean, dtype=torch.float32).view(1, c, 1, 1) * 255
        self._inv_std = 1.0 / (torch.tensor(data.std, dtype=torch.float32).view(1, c, 1, 1) * 255)

    def set_epoch(self, epoch: int) -> None:
        """Order/augmentation of epoch ``epoch`` depend only on (seed, epoch): exact resume."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self._mean) * self._inv_std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.cache:
            if self._batches is None:
                self._batches = list(self._batches_iter())
            return iter(self._batches)
        return self._batches_iter()

    def _batches_iter(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        n = len(self.data)
        order = torch.randperm(n, generator=gen) if self.shuffle else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            if order is None:
                x, y = self.data.images[sl], self.data.labels[sl]
            else:
                idx = order[sl]
                x, y = self.data.images[idx], self.data.labels[idx]
            if self.augment:
                x = random_crop_flip(x, self.pad, self.flip, gen)
            yield self.normalise(x), y
