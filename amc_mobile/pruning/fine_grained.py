"""Fine-grained (unstructured) magnitude pruning per layer: AMC's model-size (compression) protocol.

Each Conv2d/Linear weight loses exactly ``round(sparsity * numel)`` of its smallest-magnitude
entries (set to zero; shapes unchanged). The report gives the sparsity reached and the size the
weights would take dense and in two sparse formats: CSR-like (fp32 value + int32 index per
non-zero) and bitmask (fp32 value per non-zero + 1 bit per weight).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.pruning.groups import is_depthwise


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    numel: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity per layer and sizes in bytes (weights of the pruned layers + everything else dense)."""

    layers: list[LayerSparsity] = field(default_factory=list)
    other_params: int = 0  # parameters not pruned (biases, BN, skipped layers), stored dense

    @property
    def numel(self) -> int:
        return sum(s.numel for s in self.layers)

    @property
    def nonzeros(self) -> int:
        return sum(s.numel - s.zeros for s in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.numel if self.numel else 0.0

    @property
    def dense_bytes(self) -> int:
        return 4 * (self.numel + self.other_params)

    @property
    def csr_bytes(self) -> int:
        return 8 * self.nonzeros + 4 * self.other_params

    @property
    def bitmask_bytes(self) -> int:
        return 4 * self.nonzeros + (self.numel + 7) // 8 + 4 * self.other_params

    def to_dict(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "numel": self.numel, "nonzeros": self.nonzeros,
                "dense_bytes": self.dense_bytes, "csr_bytes": self.csr_bytes,
                "bitmask_bytes": self.bitmask_bytes,
                "layers": [{"name": s.name, "numel": s.numel, "sparsity": s.sparsity} for s in self.layers]}


def fine_grained_prune(model: nn.Module, sparsity: float | Mapping[str, float],
                       include_depthwise: bool = True) -> tuple[nn.Module, SparsityReport]:
    """Zero the smallest |w| in every Conv2d/Linear of a copy of ``model``.

    ``sparsity`` is one fraction in [0, 1) for all layers or ``{layer name: fraction}`` (layers not
    named are left dense). Returns the pruned copy and its :class:`SparsityReport`.
    """
    new = copy.deepcopy(model)
    layers = [(n, m) for n, m in new.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
              and (include_depthwise or not is_depthwise(m))]
    if isinstance(sparsity, Mapping):
        names = {n for n, _ in layers}
        unknown = sorted(set(sparsity) - names)
        if unknown:
            raise UserError(f"fine-grained sparsity names unknown layer(s): {', '.join(unknown)}")
        targets = {n: float(s) for n, s in sparsity.items()}
    else:
        targets = {n: float(sparsity) for n, _ in layers}
    report = []
    pruned_params: set[int] = set()
    with torch.no_grad():
        for name, m in layers:
            if name not in targets:
                continue
            s = targets[name]
            if not 0.0 <= s < 1.0:
                raise UserError(f"layer '{name}': sparsity {s} is outside [0, 1)")
            w = m.weight
            k = round(s * w.numel())
            if k:
                idx = torch.topk(w.abs().flatten(), k, largest=False, sorted=False).indices
                w.view(-1)[idx] = 0.0
            report.append(LayerSparsity(name, w.numel(), int((w == 0).sum())))
            pruned_params.add(id(w))
    other = sum(p.numel() for p in new.parameters() if id(p) not in pruned_params)
    return new, SparsityReport(report, other)
