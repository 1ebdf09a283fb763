"""The device farm on Ray: each device's ABBA-interleaved runs go to the host that advertises it.

:func:`ray_mapper` is a :data:`amc_mobile.farm.run.Mapper` for :func:`amc_mobile.farm.run.run_farm`:
the task for farm device ``NAME`` asks for the resource ``device:NAME`` (so Ray places it on that
device's host) and, for host runtimes, the node's ``amc-host-runtime`` (one host measurement per node
at a time, as the thread farm's lock does). Reports, exit codes and required/optional semantics are
those of the thread farm: an optional device no node advertises is an ``unreachable`` row; a
required one is one line before anything is measured.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from amc_mobile.distributed.cluster import (
    DEVICE_RESOURCE,
    HOST_RUNTIME_RESOURCE,
    LOCAL,
    advertised_names,
    cluster_devices,
    device_model,
    ray_name,
    ray_session,
)
from amc_mobile.errors import UserError
from amc_mobile.farm.run import REMOTE_BACKENDS, DeviceFn, DeviceResult, Mapper
from amc_mobile.farm.spec import FarmDevice, resolve_profile


def _backend_name(device: FarmDevice, farm_path: str) -> str:
    try:
        return str(resolve_profile(device, farm_path).backend)
    except UserError:
        return "?"


def _threshold(device: FarmDevice, keywords: dict[str, Any]) -> float:
    spec = keywords.get("spec")
    return device.threshold if device.threshold is not None else float(getattr(spec, "threshold", 1.0))


def _run_one(fn: DeviceFn, device: FarmDevice) -> DeviceResult:
    from amc_mobile.threads import torch_threads

    with torch_threads(1):
        return fn(device)


def ray_mapper(address: str) -> Mapper:
    """A farm mapper running on the Ray cluster at ``address`` (``HOST:PORT``, or ``local``: an
    embedded Ray on this machine advertising every farm device)."""

    def mapper(fn: DeviceFn, devices: Sequence[FarmDevice]) -> list[DeviceResult]:
        for d in devices:
            ray_name(d.name, "farm device name")
        farm_path = ""
        keywords: dict[str, Any] = {}
        if isinstance(fn, functools.partial):
            keywords = dict(fn.keywords)
            farm_path = getattr(keywords.get("spec"), "path", "")
            keywords["work_dir"] = None  # artefacts in each host's own cache, not the driver's --out
            fn = functools.partial(fn.func, *fn.args, **keywords)
        local = [(d.name, device_model(d)) for d in devices]
        with ray_session(address, local_devices=local, num_cpus=1) as ray:
            offered = {d.name for d in cluster_devices()}
            absent = [d for d in devices if d.name not in offered]
            required = [d.name for d in absent if d.required]
            if required:
                raise UserError(f"required farm device(s) {', '.join(required)} not advertised by any Ray node; "
                                f"advertised: {advertised_names(cluster_devices())}")
            fn_ref = ray.put(fn)
            remote = ray.remote(_run_one)
            refs: dict[str, Any] = {}
            for d in devices:
                if d in absent:
                    continue
                res = {DEVICE_RESOURCE + d.name: 1.0}
                if _backend_name(d, farm_path) not in REMOTE_BACKENDS:
                    res[HOST_RUNTIME_RESOURCE] = 1.0
                refs[d.name] = remote.options(num_cpus=0, resources=res, max_retries=0).remote(fn_ref, d)
            out = []
            for d in devices:
                if d.name not in refs:
                    threshold = _threshold(d, keywords)
                    out.append(DeviceResult(device=d.name, backend=_backend_name(d, farm_path), status="unreachable",
                                            required=d.required, threshold=threshold,
                                            reason="no Ray node advertises this device"))
                    continue
                try:
                    out.append(ray.get(refs[d.name]))
                except ray.exceptions.RayError as exc:  # its host died mid-run
                    threshold = _threshold(d, keywords)
                    first = str(exc).strip().splitlines()
                    out.append(DeviceResult(device=d.name, backend=_backend_name(d, farm_path), status="error",
                                            required=d.required, threshold=threshold,
                                            reason=f"{type(exc).__name__}: {first[0][:200] if first else ''}"))
            return out

    return mapper


__all__ = ["LOCAL", "ray_mapper"]
