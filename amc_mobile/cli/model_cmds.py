"""``amc-mobile models`` and ``amc-mobile info``."""

from __future__ import annotations

import json
from typing import Any

import typer

from amc_mobile.cli.common import ModelSource, console, with_model_source


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("info")(info)


def models() -> None:
    """List the registered models."""
    from rich.table import Table

    from amc_mobile.models import get_entry, list_models
    from amc_mobile.models.checkpoint import list_zoo

    table = Table("model", "default input", "description")
    for name in list_models():
        e = get_entry(name)
        table.add_row(name, f"{e.default_input_size} px, {e.default_num_classes} classes", e.description)
    console.print(table)
    console.print("shipped checkpoints: " + (", ".join(f"zoo:{z}" for z in list_zoo()) or "none"))


@with_model_source
def info(
    source: ModelSource,
    groups: bool = typer.Option(False, "--groups", help="List the prunable channel groups."),
    removable: bool = typer.Option(False, "--removable", help="List the units DDC's block removal may drop "
                                   "(found from the graph: shape-preserving blocks/layers of the trunk)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (keys: macs, params, layers)."),
) -> None:
    """Layers, MACs (conv+linear multiply-accumulates) and parameters of a model."""
    from amc_mobile.models import describe_model
    from amc_mobile.models.arch import get_arch

    net, _ = source.load()
    desc = describe_model(net)
    spec = get_arch(net)
    name = spec.name if spec is not None else source.model
    group_rows = None
    if groups:
        from amc_mobile.pruning.groups import find_groups

        group_rows = [{"name": g.name, "width": g.width} for g in find_groups(net, desc.input_size)]
    unit_rows: list[dict[str, Any]] | None = None
    if removable:
        from amc_mobile.search.ddc.units import removable_units

        unit_rows = [{"name": u.name, "kind": u.kind, "channels": u.out_channels, "input_hw": list(u.input_hw),
                      "skip": u.skip, "macs": u.macs, "params": u.params}
                     for u in removable_units(net, desc.input_size)]
    if as_json:
        out = {"model": name, **desc.to_dict()}
        if group_rows is not None:
            out["groups"] = group_rows
        if unit_rows is not None:
            out["removable"] = unit_rows
        print(json.dumps(out, indent=2))
        return
    from rich.table import Table

    table = Table("#", "layer", "type", "in", "out", "k", "s", "groups", "input", "MACs", "params")
    for i, s in enumerate(desc.layers):
        table.add_row(str(i), s.name, s.type, str(s.in_channels), str(s.out_channels), str(s.kernel),
                      str(s.stride), str(s.groups), f"{s.input_hw[0]}x{s.input_hw[1]}", f"{s.macs:,}",
                      f"{s.params:,}")
    console.print(table)
    console.print(f"{name} @ {desc.input_size}px: "
                  f"{desc.macs / 1e6:.1f}M MACs, {desc.params / 1e6:.2f}M params")
    if group_rows is not None:
        gt = Table("#", "group", "full width")
        for i, g in enumerate(group_rows):
            gt.add_row(str(i), str(g["name"]), str(g["width"]))
        console.print(gt)
    if unit_rows is not None:
        ut = Table("#", "removable unit", "kind", "channels", "input", "shortcut", "MACs", "params")
        for i, u in enumerate(unit_rows):
            ut.add_row(str(i), str(u["name"]), str(u["kind"]), str(u["channels"]),
                       f"{u['input_hw'][0]}x{u['input_hw'][1]}", "yes" if u["skip"] else "no", f"{u['macs']:,}",
                       f"{u['params']:,}")
        console.print(ut)
