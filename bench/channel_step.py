"""Does this device reward multiples of 16 channels? And how well do latency tables predict such models?

Part 1 (side by side, one interleaved run, --rounds rounds): at each --widths uniform keep ratio, the
model with every group at an odd multiple of 8 channels ("step 8"), the same groups widened to the next
multiple of 16 ("up 16", more MACs) and narrowed to the previous one ("down 16"), and the teacher.
Part 2 (--tables): each table's median |error| (ratios) and share within +-10% on --configs random
configs with channels on multiples of 16, measured in the same run; the noise floor is round 1 vs 2.

    python bench/channel_step.py --checkpoint zoo:mobilenet_v1-fmnist --tables T8.csv T16.csv
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amc_mobile.latency.adapt import errors, measure_models  # noqa: E402
from amc_mobile.latency.channels import probe_configs  # noqa: E402
from amc_mobile.latency.profiles import load_profile  # noqa: E402
from amc_mobile.latency.profiling import ModelConfig  # noqa: E402
from amc_mobile.latency.table import LatencyTable  # noqa: E402
from amc_mobile.models.checkpoint import load_checkpoint  # noqa: E402
from amc_mobile.models.describe import describe_model  # noqa: E402
from amc_mobile.pruning import find_groups, round_channels  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--checkpoint", default="zoo:mobilenet_v1-fmnist")
    ap.add_argument("--device", default="host-cpu")
    ap.add_argument("--widths", default="0.3,0.45,0.6", help="uniform keep ratios of part 1")
    ap.add_argument("--tables", nargs="*", default=[], help="latency tables judged on step-16 models (part 2)")
    ap.add_argument("--configs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=99)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    model, _ = load_checkpoint(args.checkpoint)
    size = describe_model(model).input_size
    groups = find_groups(model, size)
    cfgs = [ModelConfig("teacher", tuple(g.width for g in groups))]
    widths = tuple(float(w) for w in args.widths.split(","))
    pairs = probe_configs(model, size, widths)  # what `amc-bench profile` probes: odd-8 and widened to 16
    for r, odd, wide in zip(widths, pairs[::2], pairs[1::2], strict=True):
        down = [c - 8 if c % 16 and c > 8 else c for c in odd.keep]
        cfgs += [odd, ModelConfig(f"up16-{r:g}", wide.keep), ModelConfig(f"down16-{r:g}", tuple(down))]
    rng = random.Random(args.seed)
    held = [ModelConfig(f"random16-{i}", tuple(round_channels(g.width, rng.uniform(0.2, 1.0), 16) for g in groups))
            for i in range(args.configs if args.tables else 0)]
    res = measure_models(load_profile(args.device), model, size, cfgs + held, rounds=args.rounds)
    part1, part2 = res[:len(cfgs)], res[len(cfgs):]
    teacher = part1[0].ratio
    out: dict = {"checkpoint": args.checkpoint, "device": args.device, "models": [], "tables": {}}
    print(f"{'model':14s} {'MACs (M)':>9s} {'ratio to teacher':>17s}  rounds")
    for m in part1:
        out["models"].append({"config": m.config.config_id, "keep": list(m.config.keep), "macs": m.desc.macs,
                              "ratio": m.ratio, "rounds": m.rounds, "vs_teacher": m.ratio / teacher})
        print(f"{m.config.config_id:14s} {m.desc.macs / 1e6:9.2f} {m.ratio / teacher:17.3f}  "
              f"{' '.join(f'{x:.4f}' for x in m.rounds)}")
    if part2:
        noise = median(abs(m.rounds[0] / m.rounds[1] - 1) for m in part2)
        out["noise_floor"] = noise
        print(f"\n{len(part2)} random models on multiples of 16 channels; noise floor {100 * noise:.1f}%")
        for path in args.tables:
            table = LatencyTable.load(path)
            e = [abs(x) for x in errors(table, part2)["ratio"]]
            fig = {"granularity": table.meta.get("granularity"), "median_abs_err": median(e),
                   "within_10pct": sum(x <= 0.1 for x in e) / len(e)}
            out["tables"][path] = fig
            print(f"{path} (grid step {fig['granularity']}): median |err| {100 * fig['median_abs_err']:.1f}%, "
                  f"within +-10% {100 * fig['within_10pct']:.0f}%")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
