"""Class-subset compression (DDC, Pahwa et al., sec. "class-subset compression"): cut the teacher's
classifier to the rows of the chosen classes, so search, scoring and distillation all see a k-way model.

One place for the slicing (:func:`restrict_classes`) and for resolving a ``--classes`` spec against a
checkpoint (:func:`subset_teacher`); ``amc-mobile search`` and ``amc-mobile finetune`` both use them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.models.arch import get_arch, set_arch
from amc_mobile.models.checkpoint import replace_module


def final_linear_name(model: nn.Module) -> str:
    """Module path of the layer producing the logits: the last layer of the model description."""
    from amc_mobile.models import describe_model

    arch = get_arch(model)
    desc = describe_model(model, arch.input_size if arch else int(getattr(model, "input_size", 224)))
    last = desc.layers[-1] if desc.layers else None
    if last is None or last.type != "linear":
        raise UserError(f"model '{arch.name if arch else type(model).__name__}' does not end in a linear classifier; "
                        "class subsets need one")
    return last.name


def restrict_classes(model: nn.Module, class_indices: Sequence[int]) -> nn.Module:
    """A copy of ``model`` whose classifier keeps only the rows ``class_indices`` (in that order).

    Output column j of the copy equals output column ``class_indices[j]`` of ``model``;
    its ``ArchSpec.num_classes`` becomes k so the checkpoint reloads at k outputs.
    """
    name = final_linear_name(model)
    old = model.get_submodule(name)
    assert isinstance(old, nn.Linear)
    idx = [int(i) for i in class_indices]
    if len(idx) < 2 or len(set(idx)) != len(idx) or not all(0 <= i < old.out_features for i in idx):
        raise UserError(f"class indices {idx} must be >= 2 distinct outputs in 0..{old.out_features - 1}")
    out = copy.deepcopy(model)
    new = nn.Linear(old.in_features, len(idx), old.bias is not None)
    rows = torch.tensor(idx, dtype=torch.long)
    with torch.no_grad():
        new.weight.copy_(old.weight[rows])
        if old.bias is not None:
            new.bias.copy_(old.bias[rows])
    new.to(old.weight.device, old.weight.dtype)
    replace_module(out, name, new)
    spec = get_arch(model)
    if spec is not None:
        set_arch(out, spec.replace(num_classes=len(idx)))
    return out


def teacher_classes(meta: dict[str, Any], data_dir: str | Path | None = None) -> list[str]:
    """Class names of the checkpoint's outputs, in output order (recorded, else the data set's)."""
    from amc_mobile.data.datasets import load_raw

    info = meta.get("data") or {}
    if info.get("classes"):
        return list(info["classes"])
    if not info.get("dataset"):
        raise UserError("the checkpoint records neither its classes nor its data set; cannot pick a class subset")
    return list(load_raw(info["dataset"], data_dir)[0].classes)


def subset_teacher(teacher: nn.Module, meta: dict[str, Any], classes: str | Sequence[str],
                   data_dir: str | Path | None = None) -> tuple[nn.Module, dict[str, Any], list[str]]:
    """(teacher cut to ``classes``, meta recording the subset, subset class names in order).

    ``classes`` uses the syntax of ``amc-mobile train --classes`` (names, indices of the teacher's
    outputs, or a data-set preset), resolved against the teacher's own class list.
    """
    from amc_mobile.data.datasets import get_entry, parse_classes

    names = teacher_classes(meta, data_dir)
    spec = get_arch(teacher)
    n_out = spec.num_classes if spec is not None else len(names)
    if n_out != len(names):
        raise UserError(f"the teacher has {n_out} outputs but records {len(names)} classes")
    info = dict(meta.get("data") or {})
    presets = get_entry(info["dataset"]).presets if info.get("dataset") else None
    idx = parse_classes(classes, names, presets)
    if idx is None:
        raise UserError("--classes is empty")
    chosen = [names[i] for i in idx]
    new_meta = {**meta, "data": {**info, "classes": chosen}}
    if isinstance(meta.get("arch"), dict):  # the meta describes the cut model (teacher_data checks it)
        new_meta["arch"] = {**meta["arch"], "num_classes": len(idx)}
    return restrict_classes(teacher, idx), new_meta, chosen
