"""Accuracy right after channel pruning (no fine-tuning), with and without AMC's reconstruction.

    python bench/prune_accuracy.py --checkpoints zoo:mobilenet_v1-fmnist zoo:mobilenet_v2-fmnist \
        --keep 0.5 0.75 --split test

For every teacher and uniform keep ratio, the SAME kept channels (L1 criterion, AMC) are applied
with plain selection and with least-squares reconstruction (calibration: AMC's 60 batches x 50
TRAINING images x 10 points), then evaluated on the same images. Prints a table (top-1 and the
logit error against the teacher) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def logit_mse(model: torch.nn.Module, teacher_logits: list[torch.Tensor], batches: list) -> float:
    total, n = 0.0, 0
    with torch.inference_mode():
        for (x, _), ref in zip(batches, teacher_logits, strict=True):
            total += float((model(x) - ref).pow(2).sum())
            n += ref.numel()
    return total / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", nargs="+", default=["zoo:mobilenet_v1-fmnist", "zoo:mobilenet_v2-fmnist"])
    ap.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.75])
    ap.add_argument("--criteria", nargs="+", default=["l1"])
    ap.add_argument("--split", default="test", help="evaluation split: test or val")
    ap.add_argument("--eval-images", type=int, default=None)
    ap.add_argument("--calib-batches", type=int, default=60)
    ap.add_argument("--calib-batch-size", type=int, default=50)
    ap.add_argument("--points-per-image", type=int, default=10)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/prune_accuracy.json"))
    args = ap.parse_args()

    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.pruning import ChannelPruner, uniform_policy
    from amc_mobile.pruning.data import load_pruning_data
    from amc_mobile.training import evaluate

    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.checkpoints:
        teacher, meta = load_checkpoint(spec)
        data = load_pruning_data(meta, None, args.data_dir, args.calib_batches * args.calib_batch_size,
                                 args.split, args.eval_images)
        t0 = evaluate(teacher, data.eval_batches)
        with torch.inference_mode():
            ref = [teacher(x) for x, _ in data.eval_batches]
        name = teacher.arch_spec.name
        print(f"\n{spec} ({name}, width {teacher.arch_spec.width_mult}): teacher top-1 {t0['top1']:.2f}% "
              f"on {t0['n']} {data.info['dataset']} {args.split} images", flush=True)
        for criterion in args.criteria:
            t = time.perf_counter()
            pruner = ChannelPruner(teacher, int(teacher.input_size), data.calib_images, criterion=criterion,
                                   calib_batches=args.calib_batches, calib_batch_size=args.calib_batch_size,
                                   points_per_image=args.points_per_image)
            build_s = time.perf_counter() - t
            for ratio in args.keep:
                pol = uniform_policy(pruner.groups, ratio, name, int(teacher.input_size))
                macs = pruner.describe(pol.keep_channels).macs
                row = {"checkpoint": spec, "model": name, "criterion": criterion, "keep_ratio": ratio,
                       "macs": macs, "teacher_macs": pruner.base_description.macs, "teacher_top1": t0["top1"],
                       "pruner_build_s": build_s, "n": t0["n"]}
                for rec in (False, True):
                    model = pruner.prune(pol.keep_channels, reconstruct=rec)
                    m = evaluate(model, data.eval_batches)
                    key = "reconstructed" if rec else "plain"
                    row[f"{key}_top1"] = m["top1"]
                    row[f"{key}_logit_mse"] = logit_mse(model, ref, data.eval_batches)
                rows.append(row)
                print(f"  {criterion:6s} keep {ratio:4.2f} ({macs / 1e6:6.2f}M MACs, {macs / row['teacher_macs']:5.1%}): "
                      f"top-1 plain {row['plain_top1']:6.2f}%  reconstructed {row['reconstructed_top1']:6.2f}%  "
                      f"(gain {row['reconstructed_top1'] - row['plain_top1']:+.2f} points; logit MSE "
                      f"{row['plain_logit_mse']:.3g} -> {row['reconstructed_logit_mse']:.3g})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"split": args.split, "calibration": f"{args.calib_batches} x "
                                    f"{args.calib_batch_size} train images x {args.points_per_image} points",
                                    "rows": rows}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
