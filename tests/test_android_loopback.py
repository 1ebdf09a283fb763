"""The loopback ADB stand-in: real protocol with the real adb-shell client, and its shell's semantics."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest
from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner

from android_harness.loopback import LoopbackAdbDevice
from android_harness.loopback import protocol as P
from android_harness.transport import AdbConfig, AdbError, AdbTransport, load_or_create_key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    keygen(str(d / "adbkey"))
    keygen(str(d / "otherkey"))
    return d / "adbkey", d / "otherkey"


@pytest.fixture()
def device(tmp_path: Path):  # type: ignore[no-untyped-def]
    with LoopbackAdbDevice(tmp_path / "sandbox") as dev:
        yield dev


def transport(dev: LoopbackAdbDevice, key: Path, **kw: object) -> AdbTransport:
    cfg = AdbConfig(address=dev.address, key_path=str(key), connect_timeout_s=3, auth_timeout_s=3,
                    read_timeout_s=5, backoff_s=0.05, **kw)  # type: ignore[arg-type]
    return AdbTransport(cfg)


def test_wire_format_matches_adb_shell() -> None:
    from adb_shell.adb_message import AdbMessage

    ours = P.pack(b"OPEN", 1, 0, b"shell:ls\0")
    theirs = AdbMessage(b"OPEN", 1, 0, b"shell:ls\0")
    assert ours == theirs.pack() + b"shell:ls\0"
    assert P.unpack_header(ours[:24])[:4] == (b"OPEN", 1, 0, 9)
    with pytest.raises(ValueError, match="magic"):
        P.unpack_header(struct.pack("<6I", P.cmd_word(b"OPEN"), 0, 0, 0, 0, 0))


def test_signature_checked_against_adb_public_key_format(keys: tuple[Path, Path]) -> None:
    key, other = keys
    signer = PythonRSASigner.FromRSAKeyPath(str(key))
    pub = P.decode_android_pubkey(signer.GetPublicKey())
    token = os.urandom(20)
    assert P.verify_signature(pub, token, signer.Sign(token))
    assert not P.verify_signature(pub, os.urandom(20), signer.Sign(token))
    assert not P.verify_signature(pub, token, PythonRSASigner.FromRSAKeyPath(str(other)).Sign(token))


def test_auth_new_key_then_signature(device: LoopbackAdbDevice, keys: tuple[Path, Path]) -> None:
    key, _ = keys
    signer = PythonRSASigner.FromRSAKeyPath(str(key))
    for _ in range(2):
        adb = AdbDeviceTcp("127.0.0.1", device.port, default_transport_timeout_s=3)
        assert adb.connect(rsa_keys=[signer], auth_timeout_s=3)
        assert adb.shell("getprop ro.product.model").strip() == "Pixel"
        adb.close()
    # first: unknown key -> signature rejected, public key accepted ("Allow"); then the signature verifies
    assert device.auth_log == ["signature-rejected", "pubkey-accepted", "signature-ok"]


def test_auth_refused_is_a_clear_error(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, other = keys
    authorized = PythonRSASigner.FromRSAKeyPath(str(other)).GetPublicKey()
    with LoopbackAdbDevice(tmp_path / "sb", authorized_keys=(authorized,), accept_new_keys=False) as dev:
        with pytest.raises(AdbError, match="did not accept this computer's adb key"):
            transport(dev, key, retries=2).shell("echo hi")
        assert dev.auth_log == ["signature-rejected", "pubkey-refused"]  # offered once, not once per retry
        assert transport(dev, other).shell("echo hi").output == "hi\n"
        assert dev.auth_log[-1] == "signature-ok"


def test_unanswered_prompt_offers_the_key_once_then_one_line(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """Nobody taps "Allow USB debugging?": one prompt, ``auth_timeout_s`` of waiting, one line saying so."""
    key, _ = keys
    with LoopbackAdbDevice(tmp_path / "sb", answer_prompt=False) as dev:
        t = AdbTransport(AdbConfig(address=dev.address, key_path=str(key), connect_timeout_s=3, auth_timeout_s=1.0,
                                   read_timeout_s=5, retries=3, backoff_s=0.05))
        t0 = time.monotonic()
        with pytest.raises(AdbError) as info:
            t.shell("echo hi")
        took = time.monotonic() - t0
    assert dev.auth_log == ["signature-rejected", "pubkey-unanswered"]  # one prompt on the phone, not four
    assert 0.9 <= took < 3.9  # waited for the one prompt; four prompts (retries=3) would take >= 4 s
    msg = str(info.value)
    assert "\n" not in msg and "Allow" in msg and "auth_timeout_s=1s" in msg


def test_key_is_created_when_absent(tmp_path: Path) -> None:
    signer = load_or_create_key(tmp_path / "android" / "adbkey")
    assert (tmp_path / "android" / "adbkey.pub").read_text().startswith(signer.GetPublicKey()[:20])
    P.decode_android_pubkey(signer.GetPublicKey())


def test_sync_push_stat_list_pull_round_trip(device: LoopbackAdbDevice, keys: tuple[Path, Path], tmp_path: Path) -> None:
    payload = os.urandom(300_000)  # several DATA chunks and WRTE packets
    (tmp_path / "blob.bin").write_bytes(payload)
    with transport(device, keys[0]) as t:
        t.push(tmp_path / "blob.bin", "/data/local/tmp/amc/blob.bin")
        mode, size, _ = t.stat("/data/local/tmp/amc/blob.bin")
        assert size == len(payload) and mode & 0o170000 == 0o100000
        assert t.stat("/data/local/tmp/amc/missing") == (0, 0, 0)
        assert t.listdir("/data/local/tmp/amc") == ["blob.bin"]
        t.pull("/data/local/tmp/amc/blob.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == payload
        assert device.fs.host("/data/local/tmp/amc/blob.bin").read_bytes() == payload
        with pytest.raises(AdbError):
            t.pull("/data/local/tmp/amc/missing", tmp_path / "x")


def test_exit_status_is_recovered(device: LoopbackAdbDevice, keys: tuple[Path, Path]) -> None:
    with transport(device, keys[0]) as t:
        assert t.shell("true").rc == 0
        assert t.shell("false").rc == 1
        res = t.shell("cat /nope")
        assert res.rc == 1 and "No such file" in res.output
        assert t.shell("/data/local/tmp/nothing-here").rc == 127
        assert t.shell("false || echo recovered").output == "recovered\n"


def test_unquoted_metacharacters_do_run_commands(device: LoopbackAdbDevice, keys: tuple[Path, Path]) -> None:
    """The stand-in splits words like sh: this is what makes the harness's quoting matter."""
    root = device.fs.root
    with transport(device, keys[0]) as t:
        t.shell("echo a; touch /data/local/tmp/SEMI")
        t.shell("echo $(touch /data/local/tmp/SUBST)")
        t.shell('echo "`touch /data/local/tmp/BACKTICK`"')
        assert (root / "data/local/tmp/SEMI").exists()
        assert (root / "data/local/tmp/SUBST").exists()
        assert (root / "data/local/tmp/BACKTICK").exists()
        quoted = t.shell("echo 'a; touch /data/local/tmp/Q1' '$(touch /data/local/tmp/Q2)'")
        assert quoted.output == "a; touch /data/local/tmp/Q1 $(touch /data/local/tmp/Q2)\n"
        assert not (root / "data/local/tmp/Q1").exists() and not (root / "data/local/tmp/Q2").exists()


def test_sandbox_cannot_be_escaped(device: LoopbackAdbDevice, keys: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    with transport(device, keys[0]) as t:
        res = t.shell("cat /../../outside.txt ../../../outside.txt")
        assert "secret" not in res.output and res.rc == 1
        assert t.shell("cat /proc/cpuinfo").output.rstrip().endswith("MSM8996pro")
