"""A small, safe POSIX-like shell for the loopback device: it never hands a string to a host shell.

It splits words the way ``sh`` does (single/double quotes, backslashes, ``;`` ``&&`` ``||`` and
redirections are operators only when unquoted, ``$?``/``$(...)``/backticks expand unquoted or in double
quotes), so an unquoted ``;`` in a file name *would* run a second command here, as on a phone. Commands
are Python builtins over a sandbox directory that stands for the device's file system.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from android_harness.loopback.server import LoopbackAdbDevice

Write = Callable[[str], None]
OPERATORS = (";;", "&&", "||", "2>>", "2>&", ">>", ">&", "2>", ";", "&", "|", ">", "<", "\n")


class ShellSyntaxError(ValueError):
    pass


@dataclass
class Word:
    """A word as segments: ("lit", text) | ("status", "") | ("subst", script); expanded at run time."""

    parts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, kind: str, text: str) -> None:
        if kind == "lit" and self.parts and self.parts[-1][0] == "lit":
            self.parts[-1] = ("lit", self.parts[-1][1] + text)
        else:
            self.parts.append((kind, text))


@dataclass(frozen=True)
class Op:
    text: str


def _find_close_paren(s: str, i: int) -> int:
    """Index of the ``)`` closing the ``$(`` whose content starts at ``i`` (quotes respected)."""
    depth, quote = 1, ""
    while i < len(s):
        c = s[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"':
                i += 1
        elif c in "'\"":
            quote = c
        elif c == "\\":
            i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ShellSyntaxError("unterminated $(")


def tokenize(s: str) -> list[Word | Op]:
    """Split ``s`` into words and operators like a POSIX shell's lexer (no globbing, no ``$VAR``)."""
    tokens: list[Word | Op] = []
    word: Word | None = None
    i, n = 0, len(s)

    def flush() -> None:
        nonlocal word
        if word is not None:
            tokens.append(word)
            word = None

    def cur() -> Word:
        nonlocal word
        if word is None:
            word = Word()
        return word

    def dollar(j: int) -> int:
        """Handle ``$`` at s[j]; return the next index."""
        if s.startswith("$?", j):
            cur().add("status", "")
            return j + 2
        if s.startswith("$(", j):
            end = _find_close_paren(s, j + 2)
            cur().add("subst", s[j + 2:end])
            return end + 1
        cur().add("lit", "$")
        return j + 1

    while i < n:
        c = s[i]
        if c == "\\":
            if i + 1 < n and s[i + 1] != "\n":
                cur().add("lit", s[i + 1])
            i += 2
        elif c == "'":
            end = s.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated quoted string")
            cur().add("lit", s[i + 1:end])
            i = end + 1
        elif c == '"':
            w = cur()
            i += 1
            while True:
                if i >= n:
                    raise ShellSyntaxError("unterminated quoted string")
                d = s[i]
                if d == '"':
                    i += 1
                    break
                if d == "\\" and i + 1 < n and s[i + 1] in '$`"\\\n':
                    w.add("lit", s[i + 1])
                    i += 2
                elif d == "$":
                    i = dollar(i)
                elif d == "`":
                    end = s.find("`", i + 1)
                    if end < 0:
                        raise ShellSyntaxError("unterminated `")
                    w.add("subst", s[i + 1:end])
                    i = end + 1
                else:
                    w.add("lit", d)
                    i += 1
        elif c == "$":
            i = dollar(i)
        elif c == "`":
            end = s.find("`", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated `")
            cur().add("subst", s[i + 1:end])
            i = end + 1
        elif c == "#" and word is None:
            while i < n and s[i] != "\n":
                i += 1
        elif c in " \t":
            flush()
            i += 1
        else:
            # "2>" and "2>&" only when the 2 stands alone as an unquoted word start
            if c == "2" and word is None and s.startswith(("2>", "2>>"), i):
                op = "2>>" if s.startswith("2>>", i) else ("2>&" if s.startswith("2>&", i) else "2>")
                tokens.append(Op(op))
                i += len(op)
                continue
            for op in OPERATORS:
                if op[0] != "2" and s.startswith(op, i):
                    flush()
                    tokens.append(Op(op))
                    i += len(op)
                    break
            else:
                cur().add("lit", c)
                i += 1
    flush()
    return tokens


@dataclass
class Command:
    words: list[Word]
    redirects: list[tuple[str, Word]]


def parse(tokens: list[Word | Op]) -> list[tuple[str, Command]]:
    """A flat and-or list: [(connector, command)], connector of the first being ';'."""
    out: list[tuple[str, Command]] = []
    connector = ";"
    cmd = Command([], [])
    it = iter(range(len(tokens)))
    for idx in it:
        t = tokens[idx]
        if isinstance(t, Word):
            cmd.words.append(t)
            continue
        if t.text in (">", ">>", "2>", "2>>", ">&", "2>&", "<"):
            nxt = tokens[idx + 1] if idx + 1 < len(tokens) else None
            if not isinstance(nxt, Word):
                raise ShellSyntaxError(f"syntax error: '{t.text}' unexpected")
            cmd.redirects.append((t.text, nxt))
            next(it, None)
            continue
        if t.text in ("|", "&", ";;"):
            raise ShellSyntaxError(f"'{t.text}' is not supported by the loopback shell")
        if cmd.words or cmd.redirects:
            out.append((connector, cmd))
        elif t.text in ("&&", "||"):
            raise ShellSyntaxError(f"syntax error: '{t.text}' unexpected")
        connector = ";" if t.text == "\n" else t.text
        cmd = Command([], [])
    if cmd.words or cmd.redirects:
        out.append((connector, cmd))
    return out


class ExitShell(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class FakeFS:
    """Device paths (absolute, POSIX) mapped into a sandbox directory; nothing can escape it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def host(self, device_path: str, cwd: str = "/") -> Path:
        norm = posixpath.normpath(posixpath.join(cwd, device_path))
        p = (self.root / norm.lstrip("/")).resolve()
        if p != self.root and self.root not in p.parents:
            raise PermissionError(device_path)
        return p

    def write_text(self, device_path: str, text: str, mode: int = 0o644) -> None:
        p = self.host(device_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)


class MiniShell:
    """Runs command strings for one ``shell:`` service call; ``out`` receives merged stdout+stderr."""

    def __init__(self, device: LoopbackAdbDevice) -> None:
        self.device = device
        self.fs: FakeFS = device.fs
        self.status = 0
        self.cwd = "/"

    # -- driver --------------------------------------------------------------------------------
    def run(self, script: str, out: Write, err: Write | None = None) -> int:
        err = err or out
        try:
            program = parse(tokenize(script))
        except ShellSyntaxError as exc:
            err(f"/system/bin/sh: {exc}\n")
            self.status = 2
            return 2
        try:
            for connector, cmd in program:
                if connector == "&&" and self.status != 0:
                    continue
                if connector == "||" and self.status == 0:
                    continue
                self.status = self._run_command(cmd, out, err)
        except ExitShell as exc:
            self.status = exc.code
        return self.status

    def _expand(self, word: Word) -> str:
        text = []
        for kind, value in word.parts:
            if kind == "lit":
                text.append(value)
            elif kind == "status":
                text.append(str(self.status))
            else:  # command substitution: run it, capture its stdout, strip trailing newlines
                captured: list[str] = []
                sub = MiniShell(self.device)
                sub.cwd = self.cwd
                sub.run(value, captured.append, lambda _s: None)
                text.append("".join(captured).rstrip("\n"))
        return "".join(text)

    def _run_command(self, cmd: Command, out: Write, err: Write) -> int:
        argv = [self._expand(w) for w in cmd.words]
        files = []
        try:
            for op, target_word in cmd.redirects:
                target = self._expand(target_word)
                if op in (">&", "2>&"):
                    if target not in ("1", "2"):
                        err(f"/system/bin/sh: {target}: bad file descriptor\n")
                        return 1
                    if op == "2>&" and target == "1":
                        err = out
                    elif op == ">&" and target == "2":
                        out = err
                    continue
                if op == "<":
                    continue
                if target == "/dev/null":
                    sink: Write = lambda _s: None  # noqa: E731
                else:
                    try:
                        path = self.fs.host(target, self.cwd)
                        fh = open(path, "a" if op.endswith(">>") else "w")  # noqa: SIM115
                    except (OSError, PermissionError):
                        err(f"/system/bin/sh: can't create {target}: No such file or directory\n")
                        return 1
                    files.append(fh)
                    sink = _file_writer(fh)
                if op.startswith("2"):
                    err = sink
                else:
                    out = sink
            if not argv:
                return 0
            return self.exec(argv, out, err)
        finally:
            for fh in files:
                fh.close()

    # -- commands ------------------------------------------------------------------------------
    def exec(self, argv: list[str], out: Write, err: Write) -> int:
        name = argv[0]
        builtin = getattr(self, "cmd_" + name.replace("[", "test").replace("-", "_"), None)
        if builtin is not None and "/" not in name:
            return builtin(argv[1:], out, err)
        if "/" in name:
            try:
                path = self.fs.host(name, self.cwd)
            except PermissionError:
                path = None
            if path is None or not path.is_file():
                err(f"/system/bin/sh: {name}: not found\n")
                return 127
            if not path.stat().st_mode & 0o111:
                err(f"/system/bin/sh: {name}: can't execute: Permission denied\n")
                return 126
            if posixpath.basename(name).startswith("benchmark_model"):
                from android_harness.loopback.benchmark import benchmark_model

                return benchmark_model(self.device, argv, out)
            head = path.read_bytes()[:64]
            if head.startswith(b"#!"):
                return self.cmd_sh([name, *argv[1:]], out, err)
            err(f"/system/bin/sh: {name}: can't execute: Exec format error\n")
            return 126
        err(f"/system/bin/sh: {name}: not found\n")
        return 127

    def _p(self, path: str) -> Path:
        return self.fs.host(path, self.cwd)

    def cmd_true(self, args: list[str], out: Write, err: Write) -> int:
        return 0

    def cmd_false(self, args: list[str], out: Write, err: Write) -> int:
        return 1

    def cmd_exit(self, args: list[str], out: Write, err: Write) -> int:
        raise ExitShell(int(args[0]) if args else self.status)

    def cmd_echo(self, args: list[str], out: Write, err: Write) -> int:
        newline = True
        if args and args[0] == "-n":
            newline, args = False, args[1:]
        out(" ".join(args) + ("\n" if newline else ""))
        return 0

    def cmd_cat(self, args: list[str], out: Write, err: Write) -> int:
        rc = 0
        for a in args:
            try:
                out(self._p(a).read_text(errors="replace"))
            except (OSError, PermissionError):
                err(f"cat: {a}: No such file or directory\n")
                rc = 1
        return rc

    def cmd_ls(self, args: list[str], out: Write, err: Write) -> int:
        paths = [a for a in args if not a.startswith("-")] or [self.cwd]
        rc = 0
        for a in paths:
            try:
                p = self._p(a)
            except PermissionError:
                p = None
            if p is None or not p.exists():
                err(f"ls: {a}: No such file or directory\n")
                rc = 1
            elif p.is_dir():
                for name in sorted(os.listdir(p)):
                    out(name + "\n")
            else:
                out(a + "\n")
        return rc

    def cmd_rm(self, args: list[str], out: Write, err: Write) -> int:
        flags = "".join(a[1:] for a in args if a.startswith("-"))
        rc = 0
        for a in (a for a in args if not a.startswith("-")):
            p = self._p(a)
            if p == self.fs.root:
                err("rm: refusing to remove '/'\n")
                rc = 1
            elif p.is_dir() and "r" in flags:
                shutil.rmtree(p)
            elif p.is_file():
                p.unlink()
            elif "f" not in flags:
                err(f"rm: {a}: No such file or directory\n")
                rc = 1
        return rc

    def cmd_mkdir(self, args: list[str], out: Write, err: Write) -> int:
        parents = "-p" in args
        rc = 0
        for a in (a for a in args if not a.startswith("-")):
            try:
                self._p(a).mkdir(parents=parents, exist_ok=parents)
            except FileExistsError:
                err(f"mkdir: '{a}': File exists\n")
                rc = 1
            except FileNotFoundError:
                err(f"mkdir: '{a}': No such file or directory\n")
                rc = 1
        return rc

    def cmd_touch(self, args: list[str], out: Write, err: Write) -> int:
        for a in args:
            p = self._p(a)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
        return 0

    def cmd_mv(self, args: list[str], out: Write, err: Write) -> int:
        if len(args) != 2:
            err("mv: needs 2 arguments\n")
            return 1
        self._p(args[0]).replace(self._p(args[1]))
        return 0

    def cmd_chmod(self, args: list[str], out: Write, err: Write) -> int:
        if len(args) < 2:
            err("chmod: needs MODE FILE\n")
            return 1
        mode_text, rc = args[0], 0
        for a in args[1:]:
            p = self._p(a)
            if not p.exists():
                err(f"chmod: {a}: No such file or directory\n")
                rc = 1
                continue
            mode = p.stat().st_mode
            if re.fullmatch(r"[0-7]{3,4}", mode_text):
                p.chmod(int(mode_text, 8))
            elif mode_text in ("+x", "a+x", "u+x"):
                p.chmod(stat.S_IMODE(mode) | 0o111)
            else:
                err(f"chmod: bad mode '{mode_text}'\n")
                return 1
        return rc

    def cmd_sha256sum(self, args: list[str], out: Write, err: Write) -> int:
        rc = 0
        for a in args:
            try:
                digest = hashlib.sha256(self._p(a).read_bytes()).hexdigest()
                out(f"{digest}  {a}\n")
            except (OSError, PermissionError):
                err(f"sha256sum: {a}: No such file or directory\n")
                rc = 1
        return rc

    def cmd_sleep(self, args: list[str], out: Write, err: Write) -> int:
        time.sleep(min(float(args[0]) if args else 0.0, 30.0) * self.device.faults.sleep_scale)
        return 0

    def cmd_getprop(self, args: list[str], out: Write, err: Write) -> int:
        props = self.device.props
        if args:
            out(props.get(args[0], args[1] if len(args) > 1 else "") + "\n")
        else:
            for k in sorted(props):
                out(f"[{k}]: [{props[k]}]\n")
        return 0

    def cmd_dumpsys(self, args: list[str], out: Write, err: Write) -> int:
        if args[:1] != ["thermalservice"]:
            err(f"Can't find service: {args[0] if args else ''}\n")
            return 0
        status = self.device.faults.current_thermal_status()
        temp = 31.5 + 12.0 * status
        out("IsStatusOverride: false\nThermalEventListeners:\n\tcallbacks: 1\n\tkilled: false\n"
            "\tbroadcasts count: -1\nThermalStatusListeners:\n\tcallbacks: 1\n\tkilled: false\n"
            f"\tbroadcasts count: -1\nThermal Status: {status}\nCached temperatures:\n"
            f"\tTemperature{{mValue={temp:.1f}, mType=0, mName=cpu0-silver-usr, mStatus={status}}}\n"
            "HAL Ready: true\n")
        return 0

    def cmd_taskset(self, args: list[str], out: Write, err: Write) -> int:
        if len(args) < 2:
            err("usage: taskset [-p] [mask] [PID | cmd [args...]]\n")
            return 1
        try:
            mask = int(args[0], 16)
        except ValueError:
            err(f"taskset: bad mask '{args[0]}'\n")
            return 1
        if mask == 0 or mask >> len(self.device.cpus):
            err("taskset: sched_setaffinity: Invalid argument\n")
            return 1
        self.device.last_affinity = mask
        return self.exec(args[1:], out, err)

    def cmd_test(self, args: list[str], out: Write, err: Write) -> int:
        if args and args[-1] == "]":
            args = args[:-1]
        if len(args) == 2 and args[0] in ("-f", "-e", "-d", "-s", "-x"):
            try:
                p = self._p(args[1])
            except PermissionError:
                return 1
            ok = {"-f": p.is_file(), "-e": p.exists(), "-d": p.is_dir(),
                  "-s": p.is_file() and p.stat().st_size > 0,
                  "-x": p.exists() and bool(p.stat().st_mode & 0o111)}[args[0]]
            return 0 if ok else 1
        if len(args) == 3 and args[1] in ("=", "!="):
            return 0 if (args[0] == args[2]) == (args[1] == "=") else 1
        if len(args) == 1:
            return 0 if args[0] else 1
        err("test: unsupported expression\n")
        return 2

    def cmd_sh(self, args: list[str], out: Write, err: Write) -> int:
        sub = MiniShell(self.device)
        sub.cwd = self.cwd
        if args[:1] == ["-c"] and len(args) >= 2:
            return sub.run(args[1], out, err)
        if args:
            try:
                script = self._p(args[0]).read_text()
            except (OSError, PermissionError):
                err(f"sh: {args[0]}: No such file or directory\n")
                return 127
            return sub.run(script, out, err)
        return 0


def _file_writer(fh) -> Write:  # type: ignore[no-untyped-def]
    def write(s: str) -> None:
        fh.write(s)
        fh.flush()

    return write
