"""Effect and cost of BatchNorm re-estimation (EagleEye adaptive BN) on a pruned shipped teacher.

    python bench/bn_reestimation.py --keep 0.5 --images 128,256,500,1000,2000

For each teacher: val top-1 of the uniformly pruned (+ reconstructed) model with the teacher's BN
statistics, then after re-estimating them on N training images, with the time re-estimation took.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--teachers", default="zoo:mobilenet_v1-fmnist,zoo:mobilenet_v2-fmnist")
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--images", default="128,256,500,1000,2000")
    p.add_argument("--val-images", type=int, default=2000)
    args = p.parse_args()

    import torch

    from amc_mobile.data import teacher_data
    from amc_mobile.models.arch import require_arch
    from amc_mobile.models.bn import reestimate_bn
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.pruning import ChannelPruner, round_channels
    from amc_mobile.search.problem import normalised_batches, normalised_images
    from amc_mobile.training import evaluate

    torch.set_num_threads(1)
    for name in args.teachers.split(","):
        teacher, meta = load_checkpoint(name)
        size = require_arch(teacher).input_size
        train = teacher_data(meta, "train")
        val = normalised_batches(teacher_data(meta, "val").subset(args.val_images, 0), 1000)
        pruner = ChannelPruner(teacher, size, normalised_images(train, 1000, 1), calib_batches=20,
                               calib_batch_size=50)
        keep = [round_channels(g.width, args.keep) for g in pruner.groups]
        print(f"{name} keep {args.keep}: teacher's BN statistics {evaluate(pruner.prune(keep), val)['top1']:.2f}%",
              flush=True)
        for n in [int(v) for v in args.images.split(",")]:
            x = normalised_images(train, n, 2)
            model = pruner.prune(keep).to(memory_format=torch.channels_last)
            t0 = time.perf_counter()
            reestimate_bn(model, x, 250)
            dt = time.perf_counter() - t0
            print(f"  re-estimated on {n} images: {evaluate(model, val)['top1']:.2f}% ({dt:.2f} s)", flush=True)


if __name__ == "__main__":
    main()
