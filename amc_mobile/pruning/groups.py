"""Prunable channel groups, derived from the traced graph (never hard-coded).

A *channel group* is a set of channels that must be kept or removed together (AMC, He et al. 2018;
Torch-Pruning's "dependency group"):

- **producers**: Conv2d/Linear layers whose *output* channels are the group's channels (several
  for a MobileNet-V2 residual stage, whose blocks are joined by additions);
- **consumers**: Conv2d/Linear layers whose *input* channels shrink (AMC chooses the channels to
  keep from the consumers' weights and refits them by least squares);
- **followers**: depthwise convs that just follow the channels feeding them;
- **norms**: BatchNorm layers on those channels.

The dependency analysis is delegated to torch-pruning's ``DependencyGraph`` through the thin adapter
:func:`build_dependency_graph`; the network input and the classifier output are never prunable.
Every member records ``idxs``: the module's channel index for each group channel (the identity for
MobileNets; offsets after a concatenation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from amc_mobile.errors import UserError

ROLES = ("producer", "consumer", "follower", "norm")


@dataclass(frozen=True)
class GroupMember:
    """One layer touched by a group: ``role`` says which dimension shrinks (see module docstring)."""

    module: str  # module path, e.g. "features.3.pw.0"
    role: str  # "producer" | "consumer" | "follower" | "norm"
    idxs: tuple[int, ...]  # module channel index of each group channel


@dataclass(frozen=True)
class ChannelGroup:
    """A prunable group: ``name`` (first producer's module path), full ``width`` and its members.

    ``producers`` / ``consumers`` / ``followers`` / ``norms`` list module paths in execution order.
    """

    name: str
    width: int
    members: tuple[GroupMember, ...]

    def _role(self, role: str) -> tuple[str, ...]:
        return tuple(m.module for m in self.members if m.role == role)

    @property
    def producers(self) -> tuple[str, ...]:
        return self._role("producer")

    @property
    def consumers(self) -> tuple[str, ...]:
        return self._role("consumer")

    @property
    def followers(self) -> tuple[str, ...]:
        return self._role("follower")

    @property
    def norms(self) -> tuple[str, ...]:
        return self._role("norm")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, "producers": list(self.producers),
                "consumers": list(self.consumers), "followers": list(self.followers),
                "norms": list(self.norms)}


def is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _example_input(model: nn.Module, input_size: int | None) -> torch.Tensor:
    from amc_mobile.models.describe import _first_in_chans

    size = int(input_size if input_size is not None else getattr(model, "input_size", 224))
    return torch.zeros(1, _first_in_chans(model), size, size)


def _failing_layer(model: nn.Module, x: torch.Tensor) -> str | None:
    """Run ``model`` with pre-hooks; return the innermost layer that was running when it raised."""
    names = {m: n for n, m in model.named_modules()}
    stack: list[str] = []
    deepest: list[str | None] = [None]

    def pre(mod: nn.Module, _inp: object) -> None:
        stack.append(names.get(mod, type(mod).__name__))
        deepest[0] = stack[-1]

    def post(_mod: nn.Module, _inp: object, _out: object) -> None:
        stack.pop()

    handles = [m.register_forward_pre_hook(pre) for m in model.modules() if m is not model]
    handles += [m.register_forward_hook(post) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(x)
        return None
    except Exception:  # noqa: BLE001 - we only want to know where it failed
        return stack[-1] if stack else deepest[0]
    finally:
        for h in handles:
            h.remove()


def build_dependency_graph(model: nn.Module, example: torch.Tensor) -> Any:  # a tp.DependencyGraph
    """Adapter over torch-pruning: trace ``model`` once; one-line ``UserError`` if it cannot."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    except Exception as exc:
        layer = _failing_layer(model, example)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        where = f"layer '{layer}'" if layer else "the model graph"
        raise UserError(f"cannot trace {where} for channel pruning: {first}") from exc
    finally:
        model.train(was_training)


def _execution_order(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Module path -> position in the forward pass (leaf modules, first call)."""
    names = {m: n for n, m in model.named_modules()}
    order: dict[str, int] = {}

    def hook(mod: nn.Module, _i: object, _o: object) -> None:
        order.setdefault(names[mod], len(order))

    hs = [m.register_forward_hook(hook) for m in model.modules() if len(list(m.children())) == 0]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in hs:
            h.remove()
        model.train(was_training)
    return order


def _check_supported(name: str, m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d) and m.groups > 1 and not is_depthwise(m):
        raise UserError(f"layer '{name}': grouped convolution (groups={m.groups}, in={m.in_channels}, "
                        f"out={m.out_channels}) is not supported by the channel pruner")
    if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
        return
    if any(True for _ in m.parameters(recurse=False)):
        raise UserError(f"layer '{name}' ({type(m).__name__}) has per-channel parameters that the "
                        "channel pruner does not know how to slice")


def groups_from_graph(model: nn.Module, dg: Any, example: torch.Tensor) -> list[ChannelGroup]:
    """Turn torch-pruning's dependency groups into our ordered :class:`ChannelGroup` list."""
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    order = _execution_order(model, example)
    modules = dict(model.named_modules())
    layers = [n for n in order if isinstance(modules[n], (nn.Conv2d, nn.Linear))]
    if not layers:
        raise UserError("model has no Conv2d or Linear layer to prune")
    last = modules[layers[-1]]  # the classifier: its outputs are never pruned
    out_handlers = (tp.prune_conv_out_channels, tp.prune_linear_out_channels,
                    tp.prune_depthwise_conv_out_channels, tp.prune_batchnorm_out_channels)
    groups: list[ChannelGroup] = []
    seen: set[frozenset[tuple[str, str]]] = set()
    for tp_group in dg.get_all_groups(ignored_layers=[last], root_module_types=[nn.Conv2d, nn.Linear]):
        members: dict[tuple[str, str], GroupMember] = {}
        for dep, idxs in tp_group:
            mod = dep.target.module
            if mod not in names:  # torch-pruning's internal ops (_ElementWiseOp, _ReshapeOp, ...)
                continue
            name = names[mod]
            _check_supported(name, mod)
            if isinstance(mod, nn.BatchNorm2d):
                role = "norm"
            elif is_depthwise(mod):
                role = "follower"
            elif isinstance(mod, (nn.Conv2d, nn.Linear)):
                role = "producer" if dep.handler in out_handlers else "consumer"
            else:
                continue
            members[(name, role)] = GroupMember(name, role, tuple(int(i) for i in idxs))
        if not members:
            continue
        width = max(len(m.idxs) for m in members.values())
        for mem in members.values():
            if len(mem.idxs) != width:
                raise UserError(f"layer '{mem.module}' receives the channels of a {width}-channel group "
                                f"through a reshape ({len(mem.idxs)} indices); not supported")
        roles = {m.role for m in members.values()}
        if "producer" not in roles:
            continue  # channels of the network input: never pruned
        if "consumer" not in roles:
            continue  # channels that reach the network output: never pruned
        key = frozenset(members)
        if key in seen:
            continue
        seen.add(key)
        ordered = sorted(members.values(), key=lambda m: (ROLES.index(m.role), order.get(m.module, 1 << 30)))
        first = min((m for m in ordered if m.role == "producer"), key=lambda m: order.get(m.module, 1 << 30))
        groups.append(ChannelGroup(first.module, width, tuple(ordered)))
    groups.sort(key=lambda g: order.get(g.name, 1 << 30))
    _check_disjoint(groups)
    return groups


def _check_disjoint(groups: Sequence[ChannelGroup]) -> None:
    """Each (module, dimension, channel) may belong to one group only (sanity check of the graph)."""
    owner: dict[tuple[str, str, int], str] = {}
    for g in groups:
        for m in g.members:
            dim = "in" if m.role == "consumer" else "out"
            for i in m.idxs:
                prev = owner.setdefault((m.module, dim, i), g.name)
                if prev != g.name:
                    raise UserError(f"layer '{m.module}': channel {i} is claimed by groups '{prev}' and "
                                    f"'{g.name}'; the dependency graph is inconsistent for this model")


def find_groups(model: nn.Module, input_size: int | None = None) -> list[ChannelGroup]:
    """The prunable channel groups of ``model``, ordered by execution of their first producer.

    Traced at ``input_size`` (default ``model.input_size``). Each group has ``.name`` (the first
    producer's module path), ``.width`` (full channel count), ``.producers``, ``.consumers``,
    ``.followers`` (depthwise convs) and ``.norms``. Raises ``UserError`` (one line naming the layer)
    for a model the graph library cannot handle.
    """
    example = _example_input(model, input_size)
    dg = build_dependency_graph(model, example)
    return groups_from_graph(model, dg, example)
