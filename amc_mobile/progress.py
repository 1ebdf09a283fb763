"""One progress display for every long job (train, fine-tune, search, profile, farm), built on rich.

On a terminal it is a live bar (description, done/total, rate, remaining time, a status text); when
stderr is a file or a pipe (CI, ``nohup``, a log) it writes one plain line every ``interval_s`` seconds
(and a last one at the end if it wrote any) instead of a bar's control characters.

Usage::

    with progress_bar(total=steps, desc="epoch 1/8", unit="step") as bar:
        for ...:
            bar.update(1)
            bar.set_status(f"loss {loss:.3f}")

The calls mirror tqdm's (``update``, ``set_postfix``, ``set_postfix_str``, ``close``) so code moving off
tqdm changes only its constructor.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO, Any

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar:
    """A progress display for ``total`` units (``None`` = unknown); see the module docstring."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", initial: int = 0,
                 enabled: bool = True, interval_s: float = 30.0, stream: IO[str] | None = None,
                 tty: bool | None = None):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.enabled = enabled
        self.interval_s = interval_s
        self.status = ""
        self._initial = initial
        self._stream: IO[str] = stream if stream is not None else sys.stderr
        self._t0 = time.monotonic()
        self._last_line = self._t0
        self._closed = False
        self._lines = 0
        self._last_n = initial
        self._rich: Any = None
        self._task: Any = None
        is_tty = self._stream.isatty() if tty is None else tty
        if enabled and is_tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                                  console=Console(file=self._stream), transient=False)
            self._rich.start()
            self._task = self._rich.add_task(desc, total=total, completed=initial, status="")

    # tqdm-compatible calls -------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        """Advance by ``n`` units."""
        self.n += n
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.n)
        elif time.monotonic() - self._last_line >= self.interval_s:
            self._write_line()

    def set_status(self, text: str) -> None:
        """Short text shown after the bar (loss, best reward...)."""
        self.status = text
        if self._rich is not None:
            self._rich.update(self._task, status=text)

    def set_postfix(self, **fields: Any) -> None:
        self.set_status(", ".join(f"{k}={v}" for k, v in fields.items()))

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.set_status(text)

    def set_total(self, total: int | None) -> None:
        """Change the total once it is known (e.g. after resuming a partially done job)."""
        self.total = total
        if self._rich is not None:
            self._rich.update(self._task, total=total)

    def close(self) -> None:
        """Stop the bar (a final line when not on a terminal). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._rich is not None:
            self._rich.stop()
        elif self.enabled and self._lines and self.n != self._last_n:  # a reported job gets its final count
            self._write_line()

    # helpers ---------------------------------------------------------------------------------------
    def line(self) -> str:
        """The plain-text progress line (what a non-terminal sees)."""
        elapsed = time.monotonic() - self._t0
        done = self.n - self._initial
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        eta = ""
        if self.total is not None and rate > 0 and self.n < self.total:
            eta = f", ~{(self.total - self.n) / rate:.0f} s left"
        status = f" {self.status}" if self.status else ""
        return f"{self.desc}: {count} {self.unit} ({elapsed:.0f} s, {rate:.2f} {self.unit}/s{eta}){status}"

    def _write_line(self) -> None:
        self._last_line = time.monotonic()
        self._lines += 1
        self._last_n = self.n
        try:
            self._stream.write(self.line() + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken log stream must not stop the job
            pass

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def progress_bar(total: int | None, desc: str = "", unit: str = "it", initial: int = 0, enabled: bool = True,
                 interval_s: float = 30.0, stream: IO[str] | None = None) -> ProgressBar:
    """A :class:`ProgressBar`: a rich bar on a terminal, a line every ``interval_s`` s otherwise."""
    return ProgressBar(total, desc, unit=unit, initial=initial, enabled=enabled, interval_s=interval_s,
                       stream=stream)
