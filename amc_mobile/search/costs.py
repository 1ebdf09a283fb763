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
    """Moved to :func:`amc_mobile.latency.store.load_latency_table` (no measuring); jobs that may
    validate, adapt or build a table call :func:`amc_mobile.latency.store.open_table_for`."""
    from amc_mobile.latency.store import load_latency_table as load

    return load(device, model, input_size, checkpoint, table_path)
