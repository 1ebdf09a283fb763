"""Joining a Ray cluster and finding its devices.

A device host advertises each phone it can reach as the custom resource ``device:NAME`` (amount 1:
one measurement at a time) plus ``model:MODEL`` (one unit per device of that model) and labels its
node ``amc-mobile/NAME=MODEL``, so a driver can list which physical devices of a model the cluster
has. A task that must run on a phone asks for ``device:NAME``; Ray places it on the host holding it.
How a host reaches its phones (profile, adb address, key) stays on that host: :func:`save_host_devices`.

Only the address the user gives (or 127.0.0.1 for ``local``) is contacted; Ray's usage statistics
are switched off.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.farm.spec import FarmDevice

DEVICE_RESOURCE = "device:"
MODEL_RESOURCE = "model:"
HOST_RUNTIME_RESOURCE = "amc-host-runtime"  # one per node: host runtimes (onnxruntime, ...) never time each other
LABEL_PREFIX = "amc-mobile/"
LOCAL = "local"
AUTH_MODE_ENV = "RAY_AUTH_MODE"  # Ray's switch: "token" or "disabled"
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
# set (unless the user did) before Ray starts: no usage statistics, every log line, and workers at the
# node's own priority (Ray starts them at nice 15: on a busy host a latency measurement or a search's
# evaluation would then wait behind every other job)
_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_worker_niceness": "0"}


def require_ray() -> ModuleType:
    """The ``ray`` module, or one line saying how to install the extra."""
    os.environ.update({k: os.environ.get(k, v) for k, v in _RAY_ENV.items()})
    try:
        import ray
    except ImportError:
        raise UserError("Ray is not installed: pip install 'amc-mobile[ray]'") from None
    return ray


def ray_name(name: str, what: str = "device name") -> str:
    """``name`` if Ray can carry it in a resource and a node label (letters, digits, ``._-``, <= 63)."""
    if not isinstance(name, str) or not _LABEL_NAME.match(name):
        raise UserError(f"invalid {what} {name!r} for a Ray cluster: use letters, digits, '.', '_' or '-', "
                        "starting and ending with a letter or digit, at most 63 characters")
    return name


def device_model(device: FarmDevice) -> str:
    """The device model a host device belongs to: its profile's name (``pixel1`` for ``profile: pixel1``
    or ``pixel1.yaml``), the inline profile's ``name``, else the device's own name."""
    if isinstance(device.profile, str):
        return Path(device.profile).stem if device.profile.endswith((".yaml", ".yml")) else device.profile
    return str(device.profile.get("name") or device.name)


def device_resources(devices: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Custom resources of a host with these (device name, model) pairs."""
    res: dict[str, float] = {HOST_RUNTIME_RESOURCE: 1.0}
    for name, model in devices:
        res[DEVICE_RESOURCE + ray_name(name)] = 1.0
        key = MODEL_RESOURCE + ray_name(model, "device model")
        res[key] = res.get(key, 0.0) + 1.0
    return res


def device_labels(devices: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Node labels naming each device's model (``amc-mobile/NAME: MODEL``)."""
    return {LABEL_PREFIX + ray_name(name): ray_name(model, "device model") for name, model in devices}


# ---------------------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------------------

def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), or one line saying what was expected."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"Ray head address must be HOST:PORT (e.g. 10.0.0.5:6379) or 'local', got '{address}'")
    return host.strip("[]"), int(port)


def check_head(address: str, timeout_s: float = 5.0) -> str:
    """Connect to the head's port once; return this machine's address on that route (the node IP
    to register under). An unreachable head is one line naming the address and what happened."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            return str(sock.getsockname()[0])
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UserError(f"cannot reach the Ray head at {address}: {why} (start it on the head host with "
                        f"'amc-bench worker --head --port {port}', or check the address and firewall)") from None


# ---------------------------------------------------------------------------------------------------
# Sessions and what the cluster offers
# ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def ray_session(address: str, local_devices: Sequence[tuple[str, str]] = (), num_cpus: int | None = None,
                object_store_mb: int = 100) -> Iterator[ModuleType]:
    """Connect to the cluster at ``address`` (``HOST:PORT``), or start an embedded single-node Ray
    (``local``) advertising ``local_devices`` as (name, model) pairs; shut down on exit."""
    ray = require_ray()
    if ray.is_initialized():  # already connected (a library caller's own session): use it as is
        yield ray
        return
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING",
                          "configure_logging": True}
    if address == LOCAL:
        # its own session root: a cluster node on this host keeps /tmp/ray (and its session_latest link,
        # which later drivers on this host would otherwise follow to this embedded, short-lived Ray)
        ray.init(address="local", num_cpus=num_cpus or 1, resources=device_resources(local_devices),
                 labels=device_labels(local_devices), object_store_memory=object_store_mb * 1024 * 1024,
                 _node_ip_address="127.0.0.1", _temp_dir=local_ray_dir(), **kw)
    else:
        node_ip = check_head(address)
        token_auth_if_available()  # a head without tokens accepts a driver that sends one (Ray 2.60)
        try:
            ray.init(address=address, _node_ip_address=node_ip, **kw)
        except (ConnectionError, RuntimeError, TimeoutError, ray.exceptions.RayError) as exc:
            raise UserError(f"cannot join the Ray cluster at {address}: {_join_failure(exc)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _join_failure(exc: BaseException) -> str:
    """Why ``ray.init`` could not join, in words: an auth-token refusal is named (Ray reports it only
    in the chained cause, after a plain "Failed to connect")."""
    chain: list[str] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 5:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    if any("AuthToken" in t or "authentication token" in t.lower() for t in chain):
        return ("the head requires a Ray auth token that this host lacks or that differs (copy the head host's "
                "~/.ray/auth_token here, or set RAY_AUTH_TOKEN)")
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def local_ray_dir() -> str:
    """Session root of an embedded single-node Ray: short (Unix socket paths live under it), per user."""
    import tempfile

    return str(Path(tempfile.gettempdir()) / f"amc-mobile-ray-{os.getuid()}")


def token_auth_if_available() -> bool:
    """Use this host's Ray auth token (``~/.ray/auth_token``) when it has one, as ``ray start --head``
    does; a joining ``ray start --address`` or ``ray.init(address=...)`` never does by itself, and a
    token-protected head refuses them ("Authentication token is missing or incorrect").
    A head running without tokens still accepts a driver that sends one (checked with Ray 2.60).
    True when this call turned token auth on (the user had not chosen with ``RAY_AUTH_MODE``)."""
    if os.environ.get(AUTH_MODE_ENV):
        return False
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: the user sets RAY_AUTH_MODE=token
        return False
    return bool(maybe_enable_token_auth_if_token_available(warn_if_disabled=False))


@dataclass(frozen=True)
class ClusterDevice:
    """A device some live node of the cluster advertises."""

    name: str
    model: str
    node_id: str
    node_ip: str


def cluster_devices() -> list[ClusterDevice]:
    """Every device advertised by a live node (needs a connected :func:`ray_session`)."""
    import ray

    out = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources") or {}
        for key, model in (node.get("Labels") or {}).items():
            if key.startswith(LABEL_PREFIX) and DEVICE_RESOURCE + key[len(LABEL_PREFIX):] in resources:
                out.append(ClusterDevice(key[len(LABEL_PREFIX):], str(model), str(node.get("NodeID", "")),
                                         str(node.get("NodeManagerAddress", ""))))
    return sorted(out, key=lambda d: d.name)


def advertised_names(devices: Sequence[ClusterDevice]) -> str:
    return ", ".join(f"{d.name} ({d.model})" for d in devices) or "none"


def devices_of_model(model: str) -> list[ClusterDevice]:
    """The cluster's devices of ``model``; none is one line listing what the cluster does advertise."""
    found = cluster_devices()
    mine = [d for d in found if d.model == model]
    if not mine:
        raise UserError(f"no Ray node advertises a device of model '{model}'; advertised: {advertised_names(found)} "
                        "(add one with 'amc-bench worker --address HEAD:PORT --device ...' on its host)")
    return mine


# ---------------------------------------------------------------------------------------------------
# How this host reaches its devices
# ---------------------------------------------------------------------------------------------------

def host_devices_dir() -> Path:
    from amc_mobile.storage import user_data_dir

    return user_data_dir() / "ray" / "devices"


def save_host_devices(devices: Sequence[FarmDevice]) -> None:
    """Remember, on this host, how each advertised device is reached (read back by tasks placed here)."""
    from amc_mobile.storage import atomic_write_json, safe_name

    for d in devices:
        atomic_write_json(host_devices_dir() / f"{safe_name(d.name, 'device name')}.json", asdict(d))


def load_host_device(name: str) -> FarmDevice:
    """The entry :func:`save_host_devices` wrote for ``name`` on this host."""
    from amc_mobile.storage import safe_name

    path = host_devices_dir() / f"{safe_name(name, 'device name')}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"this host has no usable record of device '{name}' ({path}: {exc}); "
                        "restart 'amc-bench worker' for it") from None
    return FarmDevice(**data)
