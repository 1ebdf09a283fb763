"""``amc-bench worker``: join (or start) a Ray cluster as a device host advertising its phones."""

from __future__ import annotations

from pathlib import Path

import typer

from amc_mobile.cli.common import console


def worker(
    address: str = typer.Option(None, "--address", help="HEAD:PORT of the cluster to join (omit with --head)."),
    head: bool = typer.Option(False, "--head", help="Start the cluster's head node here instead of joining one."),
    port: int = typer.Option(6379, "--port", help="With --head: the port the head listens on."),
    device: list[str] = typer.Option([], "--device", "-d", help="A device profile usable on this host, named "
                                     "after the profile (repeatable; see 'amc-bench devices')."),
    devices: Path = typer.Option(None, "--devices", help="YAML of this host's devices, farm-file format "
                                 "('devices:' entries with name, profile, options such as the adb address)."),
    num_cpus: int = typer.Option(1, "--num-cpus", help="CPUs this node offers to Ray (exports, evaluations)."),
    object_store_mb: int = typer.Option(200, "--object-store-mb", help="Ray object store size on this node (MB)."),
    node_ip: str = typer.Option(None, "--node-ip", help="Address to register this node under (default: this "
                                "host's address on the route to the head)."),
) -> int:
    """Advertise this host's reachable devices to a Ray cluster (resources device:NAME and model:MODEL)
    and serve until stopped (Ctrl-C). A phone connected later: run this again for it; it joins as one
    more node on this host, the cluster keeps running."""
    from amc_mobile.distributed.worker import host_devices, plan_worker, run_worker
    from amc_mobile.errors import UserError

    if head == (address is not None):
        raise UserError("give exactly one of --address HEAD:PORT (join) or --head (start the cluster here)")
    plan = plan_worker(address, host_devices(device, devices), head_port=port, num_cpus=num_cpus,
                       object_store_mb=object_store_mb, node_ip=node_ip)
    for name, why in plan.skipped:
        console.print(f"not advertised: {name}: {why}", markup=False, highlight=False, soft_wrap=True)
    names = ", ".join(d.name for d in plan.devices) or "no devices (CPU only)"
    where = f"head on port {port}" if head else f"joining {address}"
    console.print(f"worker: {where}; advertising {names}", markup=False, highlight=False, soft_wrap=True)
    return run_worker(plan)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("worker")(worker)
