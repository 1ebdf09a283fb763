"""Where amc-mobile keeps what it writes, and how it writes it without losing anything.

- **Per-user directories** (platformdirs): tables a user measures, adaptations, the artefact cache and
  scratch exports live under :func:`user_data_dir` / :func:`user_cache_dir`, never in the installed
  package or a git checkout. ``AMC_MOBILE_HOME`` moves both (tests, CI, shared machines).
- **Atomic writes**: temp file in the same folder (unique name) + fsync + rename, so a kill or a
  full disk leaves either the old file or the new one, and no ``*.tmp`` behind.
- **One writer**: :class:`ExclusiveLock` is an ``fcntl`` lock on ``<target>.lock``; a second writer
  gets one line naming the holder's PID. The kernel drops the lock when its process dies, so a
  killed run never leaves a stale lock.
- **Names that become paths** are validated by :func:`safe_name` (no ``/``, no ``..``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from amc_mobile.errors import UserError

HOME_ENV = "AMC_MOBILE_HOME"
APP_NAME = "amc-mobile"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


# ---------------------------------------------------------------------------------------------------
# Per-user directories
# ---------------------------------------------------------------------------------------------------

def user_data_dir() -> Path:
    """Measured latency tables and adaptations: ``$AMC_MOBILE_HOME/data`` or the platform's data dir."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home) / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def user_cache_dir() -> Path:
    """Re-creatable files (exported models, scratch): ``$AMC_MOBILE_HOME/cache`` or the platform's."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home) / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def safe_name(name: str, what: str = "name") -> str:
    """``name`` if it can be one path component (letters, digits, ``._+-``), else a one-line error."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise UserError(f"invalid {what} {name!r}: use letters, digits, '.', '_', '+' or '-' "
                        "(no '/', no leading '.' or '-'), at most 128 characters")
    return name


def ensure_dir(path: str | Path, what: str = "output directory") -> Path:
    """Create ``path`` (and parents), turning 'is a file' / permission / disk errors into one line."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise UserError(f"cannot create {what} {p}: a file is in the way ({exc.filename})") from exc
    except NotADirectoryError as exc:
        raise UserError(f"cannot create {what} {p}: part of the path is a file") from exc
    except OSError as exc:
        raise UserError(f"cannot create {what} {p}: {exc.strerror or exc}") from exc
    return p


# ---------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------

def _os_error_line(path: Path, exc: OSError) -> UserError:
    if exc.errno == errno.ENOSPC:
        return UserError(f"cannot write {path}: no space left on device (nothing was replaced)")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return UserError(f"cannot write {path}: part of the path is a file")
    return UserError(f"cannot write {path}: {exc.strerror or exc}")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: unique temp file + fsync + rename; no temp file left behind."""
    p = Path(path)
    tmp_name = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, p)
        tmp_name = None
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(p.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except OSError as exc:
        raise _os_error_line(p, exc) from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    return p


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save`` through :func:`atomic_write_bytes` (checkpoints, search state)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed (plots are written once)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def atomic_write_figure(path: str | Path, fig: Any, dpi: int = 110) -> Path:
    """Save a matplotlib figure as a PNG through :func:`atomic_write_bytes` (closes the figure)."""
    return atomic_write_bytes(path, figure_png(fig, dpi))


def append_line(path: str | Path, line: str) -> None:
    """Append one complete line and fsync it (CSV rows of a resumable table). Caller holds the lock."""
    p = Path(path)
    if not line.endswith("\n"):
        line += "\n"
    try:
        with open(p, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise _os_error_line(p, exc) from exc


# ---------------------------------------------------------------------------------------------------
# One writer at a time
# ---------------------------------------------------------------------------------------------------

class ExclusiveLock:
    """Hold ``<target>.lock`` exclusively for the life of a ``with`` block (or until :meth:`release`).

    A second process asking for the same lock gets ``UserError`` naming the holder's PID and what it
    is doing (``what``). The lock is advisory (``fcntl.flock``) and vanishes with the holding process.
    """

    def __init__(self, target: str | Path, what: str = "this file"):
        t = Path(target)
        self.path = t if t.suffix == ".lock" else t.with_name(t.name + ".lock")
        self.what = what
        self._fh: IO[str] | None = None

    def acquire(self) -> ExclusiveLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's life
        except OSError as exc:
            raise _os_error_line(self.path, exc) from exc
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise _os_error_line(self.path, exc) from exc
            raise UserError(f"{self.what} is in use by another process (PID {holder}); "
                            f"wait for it to finish or stop it (lock: {self.path})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.seek(0)
                self._fh.truncate()
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def __enter__(self) -> ExclusiveLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked(target: str | Path, what: str = "this file") -> Iterator[ExclusiveLock]:
    """``with locked(path, "latency table X"):`` — shorthand for :class:`ExclusiveLock`."""
    lock = ExclusiveLock(target, what)
    with lock:
        yield lock
