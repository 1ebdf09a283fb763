"""Torch thread count for a block of work.

Small tensor work (pruning plans, least-squares solves, DDPG updates, export tracing) runs on ONE
torch thread: on a shared 2-core machine a second thread mostly adds contention (measured 3-15x
slower), and it must not spin next to a runtime that is being timed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int | None = 1) -> Iterator[None]:
    """Run the block with ``n`` torch threads (``None``: leave as is); restore the count after."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
