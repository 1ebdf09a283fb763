"""adb transport over the pure-Python ``adb-shell`` client: keys, timeouts, retries, exit statuses.

* Keys: reuse ``~/.android/adbkey`` (the adb binary's key, already authorised on your phones) when
  present, else create one there (``$ANDROID_VENDOR_KEYS``-style override: ``key_path``).
* TCP (``adb tcpip 5555`` then host:port) or USB (``pip install amc-mobile[usb]``, by serial).
* ``adb-shell`` merges stdout and stderr and reports no exit code: :meth:`AdbTransport.shell` appends
  ``; echo __AMC_RC=$?`` and recovers the status from that marker (missing marker = truncated reply).
* Every operation retries with exponential back-off after a disconnect, reconnecting first.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from adb_shell import exceptions as adb_exc
from adb_shell.adb_device import AdbDevice
from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner
from adb_shell.transport.tcp_transport import TcpTransport

log = logging.getLogger(__name__)
T = TypeVar("T")
RC_MARKER = "__AMC_RC="
_RC_RE = re.compile(r"__AMC_RC=(\d+)\s*$")
DEFAULT_KEY = Path.home() / ".android" / "adbkey"

class ShellReplyTruncated(ConnectionError):
    """The shell reply ended without our exit-status marker: the connection died mid-command."""


# What a dropped or stalled connection looks like from adb-shell (plus our EOF detection).
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OSError, EOFError, struct.error, adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException,
    adb_exc.InvalidResponseError, adb_exc.InvalidChecksumError, adb_exc.InvalidCommandError,
    adb_exc.AdbConnectionError, adb_exc.PushFailedError, adb_exc.AdbCommandFailureException,
    adb_exc.UsbReadFailedError, adb_exc.UsbWriteFailedError, ShellReplyTruncated,
)


class AdbError(RuntimeError):
    """The device could not be reached or a command kept failing after all retries (one clear line)."""


@dataclass(frozen=True)
class ShellResult:
    output: str  # stdout and stderr, merged (adb's shell service does not separate them)
    rc: int

    def check(self, what: str) -> str:
        if self.rc != 0:
            tail = " | ".join(self.output.strip().splitlines()[-3:])[:300]
            raise AdbError(f"{what} failed on the device (exit status {self.rc}): {tail}")
        return self.output


@dataclass(frozen=True)
class AdbConfig:
    """How to reach one phone. ``address`` = "host:port" (TCP); otherwise ``serial`` over USB."""

    address: str | None = None
    serial: str | None = None
    key_path: str | None = None
    connect_timeout_s: float = 10.0   # TCP connect and per-packet wait during the handshake
    auth_timeout_s: float = 30.0      # time for a person to tap "Allow USB debugging" on first use
    read_timeout_s: float = 30.0      # longest silence tolerated for quick commands
    retries: int = 3                  # attempts after the first, on disconnects/timeouts
    backoff_s: float = 0.5            # first back-off; doubles each retry, capped at 8 s

    def describe(self) -> str:
        return self.address or (f"usb:{self.serial}" if self.serial else "usb:(first device)")


class _EofTcpTransport(TcpTransport):
    """adb-shell's TCP transport spins until its read timeout when the peer closes; fail fast instead."""

    def connect(self, transport_timeout_s: float | None) -> None:
        super().connect(transport_timeout_s)
        if self._connection is not None:  # header and payload go as two writes: avoid Nagle stalls
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        data = super().bulk_read(numbytes, transport_timeout_s)
        if not data:
            raise ConnectionResetError(f"{self._host}:{self._port} closed the connection")
        return data


def load_or_create_key(path: str | Path | None = None) -> PythonRSASigner:
    """The signer for ``path`` (default ``~/.android/adbkey``), creating key + ``.pub`` when absent."""
    key = Path(path).expanduser() if path else DEFAULT_KEY
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        keygen(str(key))
        os.chmod(key, 0o600)
        log.info("created adb key %s", key)
    elif not Path(str(key) + ".pub").exists():
        from adb_shell.auth.keygen import write_public_keyfile

        write_public_keyfile(str(key), str(key) + ".pub")
    try:
        return PythonRSASigner.FromRSAKeyPath(str(key))
    except (ValueError, OSError) as exc:
        raise AdbError(f"cannot read adb key {key}: {exc}") from exc


def quote(arg: str | Path) -> str:
    """Quote one word for the device's POSIX shell (every path/argument goes through this)."""
    return shlex.quote(str(arg))


def join(argv: list[str | Path]) -> str:
    return " ".join(quote(a) for a in argv)


class AdbTransport:
    """One phone. Thread-safe for one user at a time; open it once per device and reuse."""

    def __init__(self, config: AdbConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self._sleep = sleep
        self._device: AdbDevice | None = None
        self._signer: PythonRSASigner | None = None
        self.reconnects = 0

    # -- connection ----------------------------------------------------------------------------
    def _make_device(self) -> AdbDevice:
        cfg = self.config
        if cfg.address:
            host, _, port = cfg.address.rpartition(":")
            if not host or not port.isdigit():
                raise AdbError(f"bad device address '{cfg.address}' (expected host:port)")
            return AdbDevice(_EofTcpTransport(host, int(port)), default_transport_timeout_s=cfg.connect_timeout_s)
        try:
            from adb_shell.adb_device import AdbDeviceUsb
            return AdbDeviceUsb(serial=cfg.serial, default_transport_timeout_s=cfg.connect_timeout_s)
        except adb_exc.InvalidTransportError as exc:
            raise AdbError("USB needs libusb support: pip install 'amc-mobile[usb]' "
                           "(or connect over TCP: adb tcpip 5555, then address: PHONE_IP:5555)") from exc
        except adb_exc.UsbDeviceNotFoundError as exc:
            raise AdbError(f"no USB phone found{' with serial ' + cfg.serial if cfg.serial else ''}") from exc

    def connect(self) -> None:
        if self._signer is None:
            self._signer = load_or_create_key(self.config.key_path)
        self.close()
        dev = self._make_device()
        offered: list[bool] = []

        def on_key_offered(_io: object) -> None:
            # adb-shell calls this just before it sends our public key: the phone now shows its prompt
            offered.append(True)
            log.warning("%s: the phone does not know this computer's adb key yet; tap Allow on its 'Allow USB "
                        "debugging?' prompt (waiting up to %.0f s)", self.config.describe(), self.config.auth_timeout_s)

        try:
            ok = dev.connect(rsa_keys=[self._signer], transport_timeout_s=self.config.connect_timeout_s,
                             auth_timeout_s=self.config.auth_timeout_s,
                             read_timeout_s=self.config.connect_timeout_s, auth_callback=on_key_offered)
        except adb_exc.DeviceAuthError as exc:
            raise AdbError(f"{self.config.describe()}: authentication refused ({exc})") from exc
        except TRANSIENT_ERRORS as exc:
            _quiet_close(dev)
            if offered:  # the key was offered once: asking again would only stack prompts on the phone
                raise AdbError(
                    f"{self.config.describe()}: the phone did not accept this computer's adb key within "
                    f"auth_timeout_s={self.config.auth_timeout_s:g}s: unlock it, tap Allow on 'Allow USB "
                    f"debugging?' (tick 'Always allow from this computer') and run again") from exc
            raise ConnectionError(f"connect/authenticate: {_one_line(exc)} (if the phone shows 'Allow USB "
                                  f"debugging?', tap Allow; check the address/cable)") from exc
        except BaseException:
            _quiet_close(dev)
            raise
        if not ok:
            raise AdbError(f"{self.config.describe()}: connection refused")
        self._device = dev

    def close(self) -> None:
        if self._device is not None:
            _quiet_close(self._device)
            self._device = None

    def __enter__(self) -> AdbTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _with_retries(self, what: str, op: Callable[[AdbDevice], T]) -> T:
        cfg = self.config
        last: BaseException | None = None
        for attempt in range(cfg.retries + 1):
            if attempt:
                delay = min(cfg.backoff_s * 2 ** (attempt - 1), 8.0)
                log.warning("%s: %s failed (%s); retry %d/%d in %.1fs", cfg.describe(), what,
                            _one_line(last), attempt, cfg.retries, delay)
                self._sleep(delay)
                self.reconnects += 1
            try:
                if self._device is None:
                    self.connect()
                assert self._device is not None
                return op(self._device)
            except AdbError:
                raise
            except TRANSIENT_ERRORS as exc:
                last = exc
                self.close()
        raise AdbError(f"{cfg.describe()}: {what} failed after {cfg.retries + 1} attempts: {_one_line(last)}")

    # -- operations ----------------------------------------------------------------------------
    def shell(self, command: str, timeout_s: float | None = None, retry: bool = True) -> ShellResult:
        """Run ``command`` (already quoted!) in the device shell; output and exit status.

        ``timeout_s`` bounds the silence between output packets (use the expected run time for
        long commands). A reply without the exit marker raises :class:`ShellReplyTruncated`, retried.
        """
        t = self.config.read_timeout_s if timeout_s is None else timeout_s
        wrapped = f"{command}; echo {RC_MARKER}$?"

        def op(dev: AdbDevice) -> ShellResult:
            raw = dev.shell(wrapped, transport_timeout_s=t, read_timeout_s=t, timeout_s=None)
            return parse_shell_reply(raw)

        if not retry:
            if self._device is None:
                self.connect()
            assert self._device is not None
            try:
                return op(self._device)
            except TRANSIENT_ERRORS:
                self.close()
                raise
        return self._with_retries(f"shell '{command[:60]}'", op)

    def push(self, local: str | Path, remote: str, mode: int = 0o644) -> None:
        import stat as st

        def op(dev: AdbDevice) -> None:
            dev.push(str(local), remote, st_mode=st.S_IFREG | mode, read_timeout_s=self.config.read_timeout_s,
                     transport_timeout_s=self.config.read_timeout_s)

        self._with_retries(f"push {Path(local).name}", op)

    def pull(self, remote: str, local: str | Path) -> None:
        tmp = Path(str(local) + ".part")

        def op(dev: AdbDevice) -> None:
            dev.pull(remote, str(tmp), read_timeout_s=self.config.read_timeout_s,
                     transport_timeout_s=self.config.read_timeout_s)

        try:
            self._with_retries(f"pull {remote}", op)
        except AdbError:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(local)

    def stat(self, remote: str) -> tuple[int, int, int]:
        """(mode, size, mtime); all zero when the path does not exist (adb's convention)."""
        return self._with_retries(f"stat {remote}", lambda dev: tuple(dev.stat(remote)))  # type: ignore[return-value]

    def listdir(self, remote: str) -> list[str]:
        def op(dev: AdbDevice) -> list[str]:
            names = []
            for f in dev.list(remote, read_timeout_s=self.config.read_timeout_s):
                name = f.filename.decode() if isinstance(f.filename, (bytes, bytearray)) else str(f.filename)
                if name not in (".", ".."):
                    names.append(name)
            return names

        return self._with_retries(f"list {remote}", op)

    def sha256(self, remote: str) -> str | None:
        res = self.shell(f"sha256sum {quote(remote)} 2>/dev/null")
        if res.rc != 0:
            return None
        parts = res.output.split()
        return parts[0] if parts and re.fullmatch(r"[0-9a-f]{64}", parts[0]) else None


def parse_shell_reply(raw: str) -> ShellResult:
    """Split the merged output from the trailing ``__AMC_RC=N`` marker (CRLF of old adbd normalised)."""
    text = raw.replace("\r\n", "\n")
    m = _RC_RE.search(text)
    if m is None:
        tail = text.strip().splitlines()[-1:] or ["<no output>"]
        raise ShellReplyTruncated(f"shell reply ended without exit status (last line: {tail[0][:120]!r})")
    return ShellResult(output=text[:m.start()], rc=int(m.group(1)))


def _quiet_close(dev: Any) -> None:
    try:
        dev.close()
    except (OSError, AttributeError):
        pass


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"
