"""``amc-bench worker``: one Ray node on this host advertising the devices it can reach.

Each device is checked (the backend's availability check: adb connect for a phone) before it is
advertised; unreachable ones are listed and left out. The node is a plain ``ray start --block``
child, so stopping the worker (Ctrl-C) removes exactly this node. Ray's resources are fixed per
node, so a phone connected later joins by running the command again for it: a second node on the same
host holding only that device (the cluster keeps running).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from amc_mobile.distributed.cluster import (
    check_head,
    device_labels,
    device_model,
    device_resources,
    parse_address,
    ray_name,
    require_ray,
    save_host_devices,
    token_auth_if_available,
)
from amc_mobile.errors import UserError
from amc_mobile.farm.spec import FarmDevice, load_farm, resolve_profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerPlan:
    """What a worker advertises: reachable devices, the ones left out (with why), the ``ray start`` argv."""

    devices: tuple[FarmDevice, ...]
    skipped: tuple[tuple[str, str], ...]
    argv: tuple[str, ...]


def host_devices(profiles: Sequence[str] = (), devices_file: str | Path | None = None) -> list[FarmDevice]:
    """Devices named on the command line (profile names: the device is named after its profile) and
    those of a farm-format YAML (``devices:`` entries with name, profile, options)."""
    out = [FarmDevice(name=p, profile=p) for p in profiles]
    if devices_file is not None:
        spec = load_farm(devices_file)
        base = Path(spec.path).resolve().parent
        for d in spec.devices:
            prof = d.profile
            if isinstance(prof, str) and prof.endswith((".yaml", ".yml")) and (base / prof).exists():
                prof = str(base / prof)  # the record outlives the current directory
            out.append(replace(d, profile=prof))
    names = [d.name for d in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"device name(s) given twice: {', '.join(dupes)}")
    for d in out:
        ray_name(d.name)
        ray_name(device_model(d), "device model")
    return out


def reachable(devices: Sequence[FarmDevice]) -> tuple[list[FarmDevice], list[tuple[str, str]]]:
    """Split ``devices`` into those whose backend answers and (name, reason) for the others."""
    ok, skipped = [], []
    for d in devices:
        try:
            backend = resolve_profile(d).create_backend()
            try:
                why = backend.check_available()
            finally:
                backend.close()
        except UserError as exc:
            why = str(exc)
        if why:
            skipped.append((d.name, why))
        else:
            ok.append(d)
    return ok, skipped


def plan_worker(address: str | None, devices: Sequence[FarmDevice], *, head_port: int = 6379,
                num_cpus: int = 1, object_store_mb: int = 200, node_ip: str | None = None) -> WorkerPlan:
    """Check the head (``address``; None: this node is the head) and each device; build the
    ``ray start`` command. ``node_ip``: the address to register under (default: the route to the head)."""
    if address is not None:
        node_ip = node_ip or check_head(address)
    ok, skipped = reachable(devices)
    pairs = [(d.name, device_model(d)) for d in ok]
    ray_bin = str(Path(sys.executable).with_name("ray"))
    argv = [ray_bin if os.path.exists(ray_bin) else "ray", "start", "--block", "--disable-usage-stats",
            f"--num-cpus={num_cpus}", f"--object-store-memory={object_store_mb * 1024 * 1024}",
            f"--resources={json.dumps(device_resources(pairs))}"]
    labels = device_labels(pairs)
    if labels:
        argv.append("--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()))
    if address is None:
        argv += ["--head", f"--port={head_port}", "--include-dashboard=false"]
    else:
        parse_address(address)
        argv.append(f"--address={address}")
    if node_ip:
        argv.append(f"--node-ip-address={node_ip}")
    return WorkerPlan(tuple(ok), tuple(skipped), tuple(argv))


def run_worker(plan: WorkerPlan) -> int:
    """Record how this host reaches its devices, then run the Ray node until it stops; its exit code."""
    require_ray()
    token_auth_if_available()  # sets RAY_AUTH_MODE=token for the node when this host has a token
    save_host_devices(plan.devices)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(list(plan.argv), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
