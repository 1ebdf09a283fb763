"""The channel-pruning engine: select channels (AMC's criterion), remove them, refit by least squares.

:class:`ChannelPruner` is built ONCE per base model: it traces the graph (torch-pruning's
DependencyGraph, via :mod:`amc_mobile.pruning.groups`), ranks every group's channels with the chosen
criterion and collects the calibration statistics for reconstruction. Each :meth:`ChannelPruner.prune`
call then only slices tensors along the index plan derived from the graph and solves one small
linear system per consuming layer, so the search can call it for every episode.

Two removal back-ends give identical models (tested): ``"slice"`` (default; applies the plan to a
deep copy by tensor slicing, fast) and ``"torch_pruning"`` (re-traces the copy and lets
torch-pruning's ``group.prune()`` remove the same channels; slower, kept as a cross-check).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.models.describe import ModelDescription, describe_model
from amc_mobile.pruning.criteria import get_criterion
from amc_mobile.pruning.description import pruned_description
from amc_mobile.pruning.groups import (
    ChannelGroup,
    _example_input,
    build_dependency_graph,
    groups_from_graph,
    is_depthwise,
)
from amc_mobile.pruning.policy import PruningPolicy, check_keep_channels
from amc_mobile.pruning.reconstruct import LayerGram, collect_grams, solve_weights
from amc_mobile.threads import torch_threads

BACKENDS = ("slice", "torch_pruning")


@dataclass(frozen=True)
class LayerPlan:
    """Kept channel indices of one layer (``None`` = dimension unchanged)."""

    out_keep: torch.Tensor | None
    in_keep: torch.Tensor | None


class ChannelPruner:
    """Prune one base model to many channel configurations (AMC channel pruning).

    The pruner snapshots rankings and calibration statistics of ``model`` at construction: do not
    change the base model's weights afterwards (build a new pruner instead).

    Args:
        model: the base model (never modified).
        input_size: resolution to trace at (default ``model.input_size``).
        calib_images: images (N, C, H, W), already normalised, for least-squares reconstruction;
            ``None`` disables reconstruction (``self.reconstruct`` is then False).
        criterion: channel-selection criterion name (``amc_mobile.pruning.criteria.list_criteria()``).
        reconstruct: refit consuming layers by least squares (AMC; see reconstruct.py).
        calib_batches, calib_batch_size, points_per_image: calibration sample (AMC: 60 x 50 x 10).
        ridge: Tikhonov term, relative to the mean diagonal of the kept Gram block.
        seed: seeds the calibration subset, spatial points and the ``random`` criterion.
        backend: ``"slice"`` (default) or ``"torch_pruning"`` (see the module docstring).
        solve_dtype: precision of the stored statistics and the reconstruction solves. float32
            and float64 gave the same top-1 and logit error on the V1 Fashion-MNIST teacher
            (5 significant digits); float32 halves the memory of the Gram matrices.
        threads: torch threads for the calibration pass and inside :meth:`prune` (restored
            afterwards). On the 2 shared cores of the project machine one thread was 5-15x faster
            than two (bench/prune_speed.py); ``None`` = leave the global setting.
    """

    def __init__(self, model: nn.Module, input_size: int | None = None,
                 calib_images: torch.Tensor | None = None, criterion: str = "l1", reconstruct: bool = True,
                 calib_batches: int = 60, calib_batch_size: int = 50, points_per_image: int = 10,
                 ridge: float = 0.0, seed: int = 0, backend: str = "slice",
                 solve_dtype: torch.dtype = torch.float32, threads: int | None = 1) -> None:
        if backend not in BACKENDS:
            raise UserError(f"unknown pruning backend '{backend}'; valid: {', '.join(BACKENDS)}")
        for option, value in (("--calib-batches", calib_batches), ("--calib-batch-size", calib_batch_size),
                              ("--points-per-image", points_per_image)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{option} must be a positive integer, got {value!r}")
        self.model = model
        self.input_size = int(input_size if input_size is not None else getattr(model, "input_size", 224))
        self.criterion = criterion
        self.ridge = float(ridge)
        self.backend = backend
        self.threads = threads
        self._example = _example_input(model, self.input_size)
        dg = build_dependency_graph(model, self._example)
        self.groups: list[ChannelGroup] = groups_from_graph(model, dg, self._example)
        self.base_description: ModelDescription = describe_model(model, self.input_size)
        self._modules = dict(model.named_modules())
        score_fn = get_criterion(criterion)
        gen = torch.Generator().manual_seed(seed)
        # channel ranking per group: best first (stable, so ties keep the lower index)
        self._rank = [torch.argsort(score_fn(g, self._modules, gen), descending=True, stable=True)
                      for g in self.groups]
        self._idxs = {(g.name, m.module, m.role): torch.tensor(m.idxs, dtype=torch.long)
                      for g in self.groups for m in g.members}
        self.consumers = [m.module for g in self.groups for m in g.members if m.role == "consumer"]
        self.grams: dict[str, LayerGram] = {}
        self.reconstruct = bool(reconstruct and calib_images is not None)
        if self.reconstruct:
            assert calib_images is not None
            with torch_threads(threads):
                self.grams = collect_grams(model, self.consumers, calib_images, calib_batch_size,
                                           calib_batches, points_per_image, seed, solve_dtype)
            short = [f"{n} ({st.rows} rows < {st.gram.shape[0]} inputs)" for n, st in self.grams.items()
                     if st.rows < st.gram.shape[0]]
            if short and self.ridge == 0.0:
                warnings.warn("least-squares reconstruction is underdetermined for " + ", ".join(short[:3])
                              + (" ..." if len(short) > 3 else "") + "; use more calibration images or a "
                              "ridge term", stacklevel=2)

    # ------------------------------------------------------------------ planning
    def keep_indices(self, keep_channels: Sequence[int]) -> list[torch.Tensor]:
        """The kept group-channel indices (sorted) of every group for ``keep_channels``."""
        keep = check_keep_channels(self.groups, keep_channels)
        return [torch.sort(rank[:k]).values for rank, k in zip(self._rank, keep, strict=True)]

    def plan(self, keep_channels: Sequence[int]) -> dict[str, LayerPlan]:
        """Per-layer kept indices (module channel space) for ``keep_channels``."""
        removed: dict[tuple[str, str], list[torch.Tensor]] = {}
        for g, kept in zip(self.groups, self.keep_indices(keep_channels), strict=True):
            if len(kept) == g.width:
                continue
            mask = torch.ones(g.width, dtype=torch.bool)
            mask[kept] = False
            gone = mask.nonzero().squeeze(1)
            for m in g.members:
                dim = "in" if m.role == "consumer" else "out"
                removed.setdefault((m.module, dim), []).append(self._idxs[(g.name, m.module, m.role)][gone])
        plans: dict[str, LayerPlan] = {}
        for name in {mod for mod, _ in removed}:
            plans[name] = LayerPlan(self._keep(name, "out", removed), self._keep(name, "in", removed))
        return plans

    def _keep(self, name: str, dim: str, removed: dict[tuple[str, str], list[torch.Tensor]]) -> torch.Tensor | None:
        if (name, dim) not in removed:
            return None
        m = self._modules[name]
        if isinstance(m, nn.BatchNorm2d):
            full = m.num_features
        elif isinstance(m, nn.Conv2d):
            full = m.out_channels if dim == "out" else m.in_channels
        else:
            full = m.out_features if dim == "out" else m.in_features
        mask = torch.ones(full, dtype=torch.bool)
        for idx in removed[(name, dim)]:
            mask[idx] = False
        return mask.nonzero().squeeze(1)

    def describe(self, keep_channels: Sequence[int]) -> ModelDescription:
        """MACs/params/shapes of the pruned model without building it (see ``pruned_description``)."""
        return pruned_description(self.base_description, self.groups, keep_channels)

    # ------------------------------------------------------------------ pruning
    def prune(self, keep_channels: Sequence[int], reconstruct: bool | None = None) -> nn.Module:
        """A new, physically smaller copy of the base model keeping ``keep_channels[i]`` channels of
        group ``i`` (``find_groups`` order). ``reconstruct=None`` uses the pruner's setting."""
        do_fit = self.reconstruct if reconstruct is None else bool(reconstruct)
        if do_fit and not self.grams:
            raise UserError("reconstruction needs calibration images (pass calib_images to ChannelPruner)")
        with torch_threads(self.threads):
            return self._prune(keep_channels, do_fit)

    def _prune(self, keep_channels: Sequence[int], do_fit: bool) -> nn.Module:
        plans = self.plan(keep_channels)
        if self.backend == "slice":
            new = self._copy_and_slice(plans)
        else:
            new = copy.deepcopy(self.model)
            _prune_with_torch_pruning(new, self.groups, plans, self._example)
        if do_fit:
            modules = dict(new.named_modules())
            with torch.no_grad():
                for name in self.consumers:
                    p = plans.get(name)
                    if p is None or p.in_keep is None:
                        continue
                    layer = modules[name]
                    w = solve_weights(self.grams[name], p.in_keep, p.out_keep, self.ridge)
                    layer.weight.data = w.reshape(layer.weight.shape).to(layer.weight.dtype).contiguous()
        return new

    def _copy_and_slice(self, plans: dict[str, LayerPlan]) -> nn.Module:
        """Deep-copy the base model WITHOUT copying the tensors about to be sliced, then slice them."""
        memo: dict[int, object] = {}
        for name in plans:
            src = self._modules[name]
            for attr in _SLICED:
                t = getattr(src, attr, None)
                if isinstance(t, torch.Tensor):
                    memo[id(t)] = nn.Parameter(t.detach(), t.requires_grad) if isinstance(t, nn.Parameter) \
                        else t.detach()  # shares storage; _slice_module replaces .data, never writes
        new = copy.deepcopy(self.model, memo)
        modules = dict(new.named_modules())
        with torch.no_grad():
            for name, p in plans.items():
                dst = modules[name]
                _slice_module(dst, p)
                for attr in _SLICED:  # a dimension left whole must not share memory with the base
                    t, src_t = getattr(dst, attr, None), getattr(self._modules[name], attr, None)
                    if isinstance(t, torch.Tensor) and isinstance(src_t, torch.Tensor) \
                            and t.data_ptr() == src_t.data_ptr():
                        t.data = t.data.clone()
        return new

    def prune_policy(self, policy: PruningPolicy, model_name: str | None = None,
                     reconstruct: bool | None = None) -> nn.Module:
        """Validate ``policy`` against this model's groups, then :meth:`prune`."""
        policy.validate(self.groups, model_name)
        return self.prune(policy.keep_channels, reconstruct)


_SLICED = ("weight", "bias", "running_mean", "running_var")


def _slice_param(param: torch.Tensor | None, idx: torch.Tensor | None, dim: int) -> None:
    if param is None or idx is None:
        return
    param.data = param.data.index_select(dim, idx)


def _slice_module(m: nn.Module, p: LayerPlan) -> None:
    """Remove channels of one layer in place (weights, bias, BN statistics, shape attributes)."""
    if isinstance(m, nn.BatchNorm2d):
        idx = p.out_keep
        assert idx is not None
        for t in (m.weight, m.bias, m.running_mean, m.running_var):
            _slice_param(t, idx, 0)
        m.num_features = len(idx)
    elif isinstance(m, nn.Conv2d):
        if is_depthwise(m):
            idx = p.out_keep if p.out_keep is not None else p.in_keep
            assert idx is not None
            _slice_param(m.weight, idx, 0)
            _slice_param(m.bias, idx, 0)
            m.in_channels = m.out_channels = m.groups = len(idx)
            return
        _slice_param(m.weight, p.out_keep, 0)
        _slice_param(m.bias, p.out_keep, 0)
        _slice_param(m.weight, p.in_keep, 1)
        m.out_channels, m.in_channels = m.weight.shape[0], m.weight.shape[1] * m.groups
    elif isinstance(m, nn.Linear):
        _slice_param(m.weight, p.out_keep, 0)
        _slice_param(m.bias, p.out_keep, 0)
        _slice_param(m.weight, p.in_keep, 1)
        m.out_features, m.in_features = m.weight.shape
    else:  # groups_from_graph only admits the layer types above
        raise UserError(f"cannot slice layer of type {type(m).__name__}")


def _prune_with_torch_pruning(model: nn.Module, groups: Sequence[ChannelGroup], plans: dict[str, LayerPlan],
                              example: torch.Tensor) -> None:
    """Remove the planned channels with torch-pruning's own handlers (the cross-check back-end)."""
    import torch_pruning as tp

    dg = build_dependency_graph(model, example)
    modules = dict(model.named_modules())
    for g in groups:
        producer = g.producers[0]
        p = plans.get(producer)
        if p is None or p.out_keep is None:
            continue
        layer = modules[producer]
        full = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        mask = torch.ones(full, dtype=torch.bool)
        mask[p.out_keep] = False
        gone = mask.nonzero().squeeze(1).tolist()
        fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
        dg.get_pruning_group(layer, fn, idxs=gone).prune()
