"""Speed of the channel-pruning engine: one ``ChannelPruner.prune`` call, as the search makes it.

    python bench/prune_speed.py --model mobilenet_v1_cifar --widths 0.5 1.0 --resolution 32 --repeats 15

For each width: build the pruner once (trace + calibration statistics, timed separately), then
apply the SAME random policies (keep ratios in [0.2, 1], rounded to multiples of 8) with every
variant, interleaved within each repeat so machine drift hits all alike: slice back-end without and
with least-squares reconstruction, the torch-pruning back-end (re-traces each call), reconstruction
with two torch threads instead of one, and ``pruned_description`` (MACs without building a model).
Prints medians (and the spread) and writes JSON with every sample.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def smooth_images(n: int, chans: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.randn(n, chans, 4, 4, generator=g), size=(size, size), mode="bilinear")
    return low * (0.5 + torch.rand(n, 1, 1, 1, generator=g)) + 0.1 * torch.randn(n, chans, size, size, generator=g)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def summary(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return f"{1e3 * statistics.median(samples):8.1f} ms  (IQR {1e3 * q[0]:.1f}-{1e3 * q[2]:.1f})"


def make_variants(pruner, tp_pruner, base) -> dict:
    from amc_mobile.pruning import ChannelPruner, pruned_description

    two_threads = ChannelPruner.__new__(ChannelPruner)
    two_threads.__dict__.update(pruner.__dict__)
    two_threads.threads = None  # whatever torch.set_num_threads(2) gave
    return {"slice, no reconstruction": lambda k: pruner.prune(k, reconstruct=False),
            "slice + reconstruction": lambda k: pruner.prune(k, reconstruct=True),
            "slice + reconstruction, 2 threads": lambda k: two_threads.prune(k, reconstruct=True),
            "torch-pruning back-end, no reconstruction": lambda k: tp_pruner.prune(k),
            "pruned_description (MACs only)": lambda k: pruned_description(base, pruner.groups, k)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenet_v1_cifar")
    ap.add_argument("--widths", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--calib-batches", type=int, default=60)
    ap.add_argument("--calib-batch-size", type=int, default=50)
    ap.add_argument("--points-per-image", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("bench/results/prune_speed.json"))
    args = ap.parse_args()

    from amc_mobile.models import create_model, describe_model
    from amc_mobile.models.bn import calibrate_bn
    from amc_mobile.pruning import ChannelPruner, round_channels

    torch.set_num_threads(2)
    results = {"model": args.model, "resolution": args.resolution, "machine": platform.processor() or
               platform.machine(), "torch": torch.__version__, "cpu_threads_available": torch.get_num_threads(),
               "calibration": f"{args.calib_batches} x {args.calib_batch_size} images x {args.points_per_image} points",
               "widths": {}}
    for width in args.widths:
        torch.manual_seed(0)
        model = create_model(args.model, width_mult=width, input_size=args.resolution)
        calibrate_bn(model, smooth_images(256, 3, args.resolution, 1))
        calib = smooth_images(args.calib_batches * args.calib_batch_size, 3, args.resolution, 2)
        t0 = time.perf_counter()
        pruner = ChannelPruner(model, args.resolution, calib, calib_batches=args.calib_batches,
                               calib_batch_size=args.calib_batch_size, points_per_image=args.points_per_image)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        ChannelPruner(model, args.resolution)  # trace + ranking only, no calibration
        t_trace = time.perf_counter() - t0
        base = describe_model(model, args.resolution)
        variants = make_variants(pruner, ChannelPruner(model, args.resolution, backend="torch_pruning"), base)
        rng = random.Random(0)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            keep = [round_channels(g.width, rng.uniform(0.2, 1.0)) for g in pruner.groups]
            for name, fn in variants.items():
                samples[name].append(timed(lambda fn=fn, keep=keep: fn(keep)))
        print(f"\n{args.model} width {width} @ {args.resolution}px ({base.macs / 1e6:.1f}M MACs, "
              f"{len(pruner.groups)} groups): pruner built in {t_build:.1f} s "
              f"(trace+ranking {t_trace:.2f} s, rest = calibration {results['calibration']})")
        for name, vals in samples.items():
            print(f"  {name:45s} {summary(vals)}")
        med = {k: statistics.median(v) for k, v in samples.items()}
        print(f"  reconstruction adds {1e3 * (med['slice + reconstruction'] - med['slice, no reconstruction']):.0f} ms; "
              f"torch-pruning back-end / slice = {med['torch-pruning back-end, no reconstruction'] / med['slice, no reconstruction']:.1f}x; "
              f"2 threads / 1 thread = {med['slice + reconstruction, 2 threads'] / med['slice + reconstruction']:.1f}x")
        results["widths"][str(width)] = {"build_s": t_build, "trace_s": t_trace, "macs": base.macs,
                                         "median_s": med, "samples_s": samples}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
