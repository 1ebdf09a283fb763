"""``amc-bench``: device profiles, latency measurement, per-layer tables, device farm."""

from __future__ import annotations

import sys

from amc_mobile.cli import farm_cmds, latency_cmds, ray_cmds
from amc_mobile.cli.common import new_app, run_app

app = new_app("Measure latency on real runtimes and build per-layer latency tables.")
for module in (latency_cmds, farm_cmds, ray_cmds):
    module.register(app)


def main() -> None:
    sys.exit(run_app(app, prog="amc-bench"))


if __name__ == "__main__":
    main()
