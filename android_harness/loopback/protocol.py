"""ADB wire format (as in adb's protocol.txt / adb-shell): 24-byte header + payload, and RSA auth."""

from __future__ import annotations

import base64
import struct

HEADER = struct.Struct("<6I")
VERSION = 0x01000001
MAXDATA = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
# ASN.1 DigestInfo prefix for SHA-1 (PKCS#1 v1.5): adb signs the 20-byte token as if it were a digest.
SHA1_PREFIX = bytes.fromhex("3021300906052b0e03021a05000414")
ANDROID_PUBKEY = struct.Struct("<LL256s256sL")


def cmd_word(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


def cmd_name(word: int) -> bytes:
    return struct.pack("<I", word)


def pack(command: bytes, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    word = cmd_word(command)
    return HEADER.pack(word, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, word ^ 0xFFFFFFFF) + data


def unpack_header(raw: bytes) -> tuple[bytes, int, int, int, int]:
    """(command, arg0, arg1, data_length, checksum); ValueError when the magic is wrong."""
    word, arg0, arg1, length, check, magic = HEADER.unpack(raw)
    if magic != word ^ 0xFFFFFFFF:
        raise ValueError(f"bad ADB magic for command {cmd_name(word)!r}")
    return cmd_name(word), arg0, arg1, length, check


def decode_android_pubkey(text: bytes | str) -> tuple[int, int]:
    """(modulus n, exponent e) from adb's public-key format: base64(struct) + ' user@host'."""
    if isinstance(text, str):
        text = text.encode()
    b64 = text.strip(b"\0").split(b" ")[0].strip()
    raw = base64.b64decode(b64)
    words, _n0inv, modulus, _rr, exponent = ANDROID_PUBKEY.unpack(raw)
    if words != 64:
        raise ValueError(f"unsupported RSA key size ({words * 32} bits)")
    return int.from_bytes(modulus, "little"), exponent


def verify_signature(pubkey: tuple[int, int], token: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the PKCS#1 v1.5 (SHA-1 DigestInfo) signature of ``token``."""
    n, e = pubkey
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    m = pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big")
    payload = SHA1_PREFIX + token
    expected = b"\x00\x01" + b"\xff" * (k - 3 - len(payload)) + b"\x00" + payload
    return m == expected
