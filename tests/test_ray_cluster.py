"""Scale-out on a real two-node Ray cluster with loopback ADB stand-in phones.

Ray registers nodes under the machine's interface address, so the cluster runs in its own network
namespace with only loopback up (``unshare -n``, needs root): ``test_ray_suite_in_loopback_netns``
re-runs this file there, where every node is 127.0.0.1 and nothing can leave the machine. Inside, a
head node advertises stand-in phone ``pixel1-a`` and a second node ``pixel1-b`` (both of model
``pixel1``), each started with ``amc-bench worker``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from amc_mobile.cli.bench import app
from amc_mobile.cli.common import run_app
from amc_mobile.errors import UserError

pytestmark = pytest.mark.ray
IN_NETNS = os.environ.get("AMC_RAY_NETNS") == "1"
inner = pytest.mark.skipif(not IN_NETNS, reason="runs inside the loopback-only namespace "
                           "(test_ray_suite_in_loopback_netns)")
PROFILE = {"name": "pixel1", "backend": "android", "threads": 1, "warmup_runs": 1, "runs": 3, "repeats": 1,
           "min_window_ms": 0.0, "calibrate_overhead": False}


def test_ray_suite_in_loopback_netns(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    if IN_NETNS:
        pytest.skip("this is the inner run")
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root with unshare and ip to make a loopback-only network namespace")
    env = {**os.environ, "AMC_RAY_NETNS": "1", "HOME": str(tmp_path / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    script = 'ip link set lo up && exec "$0" -m pytest -q -x -p no:cacheprovider -m ray "$1"'
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script, sys.executable, __file__], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    tail = (proc.stdout[-6000:] + "\n" + proc.stderr[-3000:]).strip()
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "skipped" in proc.stdout, tail  # the inner tests really ran


# ------------------------------------------------------------------------------------------------
# Inside the namespace
# ------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _device(name: str, dev: Any, tmp: Path) -> dict[str, Any]:
    return {"name": name, "profile": dict(PROFILE), "required": True,
            "options": {"address": dev.address, "key_path": str(tmp / "adbkey"), "binary": str(tmp / "benchmark_model"),
                        "core_mask": "c", "cooldown_s": 0.0, "retries": 1, "connect_timeout_s": 3.0}}


def _devices_file(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "devices": entries}))
    return path


class Cluster:
    def __init__(self, tmp: Path, phones: dict[str, Any]) -> None:
        self.tmp = tmp
        self.phones = phones
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                    "RAY_health_check_failure_threshold": "5", "RAY_health_check_initial_delay_ms": "0"}

    def start(self, node: str, args: list[str]) -> None:
        log = open(self.tmp / f"{node}.log", "wb")  # noqa: SIM115 - the node's output, read on failure
        self.procs[node] = subprocess.Popen(
            [sys.executable, "-m", "amc_mobile.cli.bench", "worker", *args, "--num-cpus", "1",
             "--object-store-mb", "100", "--node-ip", "127.0.0.1"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for(self, names: set[str], timeout_s: float = 120.0) -> None:
        from amc_mobile.distributed.cluster import cluster_devices, ray_session

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node, p in self.procs.items():
                assert p.poll() is None, f"{node} exited: " + (self.tmp / f"{node}.log").read_text()[-3000:]
            try:  # the head writes its auth token before it listens: connect only once it listens
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
            except OSError:
                time.sleep(1.0)
                continue
            try:
                with ray_session(self.address):
                    if {d.name for d in cluster_devices()} >= names:
                        return
            except UserError:
                pass
            time.sleep(1.0)
        raise AssertionError(f"cluster never offered {names}")

    def kill(self, node: str) -> None:
        """The node's whole process group (raylet, its workers): a host that dies."""
        p = self.procs[node]
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def stop(self) -> None:
        for node in reversed(list(self.procs)):
            p = self.procs[node]
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from android_harness.loopback import LoopbackAdbDevice

    tmp = tmp_path_factory.mktemp("ray")
    (tmp / "benchmark_model").write_bytes(b"\x7fELF placeholder: the stand-in runs models with host LiteRT\n")
    with LoopbackAdbDevice(tmp / "phone-a") as a, LoopbackAdbDevice(tmp / "phone-b") as b:
        c = Cluster(tmp, {"pixel1-a": a, "pixel1-b": b})
        try:
            c.start("head", ["--head", "--port", str(c.port), "--devices",
                             str(_devices_file(tmp / "head.yaml", [_device("pixel1-a", a, tmp)]))])
            c.wait_for({"pixel1-a"})
            c.start("node2", ["--address", c.address, "--devices",
                              str(_devices_file(tmp / "node2.yaml", [_device("pixel1-b", b, tmp)]))])
            c.wait_for({"pixel1-a", "pixel1-b"})
            yield c
        finally:
            c.stop()


@inner
def test_each_node_advertises_its_own_phone(cluster: Cluster) -> None:
    from amc_mobile.distributed.cluster import cluster_devices, devices_of_model, ray_session

    with ray_session(cluster.address):
        found = {d.name: d for d in cluster_devices()}
        assert set(found) == {"pixel1-a", "pixel1-b"}
        assert found["pixel1-a"].model == found["pixel1-b"].model == "pixel1"
        assert found["pixel1-a"].node_id != found["pixel1-b"].node_id  # two hosts, one phone each
        with pytest.raises(UserError, match=r"no Ray node advertises a device of model 'pixel2'.*pixel1-a \(pixel1\)"):
            devices_of_model("pixel2")


@inner
def test_a_phone_connected_later_joins_without_restarting(cluster: Cluster, tmp_path: Path) -> None:
    from amc_mobile.distributed.cluster import cluster_devices, ray_session
    from android_harness.loopback import LoopbackAdbDevice

    with LoopbackAdbDevice(tmp_path / "phone-c") as c:
        entries = [_device("pixel1-c", c, cluster.tmp),
                   {**_device("pixel1-gone", c, cluster.tmp), "options": {"address": "127.0.0.1:9", "retries": 0,
                                                                          "connect_timeout_s": 1.0}}]
        cluster.start("node3", ["--address", cluster.address, "--devices",
                                str(_devices_file(tmp_path / "node3.yaml", entries))])
        try:
            cluster.wait_for({"pixel1-a", "pixel1-b", "pixel1-c"})
            with ray_session(cluster.address):
                found = {d.name: d for d in cluster_devices()}
            assert found["pixel1-c"].model == "pixel1" and "pixel1-gone" not in found  # checked, not advertised
            assert "not advertised: pixel1-gone" in (cluster.tmp / "node3.log").read_text()
        finally:
            cluster.kill("node3")


@inner
def test_parallel_evaluation_equals_serial(cluster: Cluster) -> None:
    """AMC's candidate evaluator through the Ray map: the same metrics, in the same order."""
    import torch

    from amc_mobile.distributed.pool import RayMap, ray_pool
    from amc_mobile.models import create_model
    from amc_mobile.models.arch import require_arch
    from amc_mobile.pruning import ChannelPruner, find_groups, round_channels
    from amc_mobile.search.evaluate import Evaluator

    torch.manual_seed(0)
    net = create_model("mobilenet_v1_cifar", width_mult=0.25, input_size=16).eval()
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(24, require_arch(net).in_chans, 16, 16, generator=gen)
    labels = torch.randint(0, 10, (24,), generator=gen)
    ev = Evaluator(ChannelPruner(net, 16, calib_images=None), {"search": [(images, labels)]}, images[:16])
    groups = find_groups(net, 16)
    policies = [[round_channels(g.width, r) for g in groups] for r in (1.0, 0.75, 0.5, 0.3)]
    serial = ev.evaluate_many(policies)
    with ray_pool(2, cluster.address) as map_fn:
        assert isinstance(map_fn, RayMap)
        parallel = ev.evaluate_many(policies, map_fn=map_fn)
    assert [r.keep for r in parallel] == [r.keep for r in serial]
    assert [(r.top1, r.top5, r.n) for r in parallel] == [(r.top1, r.top5, r.n) for r in serial]
    assert [r.loss for r in parallel] == pytest.approx([r.loss for r in serial], rel=1e-6)


def _crash_twice_then_square(args: tuple[str, int]) -> int:
    """x*x, but the worker evaluating x == 2 dies (os._exit) the first two times: a lost host."""
    marker_dir, x = args
    count = Path(marker_dir) / f"{x}.count"
    n = int(count.read_text()) if count.exists() else 0
    if x == 2 and n < 2:
        count.write_text(str(n + 1))
        os._exit(1)
    return x * x


def _niceness(_: int) -> int:
    return os.nice(0)


@inner
def test_an_evaluation_whose_worker_dies_is_run_again(cluster: Cluster, tmp_path: Path) -> None:
    """Ray retries a crashed task once; the pool runs it again after that (the work is pure): every
    result arrives, in order."""
    import ray.cloudpickle

    from amc_mobile.distributed.cluster import ray_session
    from amc_mobile.distributed.pool import RayMap

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    with ray_session(cluster.address) as session:
        pool = RayMap(session, 2)
        got = pool(_crash_twice_then_square, [(str(tmp_path), x) for x in range(4)])
        nice = pool(_niceness, [0, 1])
    assert got == [0, 1, 4, 9]
    node = os.nice(0)  # the test's own priority (0 unless run under nice), which the node inherits
    assert nice == [node, node]  # workers at the node's priority, not Ray's default nice 15
    assert pool.retries == 1 and (tmp_path / "2.count").read_text() == "2"


def test_ray_auth_tokens_between_driver_and_head(tmp_path: Path) -> None:
    """A driver host with an auth token joins a head that runs without tokens; a driver without the
    head's token, or with another one, is refused in one line. Runs its own heads in a loopback-only namespace."""
    pytest.importorskip("ray")
    if IN_NETNS:
        pytest.skip("runs its own namespace from the outer run")
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root with unshare and ip to make a loopback-only network namespace")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    driver = ("import sys\n"
              "from amc_mobile.distributed.cluster import ray_session\n"
              "from amc_mobile.errors import UserError\n"
              "try:\n"
              "    with ray_session(sys.argv[1]) as ray:\n"
              "        print('JOINED', int(ray.cluster_resources()['CPU']))\n"
              "except UserError as exc:\n"
              "    print('REFUSED', exc)\n")
    (tmp_path / "driver.py").write_text(driver)
    script = f"""
ip link set lo up
export RAY_USAGE_STATS_ENABLED=0
mkdir -p {tmp_path}/head1 {tmp_path}/head2 {tmp_path}/tok/.ray {tmp_path}/none
head() {{ HOME=$1 RAY_AUTH_MODE=$2 {ray_bin} start --head --port $3 --num-cpus 1 --object-store-memory 80000000 \
  --include-dashboard false --node-ip-address 127.0.0.1 > {tmp_path}/head$3.log 2>&1 || cat {tmp_path}/head$3.log; }}
stop() {{ HOME=$1 {ray_bin} stop --force > /dev/null 2>&1; }}
mkdir -p {tmp_path}/head2/.ray
printf '%s' 0123456789abcdef0123456789abcdef > {tmp_path}/tok/.ray/auth_token
printf '%s' fedcba9876543210fedcba9876543210 > {tmp_path}/head2/.ray/auth_token
head {tmp_path}/head1 disabled 6391
HOME={tmp_path}/tok {sys.executable} {tmp_path}/driver.py 127.0.0.1:6391
stop {tmp_path}/head1
head {tmp_path}/head2 token 6392
HOME={tmp_path}/none {sys.executable} {tmp_path}/driver.py 127.0.0.1:6392
HOME={tmp_path}/tok {sys.executable} {tmp_path}/driver.py 127.0.0.1:6392
stop {tmp_path}/head2
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("JOINED", "REFUSED"))]
    assert len(lines) == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert lines[0] == "JOINED 1"  # a token the head does not ask for is harmless
    for refused in lines[1:]:  # no token, then another head's token: one line each
        assert refused.startswith("REFUSED cannot join the Ray cluster at 127.0.0.1:6392: the head requires a "
                                  "Ray auth token"), refused


def ddc_students(n_images: int, size: int = 16) -> tuple[Any, list[list[str]]]:
    """DDC's student evaluation context on random data, and N architectures (removed blocks) to score."""
    import torch

    from amc_mobile.models import create_model
    from amc_mobile.models.arch import require_arch
    from amc_mobile.search.ddc.search import DDCConfig, StudentContext
    from amc_mobile.search.ddc.units import removable_units

    torch.manual_seed(0)
    teacher = create_model("mobilenet_v1_cifar", width_mult=0.25, input_size=size).eval()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n_images, require_arch(teacher).in_chans, size, size, generator=gen)
    y = torch.randint(0, 10, (n_images,), generator=gen)
    with torch.no_grad():
        logits = teacher(x)
    cfg = DDCConfig(student_images=n_images, bn_images=n_images // 2, student_batch_size=max(2, n_images // 4),
                    val_size=n_images, measure=False)
    ctx = StudentContext(teacher, x, y, logits, x[: n_images // 2], [(x, y)], cfg)
    blocks = [e.name for e in removable_units(teacher, size)]
    archs = [[], *([b] for b in blocks[:3]), blocks[:2]]
    return ctx, archs


@inner
def test_parallel_ddc_students_equal_serial(cluster: Cluster) -> None:
    """DDC's N students of one iteration (short KD pass each) on two Ray workers: same as serial."""
    from amc_mobile.distributed.cluster import ray_session
    from amc_mobile.distributed.pool import RayMap
    from amc_mobile.search.ddc.search import evaluate_students

    ctx, archs = ddc_students(32)
    serial = evaluate_students(ctx, archs)
    with ray_session(cluster.address) as ray:
        parallel = evaluate_students(ctx, archs, map_fn=RayMap(ray, 2))
    strip = [{k: v for k, v in r.items() if k != "train_s"} for r in serial]
    assert [{k: v for k, v in r.items() if k != "train_s"} for r in parallel] == strip


@inner
def test_farm_runs_each_phone_on_its_own_node(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.phones["pixel1-a"], cluster.phones["pixel1-b"]
    runs_before = (a.benchmark_runs, b.benchmark_runs)
    farm = _devices_file(tmp_path / "farm.yaml", [
        _device("pixel1-a", a, cluster.tmp), _device("pixel1-b", b, cluster.tmp),
        {"name": "pixel1-away", "profile": dict(PROFILE), "required": False}])
    data = yaml.safe_load(farm.read_text())
    data.update({"threshold": 0.0, "rounds": 2})
    farm.write_text(yaml.safe_dump(data))
    out = tmp_path / "report"
    rc = run_app(app, ["farm", "--farm", str(farm), "--baseline", "mobilenet_v1_cifar@0.25",
                       "--candidate", "mobilenet_v1_cifar@0.125", "--out", str(out), "--ray", cluster.address])
    report = json.loads((out / "farm-report.json").read_text())
    rows = {d["device"]: d for d in report["devices"]}
    assert rc == 0, rows
    assert rows["pixel1-a"]["status"] == rows["pixel1-b"]["status"] == "ok"
    assert rows["pixel1-a"]["speedup"] > 0 and rows["pixel1-b"]["pairs"] >= 2
    assert rows["pixel1-away"]["status"] == "unreachable" and "no Ray node" in rows["pixel1-away"]["reason"]
    assert (out / "farm-report.md").exists() and (out / "farm-speedup.png").read_bytes()[:4] == b"\x89PNG"
    assert a.benchmark_runs > runs_before[0] and b.benchmark_runs > runs_before[1]  # both phones measured
    # a required device that no node advertises: one line before anything runs
    data["devices"][2]["required"] = True
    farm.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=r"required farm device\(s\) pixel1-away not advertised.*pixel1-a"):
        from amc_mobile.distributed.farm import ray_mapper
        from amc_mobile.farm import load_farm, run_farm

        run_farm(load_farm(farm), "mobilenet_v1_cifar@0.25", "mobilenet_v1_cifar@0.125", tmp_path / "r2",
                 mapper=ray_mapper(cluster.address))


@inner
def test_sharded_profile_survives_a_killed_node(cluster: Cluster, tmp_path: Path) -> None:
    """The grid is split over both phones; node2 dies mid-run; the table ends complete, no duplicates."""
    import pandas as pd

    from amc_mobile.distributed.profile import profile_sharded
    from amc_mobile.latency.table import LatencyTable
    from amc_mobile.models import create_model

    net = create_model("mobilenet_v1_cifar", width_mult=0.25, input_size=4)  # 28 grid rows: a short test
    out = tmp_path / "pixel1.csv"
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if "pixel1-b" in out.read_text() and cluster.procs["node2"].poll() is None:
            cluster.kill("node2")  # node2 has delivered rows: now its host dies mid-shard

    summary = profile_sharded("pixel1", net, out, address=cluster.address, input_size=4, points=2, batch_rows=2,
                              calibration=None, tolerance=10.0, progress=progress)
    rows = pd.read_csv(out)
    keys = list(zip(rows["slot"], rows["cin"], rows["cout"], strict=True))
    assert len(keys) == len(set(keys)) == summary.grid_points == summary.rows  # complete, no duplicates
    assert set(rows["device"]) == {"pixel1-a", "pixel1-b"}  # each row names the phone that measured it
    assert summary.devices["pixel1-b"].rows < summary.devices["pixel1-a"].rows
    assert "pixel1-b" in summary.lost and "pixel1-a" not in summary.lost
    assert summary.spread["reference"] is not None
    assert "pixel1-b" in summary.summary_line() and "lost: pixel1-b" in summary.summary_line()
    table = LatencyTable.load(out)
    assert not table.incomplete and table.predict(net) > 0

    # resumed on an embedded single-node Ray ('--ray local'): no grid row again, then the calibration
    from amc_mobile.farm.spec import FarmDevice

    entry = _device("pixel1-a", cluster.phones["pixel1-a"], cluster.tmp)
    local = FarmDevice(name="pixel1-a", profile=entry["profile"], options=entry["options"])
    again = profile_sharded("pixel1", net, out, address="local", local_device=local, input_size=4, points=2,
                            calibration=0, tolerance=10.0)
    assert again.new_rows == 0 and again.rows == summary.rows
    calib = pd.read_csv(out.with_name(out.stem + ".calib.csv"))
    assert again.calibration_rows_new == len(calib) >= 4 and set(calib["device"]) == {"pixel1-a"}
    assert LatencyTable.load(out).calibration["rows"] == len(calib)


@inner
def test_search_cli_with_workers_equals_serial(cluster: Cluster, toy: Path, tmp_path: Path) -> None:
    """Last of the cluster tests (node2 is gone by now: the cluster's jobs queue on the head). In the
    loaded runs of 2026-12-01 the DDC test, run after this one, failed with OwnerDiedError on its own
    driver's objects 3 times in 4 (never without it; never on an idle machine) — not understood yet.

    ``amc-mobile search --workers 2`` as a user runs it: on the cluster (``--ray HEAD:PORT``) for the
    AMC agent's top-k re-scoring, on an embedded Ray (the default) for the greedy baseline's per-step
    candidates; every episode, the final pick and the saved model equal the serial run's."""
    import pandas as pd
    import torch

    common = ["--checkpoint", str(toy), "--flops-budget", "50%", "--val-size", "100", "--bn-images", "50",
              "--no-progress", "--no-measure"]
    runs = {
        "amc-serial": ["--episodes", "4", "--warmup", "2", "--workers", "1"],
        "amc-ray": ["--episodes", "4", "--warmup", "2", "--workers", "2", "--ray", cluster.address],
        "greedy-serial": ["--method", "greedy", "--workers", "1"],
        "greedy-ray": ["--method", "greedy", "--workers", "2"],
    }
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import conftest; "
            "conftest.register_toy(Path(sys.argv[2])); from amc_mobile.cli.common import run_app; "
            "from amc_mobile.cli.main import app; sys.exit(run_app(app, sys.argv[3:]))")
    for name, extra in runs.items():  # each its own process, as a user runs it (the toy data set registered)
        args = ["search", *common, *extra, "--out", str(tmp_path / name)]
        proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(toy.parent / "data"), *args],
                              capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, name + ": " + proc.stdout[-2000:] + proc.stderr[-2000:]
    for method in ("amc", "greedy"):
        a, b = tmp_path / f"{method}-serial", tmp_path / f"{method}-ray"
        ea, eb = pd.read_csv(a / "episodes.csv"), pd.read_csv(b / "episodes.csv")
        assert list(ea["keep_channels"]) == list(eb["keep_channels"]), method
        assert ea["reward"].tolist() == pytest.approx(eb["reward"].tolist()), method
        sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
        assert sa["best_episode"] == sb["best_episode"] and sa["final"] == sb["final"], method
        wa = torch.load(a / "pruned.pt", weights_only=True)["state_dict"]
        wb = torch.load(b / "pruned.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa), method


def test_unreachable_head_is_one_line() -> None:
    pytest.importorskip("ray")
    from amc_mobile.distributed.cluster import check_head, parse_address

    port = _free_port()  # nothing listens there
    with pytest.raises(UserError, match=rf"cannot reach the Ray head at 127.0.0.1:{port}: .*refused"):
        check_head(f"127.0.0.1:{port}")
    with pytest.raises(UserError, match="HOST:PORT"):
        parse_address("no-port")
    rc = run_app(app, ["worker", "--address", f"127.0.0.1:{port}"])
    assert rc == 2


def test_device_spread_is_reported(tmp_path: Path) -> None:
    """Two devices of one model whose reference workloads differ: the spread names both."""
    from amc_mobile.distributed.profile import device_agreement
    from amc_mobile.latency.table import COLUMNS

    path = tmp_path / "t.csv"
    lines = [",".join([*COLUMNS, "live", "device"])]
    for i, (dev, ref) in enumerate([("p-a", 2.0), ("p-a", 2.0), ("p-b", 2.6), ("p-b", 2.6)]):
        vals = {c: "1" for c in COLUMNS} | {"slot": "conv|k3|s1|8x8", "cin": str(i), "ref_ms": str(ref)}
        lines.append(",".join([*(vals[c] for c in COLUMNS), "", dev]))
    path.write_text("\n".join(lines) + "\n")
    agree = device_agreement(path)
    assert agree["devices"]["p-a"] == {"rows": 2, "ref_ms": 2.0}
    assert agree["spread"]["reference"] == pytest.approx(0.6 / 2.3)
    assert "p-a 2.000 ms vs p-b 2.600 ms" in agree["disagreement"]
