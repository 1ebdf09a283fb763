"""The loopback ADB device: a threaded TCP server speaking the ADB protocol over a sandbox directory.

Wire format and handshake as adbd does it: the host sends CNXN; the device answers AUTH(TOKEN) with
20 random bytes; the host answers AUTH(SIGNATURE) (PKCS#1 v1.5 / SHA-1 DigestInfo over the token),
which is verified against every authorized public key, or AUTH(RSAPUBLICKEY) (the phone's "Allow USB
debugging?" prompt; ``accept_new_keys`` taps Allow or Deny, ``answer_prompt=False`` leaves it unanswered:
the device stays silent, as adbd does while the prompt is up); then CNXN with the device banner. Streams:
OPEN(local, 0, "service:...") -> OKAY(remote, local); data goes as WRTE, each acknowledged by OKAY;
CLSE ends a stream. Services: ``shell:``/``exec:`` (see :mod:`.shell`) and ``sync:`` (STAT, LIST,
SEND/DATA/DONE, RECV/DATA/DONE, QUIT; OKAY or FAIL).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from android_harness.loopback import protocol as P
from android_harness.loopback.benchmark import DropConnection
from android_harness.loopback.shell import FakeFS, MiniShell

PIXEL1_PROPS = {
    "ro.product.model": "Pixel",
    "ro.product.manufacturer": "Google",
    "ro.product.name": "sailfish",
    "ro.product.device": "sailfish",
    "ro.board.platform": "msm8996",
    "ro.hardware": "sailfish",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.version.release": "10",
    "ro.build.version.sdk": "29",
    "ro.build.fingerprint": "google/sailfish/sailfish:10/QP1A.191005.007.A3/5972272:user/release-keys",
    "ro.serialno": "FA6AL0301234",
}
PIXEL1_CPU_MAX_KHZ = (1593600, 1593600, 2150400, 2150400)  # Snapdragon 821: 2 little + 2 big Kryo


@dataclass
class Faults:
    """Fault-injection knobs. Counters fire on the next N occurrences, then the device behaves."""

    drop_push: int = 0            # drop the connection after the first DATA of a push (partial file left)
    drop_run: int = 0             # drop the connection while benchmark_model runs (after warm-up)
    drop_run_after: int = 0       # ... but first let this many runs finish
    truncate_output: int = 0      # benchmark_model prints only the first third of its output
    malformed_output: int = 0     # benchmark_model prints garbled numbers
    truncate_timings: int = 0     # benchmark_model's output stops inside the timings line's last number
    crash_run: int = 0            # benchmark_model dies with SIGSEGV (exit status 139) before printing results
    crash_run_after: int = 0      # ... but first let this many runs finish
    hot_skip_reads: int = 0       # thermal status reads that stay cool before the hot spell starts
    hot_reads: int = 0            # thermal status reads that report ``hot_status`` before cooling
    hot_status: int = 3           # Android thermal status while hot (3 = SEVERE)
    thermal_status: int = 0       # status otherwise
    slow_reply_s: float = 0.0     # delay before every packet the device sends
    sleep_scale: float = 1.0      # multiplies ``sleep`` on the device (tests shorten cool-downs)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, name: str) -> bool:
        with self._lock:
            left = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
                return True
            return False

    def current_thermal_status(self) -> int:
        if self.take("hot_skip_reads"):
            return self.thermal_status
        return self.hot_status if self.take("hot_reads") else self.thermal_status


class _Closed(Exception):
    pass


class _Conn:
    def __init__(self, sock: socket.socket, faults: Faults) -> None:
        self.sock = sock
        self.faults = faults
        self.pending: deque[tuple[bytes, int, int, bytes]] = deque()

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _Closed()
            buf += chunk
        return bytes(buf)

    def recv(self) -> tuple[bytes, int, int, bytes]:
        if self.pending:
            return self.pending.popleft()
        cmd, arg0, arg1, length, check = P.unpack_header(self._read_exact(P.HEADER.size))
        data = self._read_exact(length) if length else b""
        if sum(data) & 0xFFFFFFFF != check:
            raise _Closed()
        return cmd, arg0, arg1, data

    def send(self, command: bytes, arg0: int, arg1: int, data: bytes = b"") -> None:
        if self.faults.slow_reply_s:
            time.sleep(self.faults.slow_reply_s)
        self.sock.sendall(P.pack(command, arg0, arg1, data))

    def write(self, my_id: int, remote_id: int, data: bytes, chunk: int = 4096) -> bool:
        """WRTE ``data`` in chunks, each waiting for the host's OKAY; False if the host closed."""
        for i in range(0, len(data), chunk):
            self.send(b"WRTE", my_id, remote_id, data[i:i + chunk])
            while True:
                msg = self.recv()
                if msg[0] == b"OKAY" and msg[2] == my_id:
                    break
                if msg[0] == b"CLSE" and msg[2] == my_id:
                    return False
                self.pending.append(msg)
        return True


class LoopbackAdbDevice:
    """A fake phone on 127.0.0.1 (``port=0``: ephemeral) that real ADB clients can talk to."""

    def __init__(self, sandbox: str | Path, host: str = "127.0.0.1", port: int = 0, *,
                 require_auth: bool = True, authorized_keys: tuple[str, ...] = (),
                 accept_new_keys: bool = True, answer_prompt: bool = True, props: dict[str, str] | None = None,
                 cpu_max_khz: tuple[int, ...] = PIXEL1_CPU_MAX_KHZ, faults: Faults | None = None) -> None:
        self.fs = FakeFS(Path(sandbox))
        self.fs.root.mkdir(parents=True, exist_ok=True)
        self.host, self.port = host, port
        self.require_auth = require_auth
        self.authorized_keys: list[str] = list(authorized_keys)
        self.accept_new_keys = accept_new_keys
        self.answer_prompt = answer_prompt  # False: the "Allow USB debugging?" prompt is never answered
        self.props = dict(PIXEL1_PROPS if props is None else props)
        self.cpus = tuple(cpu_max_khz)
        self.faults = faults or Faults()
        self.auth_log: list[str] = []
        self.shell_log: list[str] = []
        self.last_affinity: int | None = None
        self.pushes: list[str] = []  # device paths of sync SENDs, in order
        self.benchmark_runs = 0  # benchmark_model invocations that loaded a model
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._stop = threading.Event()
        self._populate()

    # -- the fake device's file system ---------------------------------------------------------
    def _populate(self) -> None:
        fs = self.fs
        n = len(self.cpus)
        fs.write_text("/sys/devices/system/cpu/possible", f"0-{n - 1}\n")
        for i, khz in enumerate(self.cpus):
            base = f"/sys/devices/system/cpu/cpu{i}/cpufreq"
            fs.write_text(f"{base}/cpuinfo_max_freq", f"{khz}\n")
            fs.write_text(f"{base}/scaling_cur_freq", f"{khz}\n")
        fs.write_text("/proc/cpuinfo", "Processor\t: AArch64 Processor rev 2 (aarch64)\n"
                      + "".join(f"processor\t: {i}\nBogoMIPS\t: 38.40\n\n" for i in range(n))
                      + "Hardware\t: Qualcomm Technologies, Inc MSM8996pro\n")
        fs.write_text("/sys/class/thermal/thermal_zone0/temp", "31500\n")
        fs.host("/data/local/tmp").mkdir(parents=True, exist_ok=True)

    # -- life cycle ------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> LoopbackAdbDevice:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(8)
        sock.settimeout(0.2)
        self._sock = sock
        self.port = sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="loopback-adb-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        for c in list(self._conns):
            _hard_close(c)
        for t in self._threads:
            t.join(timeout=2.0)

    def __enter__(self) -> LoopbackAdbDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_all_connections(self) -> None:
        for c in list(self._conns):
            _hard_close(c)

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.add(client)
            t = threading.Thread(target=self._serve, args=(client,), name="loopback-adb-conn", daemon=True)
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()] + [t]

    # -- one host connection ---------------------------------------------------------------------
    def _serve(self, sock: socket.socket) -> None:
        conn = _Conn(sock, self.faults)
        try:
            if self._handshake(conn):
                self._session(conn)
        except (_Closed, OSError, DropConnection, ValueError, struct.error):
            pass
        finally:
            self._conns.discard(sock)
            _hard_close(sock)

    def _handshake(self, conn: _Conn) -> bool:
        cmd, _a0, _a1, _data = conn.recv()
        if cmd != b"CNXN":
            return False
        if self.require_auth:
            token = os.urandom(20)
            conn.send(b"AUTH", P.AUTH_TOKEN, 0, token)
            while True:
                cmd, a0, _a1, data = conn.recv()
                if cmd != b"AUTH":
                    return False
                if a0 == P.AUTH_SIGNATURE:
                    if any(P.verify_signature(P.decode_android_pubkey(k), token, data) for k in self.authorized_keys):
                        self.auth_log.append("signature-ok")
                        break
                    self.auth_log.append("signature-rejected")
                    token = os.urandom(20)
                    conn.send(b"AUTH", P.AUTH_TOKEN, 0, token)
                elif a0 == P.AUTH_RSAPUBLICKEY:
                    key = data.rstrip(b"\0").decode(errors="replace")
                    try:
                        P.decode_android_pubkey(key)
                    except (ValueError, struct.error):
                        self.auth_log.append("pubkey-invalid")
                        return False
                    if not self.answer_prompt:  # nobody taps the prompt: adbd stays silent
                        self.auth_log.append("pubkey-unanswered")
                        while not self._stop.is_set():
                            conn.recv()  # until the host gives up and closes
                        return False
                    if not self.accept_new_keys:
                        self.auth_log.append("pubkey-refused")
                        return False
                    self.authorized_keys.append(key)
                    self.auth_log.append("pubkey-accepted")
                    break
                else:
                    return False
        banner = ("device::" + "".join(f"{k}={self.props.get(k, '')};" for k in
                                       ("ro.product.name", "ro.product.model", "ro.product.device"))
                  + "features=cmd").encode()
        conn.send(b"CNXN", P.VERSION, P.MAXDATA, banner)
        return True

    def _session(self, conn: _Conn) -> None:
        next_id = 1
        syncs: dict[int, _SyncStream] = {}
        while not self._stop.is_set():
            cmd, a0, a1, data = conn.recv()
            if cmd == b"OPEN":
                my_id, next_id = next_id, next_id + 1
                dest = data.rstrip(b"\0").decode("utf-8", errors="replace")
                if dest.startswith(("shell:", "exec:")):
                    conn.send(b"OKAY", my_id, a0)
                    self._shell(conn, my_id, a0, dest.split(":", 1)[1])
                elif dest == "sync:":
                    conn.send(b"OKAY", my_id, a0)
                    syncs[my_id] = _SyncStream(self, conn, my_id, a0)
                else:
                    conn.send(b"CLSE", 0, a0)
            elif cmd == b"WRTE":
                stream = syncs.get(a1)
                conn.send(b"OKAY", a1, a0)
                if stream is not None:
                    if not stream.feed(data):
                        syncs.pop(a1, None)
                        conn.send(b"CLSE", a1, a0)
            elif cmd == b"CLSE":
                if syncs.pop(a1, None) is not None:
                    conn.send(b"CLSE", a1, a0)
            # OKAY for a stream we already finished, or anything else: ignored, as adbd does

    def _shell(self, conn: _Conn, my_id: int, remote_id: int, command: str) -> None:
        self.shell_log.append(command)
        chunks: list[str] = []
        try:
            if command.strip():
                MiniShell(self).run(command, chunks.append)
        except DropConnection:
            conn.write(my_id, remote_id, "".join(chunks).encode())
            raise
        if conn.write(my_id, remote_id, "".join(chunks).encode()):
            conn.send(b"CLSE", my_id, remote_id)


class _SyncStream:
    """The ``sync:`` service of one stream: requests may span WRTE packets, so they are buffered."""

    def __init__(self, device: LoopbackAdbDevice, conn: _Conn, my_id: int, remote_id: int) -> None:
        self.device, self.conn, self.my_id, self.remote_id = device, conn, my_id, remote_id
        self.buf = bytearray()
        self.sending: tuple[Path, Any] | None = None  # (host path, open file) during SEND

    def reply(self, data: bytes) -> None:
        if not self.conn.write(self.my_id, self.remote_id, data, chunk=64 * 1024 + 8):
            raise _Closed()

    def fail(self, message: str) -> None:
        self.reply(struct.pack("<2I", P.cmd_word(b"FAIL"), len(message)) + message.encode())

    def feed(self, data: bytes) -> bool:
        """Consume bytes; False when the host sent QUIT."""
        self.buf += data
        while len(self.buf) >= 8:
            ident, length = struct.unpack_from("<2I", self.buf)
            name = P.cmd_name(ident)
            if name == b"DONE":
                del self.buf[:8]
                self._done()
                continue
            if len(self.buf) < 8 + length:
                break
            payload = bytes(self.buf[8:8 + length])
            del self.buf[:8 + length]
            if name == b"QUIT":
                return False
            handler = {b"STAT": self._stat, b"LIST": self._list, b"RECV": self._recv,
                       b"SEND": self._send, b"DATA": self._data}.get(name)
            if handler is None:
                self.fail(f"unknown sync request {name!r}")
                return False
            handler(payload)
        return True

    def _path(self, payload: bytes) -> Path | None:
        try:
            return self.device.fs.host(payload.decode("utf-8"))
        except (PermissionError, UnicodeDecodeError):
            return None

    def _stat(self, payload: bytes) -> None:
        p = self._path(payload)
        if p is None or not p.exists():
            self.reply(struct.pack("<4I", P.cmd_word(b"STAT"), 0, 0, 0))
            return
        st = p.stat()
        self.reply(struct.pack("<4I", P.cmd_word(b"STAT"), st.st_mode, st.st_size, int(st.st_mtime)))

    def _list(self, payload: bytes) -> None:
        p = self._path(payload)
        out = bytearray()
        if p is not None and p.is_dir():
            for name in [".", "..", *sorted(os.listdir(p))]:
                st = (p / name).stat()
                raw = name.encode()
                out += struct.pack("<5I", P.cmd_word(b"DENT"), st.st_mode, st.st_size, int(st.st_mtime), len(raw)) + raw
        out += struct.pack("<5I", P.cmd_word(b"DONE"), 0, 0, 0, 0)
        self.reply(bytes(out))

    def _recv(self, payload: bytes) -> None:
        p = self._path(payload)
        if p is None or not p.is_file():
            self.fail("No such file or directory")
            return
        data = p.read_bytes()
        out = bytearray()
        for i in range(0, len(data), 64 * 1024):
            chunk = data[i:i + 64 * 1024]
            out += struct.pack("<2I", P.cmd_word(b"DATA"), len(chunk)) + chunk
        out += struct.pack("<2I", P.cmd_word(b"DONE"), 0)
        self.reply(bytes(out))

    def _send(self, payload: bytes) -> None:
        text = payload.decode("utf-8", errors="replace")
        path_text, _, mode_text = text.rpartition(",")
        p = self._path(path_text.encode())
        if p is None:
            self.fail(f"cannot write {path_text}: permission denied")
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        self.device.pushes.append(path_text)
        mode = int(mode_text) & 0o777 if mode_text.isdigit() else 0o644
        fh = open(p, "wb")  # noqa: SIM115  (closed in _done)
        os.chmod(p, mode)
        self.sending = (p, fh)

    def _data(self, payload: bytes) -> None:
        if self.sending is None:
            self.fail("DATA without SEND")
            return
        self.sending[1].write(payload)
        if self.device.faults.take("drop_push"):
            self.sending[1].close()  # a partial file stays behind, as on a phone
            raise DropConnection("fault: connection dropped mid-push")

    def _done(self) -> None:
        if self.sending is None:
            return
        self.sending[1].close()
        self.sending = None
        self.reply(struct.pack("<2I", P.cmd_word(b"OKAY"), 0))


def _hard_close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
