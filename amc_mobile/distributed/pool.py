"""Independent candidate evaluations on Ray workers: the ``map_fn`` the searches take.

``map_fn(fn, items) -> [fn(item) for item in items]``, in order, with at most ``workers`` calls at
a time, each in a Ray worker process with as many torch threads as the driver uses. ``fn`` goes to
the object store once (a search's evaluator holds the model and data). Results equal the serial ones
as long as ``fn`` is a pure function of its item (it seeds itself from the item, never from a shared
generator) — what the evaluators of the AMC, greedy and DDC searches guarantee — and the thread count
is the same: CPU kernels sum in an order that depends on it, and a borderline image can flip class.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from amc_mobile.distributed.cluster import LOCAL, ray_session
from amc_mobile.errors import UserError

T = TypeVar("T")
R = TypeVar("R")
MAX_RETRIES = 2  # per item, after Ray's own retry of a crashed worker
MapFn = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]


def serial_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """The serial ``map_fn`` (what ``--workers 1`` uses)."""
    return [fn(x) for x in items]


def _call(fn: Callable[[Any], Any], item: Any, threads: int) -> Any:
    from amc_mobile.threads import torch_threads

    with torch_threads(threads):
        return fn(item)


class RayMap:
    """A ``map_fn`` over an open Ray session (see :func:`ray_pool`)."""

    def __init__(self, ray: Any, workers: int, threads: int | None = None) -> None:
        import torch

        self.ray = ray
        self.workers = workers
        self.threads = int(threads or torch.get_num_threads())  # the serial run's: the same sums
        self._remote = ray.remote(_call).options(num_cpus=1, max_retries=1)
        self.calls = 0
        self.retries = 0  # evaluations run again after a lost input or worker (pure: same result)

    def __call__(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        ray = self.ray
        items = list(items)
        if not items:
            return []
        fn_ref = ray.put(fn)
        out: list[Any] = [None] * len(items)
        pending: dict[Any, int] = {}
        retried: dict[int, int] = {}
        queue = list(range(len(items)))
        lost = (ray.exceptions.ObjectLostError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)
        while queue or pending:
            while queue and len(pending) < self.workers:
                i = queue.pop(0)
                pending[self._remote.remote(fn_ref, items[i], self.threads)] = i
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    out[i] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
                    if isinstance(cause, UserError):
                        raise UserError(str(cause)) from None
                    if not (isinstance(exc, lost) or isinstance(cause, lost)) or retried.get(i, 0) >= MAX_RETRIES:
                        raise
                    # an input or the worker's host went away, not the work itself: the work is a pure
                    # function of its item, so run it again (with a fresh copy of fn in the object store)
                    retried[i] = retried.get(i, 0) + 1
                    fn_ref = ray.put(fn)
                    queue.insert(0, i)
        self.calls += len(items)
        self.retries += sum(retried.values())
        return out


@contextlib.contextmanager
def ray_pool(workers: int, address: str = LOCAL) -> Iterator[MapFn]:
    """A ``map_fn`` for ``workers`` parallel evaluations: serial for 1, else Ray (``local``: an
    embedded Ray with ``workers`` CPUs on this machine; ``HOST:PORT``: the cluster's CPUs)."""
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if workers == 1 and address == LOCAL:
        yield serial_map
        return
    with ray_session(address, num_cpus=workers) as ray:
        yield RayMap(ray, workers)
