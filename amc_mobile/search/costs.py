"""Cost models of a candidate (one kept width per group): MACs and params from the pruned description
(no model is built), latency predicted from the target device's per-layer table (LUT).

Each is a :class:`~amc_mobile.search.env.CostModel`: a monotone function of the keep vector, cached,
called by the action wall many times per episode. Latency is in ms, MACs are conv + linear
multiply-accumulates, params count every parameter (the models package's convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from amc_mobile.errors import UserError
from amc_mobile.models.describe import ModelDescription
from amc_mobile.search.env import CostModel, GroupInfo


class LatencyPredictor(Protocol):
    """Anything that predicts a model's latency in ms from its description (``LatencyTable``)."""

    def predict(self, desc: ModelDescription) -> float: ...


def group_infos(desc: ModelDescription, groups: Sequence[Any]) -> list[GroupInfo]:
    """State features of each group, taken from its first producer layer (the layer whose output
    channels the group is): type, in/out channels, stride, kernel, weight count."""
    out = []
    for g in groups:
        producers = getattr(g, "producers", None) or (g.name,)
        try:
            spec = desc.layer(producers[0])
        except KeyError:
            out.append(GroupInfo(g.name, g.width, 0, g.width, g.width, 1, 1, g.width))
            continue
        out.append(GroupInfo(g.name, g.width, 1 if spec.type == "linear" else 0, spec.in_channels,
                             spec.out_channels, spec.stride, spec.kernel, spec.params))
    return out


def _describe(desc: ModelDescription, groups: Sequence[Any]):  # -> Callable[[tuple], ModelDescription]
    from amc_mobile.pruning import pruned_description

    full = tuple(g.width for g in groups)

    def fn(keep: tuple[int, ...]) -> ModelDescription:
        return desc if keep == full else pruned_description(desc, groups, keep)

    return fn


def macs_cost(desc: ModelDescription, groups: Sequence[Any]) -> CostModel:
    d = _describe(desc, groups)
    return CostModel("macs", lambda keep: float(d(keep).macs))


def params_cost(desc: ModelDescription, groups: Sequence[Any]) -> CostModel:
    d = _describe(desc, groups)
    return CostModel("params", lambda keep: float(d(keep).params))


def latency_cost(predictor: LatencyPredictor, desc: ModelDescription, groups: Sequence[Any]) -> CostModel:
    d = _describe(desc, groups)
    return CostModel("latency", lambda keep: float(predictor.predict(d(keep))))


def load_latency_table(device: str, model: Any, input_size: int, checkpoint: str | None = None,
                       table_path: str | Path | None = None) -> Any:
    """The latency table of ``model`` on ``device``; a missing table is one line naming the
    ``amc-bench profile`` command that builds it."""
    from amc_mobile.latency.lut import LatencyTable, default_table_path
    from amc_mobile.latency.profiles import load_profile, table_dir

    if table_path is not None:
        return LatencyTable.load(table_path)
    profile = load_profile(device)
    arch = getattr(model, "arch_kwargs", None)
    if not arch:
        raise UserError("the model has no architecture record; pass --latency-table FILE")
    path = default_table_path(table_dir(profile), arch, input_size)
    if not path.exists():
        source = f"--checkpoint {checkpoint}" if checkpoint else f"--model {arch['name']}"
        raise UserError(f"no latency table for {arch['name']} (width {arch['width_mult']:g}, {input_size} px) on "
                        f"device '{device}' ({path}); build it with: amc-bench profile --device {device} {source}")
    table = LatencyTable.load(path)
    if getattr(table, "incomplete", None):
        raise UserError(f"latency table {path} is incomplete ({', '.join(table.incomplete)}); finish it with: "
                        f"amc-bench profile --device {device} "
                        f"{'--checkpoint ' + checkpoint if checkpoint else '--model ' + arch['name']}")
    return table
