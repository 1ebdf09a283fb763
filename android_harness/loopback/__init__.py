"""A loopback ADB device for tests: the real ADB wire protocol on 127.0.0.1 over a sandbox directory.

``LoopbackAdbDevice`` speaks CNXN/AUTH (RSA signature checked)/OPEN/OKAY/WRTE/CLSE and the sync
service, interprets ``shell:`` commands with a small POSIX-like interpreter that never touches a host
shell, and runs pushed ``.tflite`` files with the host LiteRT runtime as its ``benchmark_model``.
"""

from android_harness.loopback.server import Faults, LoopbackAdbDevice

__all__ = ["Faults", "LoopbackAdbDevice"]
