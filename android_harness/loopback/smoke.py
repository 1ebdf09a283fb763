"""CI smoke job: ``python -m android_harness.loopback.smoke [--out DIR] [--timeout S]``.

Starts the loopback ADB stand-in on 127.0.0.1 (ephemeral port, fresh adb key, a placeholder
``benchmark_model`` file), runs ``amc-bench farm`` with ``device_profiles/farms/ci-smoke.yaml``
(host onnxruntime + the stand-in + an absent, non-required phone) on two small MobileNet-V1 widths,
checks that the Markdown/JSON/PNG report exists and that the stand-in was really measured, then stops.
Bounded in time: the farm runs in a child process killed after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from android_harness.loopback.server import LoopbackAdbDevice

FARM = Path(__file__).resolve().parents[2] / "device_profiles" / "farms" / "ci-smoke.yaml"
BASELINE = "mobilenet_v1_cifar"
CANDIDATE = "mobilenet_v1_cifar@0.5"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/farm-smoke", help="report directory")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds before the farm job is killed")
    ap.add_argument("--farm", default=str(FARM))
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="amc-smoke-") as tmp_name:
        tmp = Path(tmp_name)
        binary = tmp / "benchmark_model"
        binary.write_bytes(b"\x7fELF placeholder: the loopback device runs models with the host LiteRT\n")
        with LoopbackAdbDevice(tmp / "sandbox") as dev:
            env = {**os.environ, "AMC_LOOPBACK_ADDRESS": dev.address, "AMC_LOOPBACK_KEY": str(tmp / "adbkey"),
                   "AMC_LOOPBACK_BINARY": str(binary), "AMC_ARTIFACT_CACHE": str(tmp / "cache")}
            cmd = [sys.executable, "-m", "amc_mobile.cli.bench", "farm", "--farm", args.farm,
                   "--baseline", BASELINE, "--candidate", CANDIDATE, "--out", args.out]
            print("smoke:", " ".join(cmd), f"(stand-in on {dev.address})", flush=True)
            try:
                proc = subprocess.run(cmd, env=env, timeout=args.timeout, check=False)
            except subprocess.TimeoutExpired:
                print(f"smoke: FAIL, farm job exceeded {args.timeout:.0f}s", file=sys.stderr)
                return 1
            benchmark_runs = dev.benchmark_runs
    report = Path(args.out) / "farm-report.json"
    problems = []
    for name in ("farm-report.md", "farm-report.json", "farm-speedup.png"):
        if not (Path(args.out) / name).is_file():
            problems.append(f"missing {name}")
    if report.is_file():
        rows = {d["device"]: d for d in json.loads(report.read_text())["devices"]}
        for name in ("host-cpu", "loopback-pixel1"):
            if rows.get(name, {}).get("status") != "ok":
                problems.append(f"{name}: {rows.get(name, {}).get('status')} {rows.get(name, {}).get('reason', '')}")
        if rows.get("phone-not-attached", {}).get("status") != "unreachable":
            problems.append("the absent phone was not reported unreachable")
    if benchmark_runs == 0:
        problems.append("the stand-in never ran benchmark_model")
    if proc.returncode != 0:
        problems.append(f"amc-bench farm exited {proc.returncode}")
    took = time.monotonic() - t0
    if problems:
        print(f"smoke: FAIL after {took:.0f}s: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"smoke: OK in {took:.0f}s ({benchmark_runs} benchmark_model runs on the stand-in); report in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
