"""MACs/params of a pruned model computed from its description alone (no model is built).

The latency tables and the search call :func:`pruned_description` for every candidate policy,
so it is pure arithmetic on :class:`~amc_mobile.models.describe.LayerSpec` records (same counting
convention as ``describe_model``: conv/linear MACs; params = all parameters incl. BN affine).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from torch import nn

from amc_mobile.models.describe import ModelDescription, describe_model
from amc_mobile.pruning.groups import ChannelGroup
from amc_mobile.pruning.policy import check_keep_channels

BN_PARAMS_PER_CHANNEL = 2  # affine weight + bias (running stats are buffers)


def pruned_description(base: ModelDescription | nn.Module, groups: Sequence[ChannelGroup],
                       keep_channels: Sequence[int]) -> ModelDescription:
    """The description of the model pruned to ``keep_channels`` (one kept width per group).

    ``base`` is the unpruned model's description (or the model itself, described once here).
    Every layer's in/out channels (and depthwise groups), MACs and params are updated; the result
    equals ``describe_model(pruned_model)``. Assumes affine BatchNorms on pruned channels.
    """
    desc = base if isinstance(base, ModelDescription) else describe_model(base)
    keep = check_keep_channels(groups, keep_channels)
    removed_out: dict[str, int] = {}
    removed_in: dict[str, int] = {}
    removed_params = 0
    for g, k in zip(groups, keep, strict=True):
        cut = g.width - k
        if not cut:
            continue
        for mem in g.members:
            if mem.role == "consumer":
                removed_in[mem.module] = removed_in.get(mem.module, 0) + cut
            elif mem.role == "norm":
                removed_params += BN_PARAMS_PER_CHANNEL * cut
            else:  # producer or depthwise follower
                removed_out[mem.module] = removed_out.get(mem.module, 0) + cut
    layers = []
    params = desc.params - removed_params
    for spec in desc.layers:
        d_out = removed_out.get(spec.name, 0)
        d_in = removed_in.get(spec.name, 0)
        if not (d_out or d_in):
            layers.append(spec)
            continue
        per_in = spec.in_channels // spec.groups
        if spec.type == "dwconv":
            new_out = new_in = new_groups = spec.out_channels - d_out
        else:
            new_out, new_in, new_groups = spec.out_channels - d_out, spec.in_channels - d_in, spec.groups
        oh, ow = spec.output_hw
        area = spec.macs // (oh * ow * spec.out_channels * per_in)  # kh * kw (1 for linear)
        old_weights = spec.out_channels * per_in * area
        bias = (spec.params - old_weights) // spec.out_channels  # 1 if the layer has a bias
        new_per_in = new_in // new_groups
        new_params = new_out * new_per_in * area + bias * new_out
        new = replace(spec, in_channels=new_in, out_channels=new_out, groups=new_groups,
                      macs=oh * ow * new_out * new_per_in * area, params=new_params)
        params += new_params - spec.params
        layers.append(new)
    return ModelDescription(desc.input_size, desc.in_chans, layers, params)
