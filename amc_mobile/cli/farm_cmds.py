"""``amc-bench farm``: speedup of a candidate over a baseline on every device of a farm file."""

from __future__ import annotations

from pathlib import Path

import typer

from amc_mobile.cli.common import console


def farm(
    farm_file: Path = typer.Option(..., "--farm", help="Farm YAML (see device_profiles/farms/example.yaml)."),
    baseline: str = typer.Option(..., "--baseline", help="Baseline model: zoo:NAME, checkpoint path, or REGISTRY_NAME[@WIDTH]."),
    candidate: str = typer.Option(..., "--candidate", help="Candidate model, same forms as --baseline."),
    out: Path = typer.Option(Path("runs/farm"), "--out", help="Directory for farm-report.{md,json} and farm-speedup.png."),
    only: list[str] = typer.Option([], "--only", help="Measure only these farm devices (repeatable)."),
    ray: str = typer.Option(None, "--ray", help="HEAD:PORT of a Ray cluster: run each device on the host that "
                            "advertises it ('local': an embedded Ray on this machine). See 'Scale out'."),
) -> int:
    """Run baseline and candidate interleaved on every farm device in parallel; exit 1 when a device's
    speedup is below the threshold or a required device is unreachable."""
    from amc_mobile.farm import load_farm, markdown_table, run_farm

    spec = load_farm(farm_file)
    mapper = None
    if ray is not None:
        from amc_mobile.distributed.farm import ray_mapper

        mapper = ray_mapper(ray)
    results, paths = run_farm(spec, baseline, candidate, out, only=list(only) or None, mapper=mapper)
    console.print(markdown_table(results, spec, baseline, candidate), markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {paths['markdown']}  {paths['json']}  {paths['png']}", markup=False, highlight=False,
                  soft_wrap=True)
    return 1 if any(r.fails_job for r in results) else 0


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("farm")(farm)
