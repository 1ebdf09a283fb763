"""Ray scale-out, side by side in one run: table profiling on 1 vs 2 stand-in phones, and candidate
evaluation (AMC candidates, DDC's N students) on 1 vs 2 Ray workers.

    as root: python bench/ray_scaling.py [--points 2] [--width 0.25] [--resolution 8] [--candidates 8]

Starts (inside a loopback-only network namespace, like the tests) a Ray head advertising stand-in
phone ``solo`` (model ``solo``) and ``pair-a`` (model ``pair``) and a second node with ``pair-b``
(model ``pair``); then profiles the same table for model ``solo`` (1 phone) and ``pair`` (2 phones)
with the artefact cache off (each run exports its own units), and evaluates the same AMC candidates
(prune + BN re-estimation + score) and DDC students (short KD pass + score) with 1 and 2 Ray workers. Prints wall times and ratios and writes
bench/results/ray_scaling.json. The stand-ins share this machine's CPU (they run models with the host
LiteRT), so the phone ratio is bounded by free cores, unlike real phones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

RESULTS = Path(__file__).resolve().parent / "results" / "ray_scaling.json"
PROFILE = {"name": "pixel1", "backend": "android", "threads": 1, "warmup_runs": 1, "runs": 3, "repeats": 1,
           "min_window_ms": 0.0, "calibrate_overhead": False}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(name: str, model: str, dev: Any, tmp: Path) -> dict[str, Any]:
    return {"name": name, "profile": {**PROFILE, "name": model},
            "options": {"address": dev.address, "key_path": str(tmp / "adbkey"), "binary": str(tmp / "bm"),
                        "core_mask": "c", "cooldown_s": 0.0, "cache_artifacts": False}}


def _worker(args: list[str], tmp: Path, name: str) -> subprocess.Popen[bytes]:
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "amc_mobile.cli.bench", "worker", *args, "--num-cpus", "1",
                             "--object-store-mb", "100", "--node-ip", "127.0.0.1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(address: str, names: set[str], timeout_s: float = 180) -> None:
    import ray

    from amc_mobile.distributed.cluster import cluster_devices

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            ray.init(address=address, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="ERROR")
            try:
                if {d.name for d in cluster_devices()} >= names:
                    return
            finally:
                ray.shutdown()
        except (ConnectionError, RuntimeError):
            pass
        time.sleep(1)
    raise SystemExit(f"cluster never offered {names}")


def _ddc_students(n_images: int, size: int = 32) -> tuple[Any, list[list[str]]]:
    """DDC's student context (MobileNet-V1 0.5 on random data) and 5 architectures of one iteration."""
    import torch

    from amc_mobile.models import create_model
    from amc_mobile.models.arch import require_arch
    from amc_mobile.search.ddc.search import DDCConfig, StudentContext
    from amc_mobile.search.ddc.units import removable_units

    torch.manual_seed(0)
    teacher = create_model("mobilenet_v1_cifar", width_mult=0.5, input_size=size).eval()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n_images, require_arch(teacher).in_chans, size, size, generator=gen)
    y = torch.randint(0, 10, (n_images,), generator=gen)
    with torch.no_grad():
        logits = teacher(x)
    cfg = DDCConfig(student_images=n_images, bn_images=n_images // 2, student_batch_size=64, val_size=n_images,
                    measure=False)
    blocks = [e.name for e in removable_units(teacher, size)]
    archs = [[], *([b] for b in blocks[:3]), blocks[:2]]
    return StudentContext(teacher, x, y, logits, x[: n_images // 2], [(x, y)], cfg), archs


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from amc_mobile.distributed.cluster import ray_session
    from amc_mobile.distributed.pool import RayMap
    from amc_mobile.distributed.profile import profile_sharded
    from amc_mobile.models import create_model
    from amc_mobile.models.arch import require_arch
    from amc_mobile.pruning import ChannelPruner, find_groups, round_channels
    from android_harness.loopback import LoopbackAdbDevice

    tmp = Path(tempfile.mkdtemp(prefix="amc-ray-bench-"))
    os.environ["AMC_MOBILE_HOME"] = str(tmp / "home")
    (tmp / "bm").write_bytes(b"\x7fELF placeholder\n")
    port = _port()
    address = f"127.0.0.1:{port}"
    procs = []
    out: dict[str, Any] = {"load_avg_start": os.getloadavg(), "cpus": os.cpu_count(), "args": vars(args)}
    with LoopbackAdbDevice(tmp / "s") as solo, LoopbackAdbDevice(tmp / "a") as pa, LoopbackAdbDevice(tmp / "b") as pb:
        head = tmp / "head.yaml"
        head.write_text(yaml.safe_dump({"devices": [_entry("solo", "solo", solo, tmp), _entry("pair-a", "pair", pa, tmp)]}))
        node = tmp / "node.yaml"
        node.write_text(yaml.safe_dump({"devices": [_entry("pair-b", "pair", pb, tmp)]}))
        try:
            procs.append(_worker(["--head", "--port", str(port), "--devices", str(head)], tmp, "head"))
            _wait(address, {"solo", "pair-a"})
            procs.append(_worker(["--address", address, "--devices", str(node)], tmp, "node"))
            _wait(address, {"solo", "pair-a", "pair-b"})
            net = create_model("mobilenet_v1_cifar", width_mult=args.width, input_size=args.resolution)
            for model, phones in (("solo", 1), ("pair", 2)):
                t0 = time.perf_counter()
                s = profile_sharded(model, net, tmp / f"{model}.csv", address=address, input_size=args.resolution,
                                    points=args.points, batch_rows=2, calibration=None, tolerance=100.0)
                out[f"profile_{phones}_phone_s"] = time.perf_counter() - t0
                out[f"profile_{phones}_phone_rows"] = s.rows
                print(f"profile on {phones} phone(s): {s['rows']} rows in {out[f'profile_{phones}_phone_s']:.1f} s "
                      f"({s.summary_line()})", flush=True)
            out["profile_ratio_2_vs_1"] = out["profile_2_phone_s"] / out["profile_1_phone_s"]

            torch.manual_seed(0)
            eval_net = create_model("mobilenet_v1_cifar", width_mult=0.5, input_size=32).eval()
            from amc_mobile.search.evaluate import Evaluator

            gen = torch.Generator().manual_seed(1)
            images = torch.randn(256, require_arch(eval_net).in_chans, 32, 32, generator=gen)
            labels = torch.randint(0, 10, (256,), generator=gen)
            ev = Evaluator(ChannelPruner(eval_net, 32, calib_images=None), {"search": [(images, labels)]}, images[:128])
            groups = find_groups(eval_net, 32)
            pols = [[round_channels(g.width, 0.3 + 0.6 * i / max(1, args.candidates - 1)) for g in groups]
                    for i in range(args.candidates)]
            with ray_session(address) as ray:
                results = {}
                for workers in (1, 2):
                    m = RayMap(ray, workers)
                    m(lambda x: x, [0, 1])  # warm the worker processes
                    t0 = time.perf_counter()
                    results[workers] = ev.evaluate_many(pols, map_fn=m)
                    out[f"evaluate_{workers}_workers_s"] = time.perf_counter() - t0
                    print(f"{args.candidates} candidates on {workers} worker(s): "
                          f"{out[f'evaluate_{workers}_workers_s']:.1f} s", flush=True)
                assert [r.top1 for r in results[1]] == [r.top1 for r in results[2]]
            out["evaluate_ratio_2_vs_1"] = out["evaluate_2_workers_s"] / out["evaluate_1_workers_s"]
            ctx, archs = _ddc_students(args.student_images)
            from amc_mobile.search.ddc.search import evaluate_students

            with ray_session(address) as ray:
                got = {}
                for workers in (1, 2):
                    m = RayMap(ray, workers)
                    m(lambda x: x, [0, 1])
                    t0 = time.perf_counter()
                    got[workers] = evaluate_students(ctx, archs, map_fn=m)
                    out[f"ddc_{workers}_workers_s"] = time.perf_counter() - t0
                    print(f"DDC: {len(archs)} students ({args.student_images} KD images each) on {workers} worker(s): "
                          f"{out[f'ddc_{workers}_workers_s']:.1f} s", flush=True)
                assert [r["top1"] for r in got[1]] == [r["top1"] for r in got[2]]
            out["ddc_ratio_2_vs_1"] = out["ddc_2_workers_s"] / out["ddc_1_workers_s"]
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
                    try:
                        p.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(p.pid, signal.SIGKILL)
            shutil.rmtree(tmp, ignore_errors=True)
    out["load_avg_end"] = os.getloadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=2)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--resolution", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--student-images", type=int, default=256)
    args = ap.parse_args()
    if os.environ.get("AMC_RAY_NETNS") != "1":  # re-run inside a loopback-only network namespace
        script = 'ip link set lo up && exec "$0" "$@"'
        env = {**os.environ, "AMC_RAY_NETNS": "1", "HOME": tempfile.mkdtemp(prefix="amc-ray-home-"),
               "RAY_USAGE_STATS_ENABLED": "0"}
        sys.exit(subprocess.call(["unshare", "-n", "sh", "-c", script, sys.executable, *sys.argv], env=env))
    out = run(args)
    print(f"profiling wall time, 2 phones / 1 phone: {out['profile_ratio_2_vs_1']:.2f}; "
          f"AMC candidate evaluation, 2 workers / 1: {out['evaluate_ratio_2_vs_1']:.2f}; "
          f"DDC students, 2 workers / 1: {out['ddc_ratio_2_vs_1']:.2f}; "
          f"load average {out['load_avg_start'][0]:.1f} -> {out['load_avg_end'][0]:.1f} on {out['cpus']} CPUs")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
