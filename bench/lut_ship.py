"""Rebuild the latency tables shipped in device_profiles/<device>/ (a maintainer's command: it is
the one thing that writes into the checkout). One command for the teachers' tables after retraining:

    python bench/lut_ship.py --device host-cpu --checkpoints zoo:mobilenet_v1-fmnist zoo:mobilenet_v2-fmnist
    python bench/lut_ship.py --device host-cpu --models mobilenet_v1 mobilenet_v2           # 224 px
    python bench/lut_ship.py --device host-tflite --models mobilenet_v1 mobilenet_v2 --points 3

Each table is profiled from scratch into a staging folder of the user cache (resumable: re-run the
same command after a kill), validated on this machine (the model + 4 random configs), then its three
files replace the shipped ones. The tables record this machine's fingerprint, so a user's machine of
the same kind and runtime version uses them as they are; any other machine adapts them on first use.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amc_mobile.latency.adapt import validate_table  # noqa: E402
from amc_mobile.latency.profiles import REPO_PROFILES, load_profile  # noqa: E402
from amc_mobile.latency.profiling import profile_table  # noqa: E402
from amc_mobile.latency.table import LatencyTable, calib_path, default_table_path, meta_path  # noqa: E402
from amc_mobile.models import create_model  # noqa: E402
from amc_mobile.models.arch import require_arch  # noqa: E402
from amc_mobile.models.checkpoint import load_checkpoint  # noqa: E402
from amc_mobile.storage import user_cache_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", required=True)
    ap.add_argument("--checkpoints", nargs="*", default=[], help="checkpoints or zoo:NAME (their architecture)")
    ap.add_argument("--models", nargs="*", default=[], help="registered models at --resolution")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--points", type=int, default=5, help="grid values per channel axis")
    ap.add_argument("--dest", default=str(REPO_PROFILES), help="profile folder holding <device>/ (the checkout's)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    prof = load_profile(args.device)
    nets = [load_checkpoint(c)[0] for c in args.checkpoints]
    nets += [create_model(m, input_size=args.resolution) for m in args.models]
    if not nets:
        sys.exit("give --checkpoints and/or --models")
    stage = user_cache_dir() / "ship" / prof.name
    dest = Path(args.dest) / prof.name
    for net in nets:
        arch = require_arch(net)
        staged = default_table_path(stage, arch, arch.input_size)
        t0 = time.perf_counter()
        s = profile_table(prof, net, staged, input_size=arch.input_size, points=args.points,
                          progress=lambda d, t, n=staged.name: print(f"\r{n}: {d}/{t}", end="", flush=True))
        table = LatencyTable.load(staged)
        val, _ = validate_table(table, prof, net, arch.input_size, 4)
        print(f"\n{staged.name}: {s.rows} rows ({s.new_rows} now, {time.perf_counter() - t0:.0f} s); "
              f"validation: median |err| {100 * val['median_abs_error']:.1f}% (ratios "
              f"{100 * val['ratio_median_abs_error']:.1f}%), worst {100 * val['worst_abs_error']:.1f}%", flush=True)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / staged.name
        for src, dst in ((staged, target), (calib_path(staged), calib_path(target)), (meta_path(staged), meta_path(target))):
            if src.exists():
                shutil.copyfile(src, dst.with_name(dst.name + ".part"))
                dst.with_name(dst.name + ".part").replace(dst)
        for p in (staged, calib_path(staged), meta_path(staged)):
            p.unlink(missing_ok=True)
        print(f"shipped {target}")


if __name__ == "__main__":
    main()
