"""``python -m android_harness.loopback --sandbox DIR [--port 5555]``: serve a fake Pixel 1 until Ctrl-C."""

from __future__ import annotations

import argparse
import time

from android_harness.loopback.server import LoopbackAdbDevice


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sandbox", required=True, help="directory standing for the phone's file system")
    ap.add_argument("--port", type=int, default=5555)
    ap.add_argument("--no-auth", action="store_true", help="accept connections without RSA authentication")
    args = ap.parse_args()
    with LoopbackAdbDevice(args.sandbox, port=args.port, require_auth=not args.no_auth) as dev:
        print(f"loopback adb device on {dev.address} (sandbox {dev.fs.root}); Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
