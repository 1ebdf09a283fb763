"""``amc-mobile``: models, data, training, pruning, export, search, fine-tuning."""

from __future__ import annotations

import sys

from amc_mobile.cli import model_cmds, prune_cmds, search_cmds, train_cmds
from amc_mobile.cli.common import new_app, run_app

app = new_app("Automated, latency-aware compression of CNNs (AMC + DDC).")
for module in (model_cmds, train_cmds, prune_cmds, search_cmds):
    module.register(app)


def main() -> None:
    sys.exit(run_app(app, prog="amc-mobile"))


if __name__ == "__main__":
    main()
