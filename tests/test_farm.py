"""``amc-bench farm``: farm files, A/B interleaving, thresholds, unreachable devices, report files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from amc_mobile.cli.bench import app
from amc_mobile.cli.common import run_app
from amc_mobile.errors import UserError
from amc_mobile.farm import load_farm

FARMS = Path(__file__).resolve().parents[1] / "device_profiles" / "farms"


def fake_device(name: str, **kw: Any) -> dict[str, Any]:
    options = kw.pop("options", {})
    return {"name": name, "profile": {"backend": "fake-test", "warmup_runs": 1, "runs": 3, "min_window_ms": 0.0,
                                      "calibrate_overhead": False, "options": options}, **kw}


def write_farm(tmp_path: Path, devices: list[dict[str, Any]], threshold: float = 1.5) -> Path:
    p = tmp_path / "farm.yaml"
    p.write_text(yaml.safe_dump({"schema_version": 1, "name": "t", "threshold": threshold, "rounds": 2,
                                 "devices": devices}))
    return p


def farm_cli(farm: Path, out: Path) -> int:
    return run_app(app, ["farm", "--farm", str(farm), "--baseline", "mobilenet_v1_cifar",
                         "--candidate", "mobilenet_v1_cifar@0.5", "--out", str(out)])


def test_farm_passes_and_writes_markdown_json_png(tmp_path: Path, fake_backend: Any) -> None:
    farm = write_farm(tmp_path, [fake_device("phone-a", required=True), fake_device("phone-b")])
    assert farm_cli(farm, tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "farm-report.json").read_text())
    assert report["schema_version"] == 1 and report["passed"]
    rows = {d["device"]: d for d in report["devices"]}
    assert rows["phone-a"]["speedup"] == pytest.approx(2.0) and rows["phone-a"]["baseline_ms"] == pytest.approx(2.0)
    assert rows["phone-b"]["status"] == "ok"
    md = (tmp_path / "out" / "farm-report.md").read_text()
    assert "| phone-a | fake-test | 2.000 | 1.000 | 2.000 |" in md and "PASS" in md
    assert (tmp_path / "out" / "farm-speedup.png").read_bytes()[:4] == b"\x89PNG"
    # each device's windows are interleaved A/B (ABBA then BAAB), not all A then all B
    seq = [s.split(":")[1] for s in fake_backend.order if s.startswith("phone-a:") and "_" not in s.split(":")[1]]
    timed = seq[2:]  # after the two probe runs
    assert timed[:8] == ["baseline", "candidate", "candidate", "baseline", "candidate", "baseline", "baseline", "candidate"]


def test_farm_fails_below_threshold(tmp_path: Path) -> None:
    farm = write_farm(tmp_path, [fake_device("fast"), fake_device("slow", threshold=3.0)])
    assert farm_cli(farm, tmp_path / "out") == 1
    rows = {d["device"]: d for d in json.loads((tmp_path / "out" / "farm-report.json").read_text())["devices"]}
    assert rows["fast"]["status"] == "ok" and rows["slow"]["status"] == "below-threshold"


def test_unreachable_device_fails_only_when_required(tmp_path: Path) -> None:
    optional = write_farm(tmp_path, [fake_device("ok"), fake_device("away", options={"unplugged": True})])
    assert farm_cli(optional, tmp_path / "o1") == 0
    rows = {d["device"]: d for d in json.loads((tmp_path / "o1" / "farm-report.json").read_text())["devices"]}
    assert rows["away"]["status"] == "unreachable" and "unplugged" in rows["away"]["reason"]
    required = write_farm(tmp_path, [fake_device("ok"), fake_device("away", required=True, options={"unplugged": True})])
    assert farm_cli(required, tmp_path / "o2") == 1
    assert "FAIL (away)" in (tmp_path / "o2" / "farm-report.md").read_text()


def test_farm_file_validation(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown key.*treshold"):
        load_farm(_bad(tmp_path, {"treshold": 1}))
    with pytest.raises(UserError, match=r"devices\[0\].*requierd"):
        load_farm(_bad(tmp_path, {"devices": [{"name": "a", "profile": "host-cpu", "requierd": True}]}))
    with pytest.raises(UserError, match="non-empty list"):
        load_farm(_bad(tmp_path, {"devices": []}))
    assert run_app(app, ["farm", "--farm", str(tmp_path / "missing.yaml"), "--baseline", "a", "--candidate", "b"]) == 2


def _bad(tmp_path: Path, extra: dict[str, Any]) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"name": "bad", "devices": [{"name": "a", "profile": "host-cpu"}], **extra}))
    return p


@pytest.mark.parametrize("name", ["example.yaml", "ci-smoke.yaml"])
def test_shipped_farm_files_load(name: str) -> None:
    spec = load_farm(FARMS / name)
    assert spec.devices and all(d.name for d in spec.devices)


@pytest.mark.slow
def test_farm_through_the_loopback_stand_in(tmp_path: Path) -> None:
    """The CI smoke job itself (host onnxruntime + the stand-in + an absent optional phone)."""
    from android_harness.loopback.smoke import main

    assert main(["--out", str(tmp_path / "smoke"), "--timeout", "500"]) == 0


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", ".hidden"])
def test_farm_device_names_cannot_leave_out(tmp_path: Path, bad: str) -> None:
    farm = write_farm(tmp_path, [fake_device(bad)])
    with pytest.raises(UserError, match="invalid farm device name"):
        load_farm(farm)
    assert farm_cli(farm, tmp_path / "out") == 2
    assert not (tmp_path / "escape").exists() and not list(tmp_path.glob("**/*.fake"))


def test_device_facts_name_the_farm_entry(tmp_path: Path) -> None:
    """Two farm entries sharing one named profile stay apart in the report's facts."""
    prof = tmp_path / "shared.yaml"
    prof.write_text(yaml.safe_dump({"name": "shared", "backend": "fake-test", "warmup_runs": 1, "runs": 3,
                                    "min_window_ms": 0.0, "calibrate_overhead": False}))
    farm = write_farm(tmp_path, [{"name": "lab-a", "profile": "shared.yaml"},
                                 {"name": "lab-b", "profile": "shared.yaml", "options": {"candidate_ms": 0.5}}])
    assert farm_cli(farm, tmp_path / "out") == 0
    rows = {d["device"]: d for d in json.loads((tmp_path / "out" / "farm-report.json").read_text())["devices"]}
    assert rows["lab-a"]["facts"]["device"] == "lab-a" and rows["lab-b"]["facts"]["device"] == "lab-b"
    assert rows["lab-b"]["speedup"] == pytest.approx(4.0)
    assert not list((tmp_path / "out").glob("*.tmp")) and not list((tmp_path / "out").glob(".*.tmp"))


def test_run_farm_maps_a_picklable_measure_device(tmp_path: Path) -> None:
    """The contract an executor (threads, processes, Ray) relies on: ``mapper(fn, devices)`` gets a
    picklable function of one device and returns the results in device order."""
    import pickle

    from amc_mobile.farm import DeviceResult, run_farm

    seen: list[str] = []

    def remote_mapper(fn: Any, devices: Any) -> list[DeviceResult]:
        shipped = pickle.loads(pickle.dumps(fn))  # what a process or Ray worker would receive
        out = []
        for d in reversed(list(devices)):  # finish out of order
            seen.append(d.name)
            out.append(pickle.loads(pickle.dumps(shipped(pickle.loads(pickle.dumps(d))))))
        return out[::-1]

    spec = load_farm(write_farm(tmp_path, [fake_device("a"), fake_device("b")]))
    results, paths = run_farm(spec, "mobilenet_v1_cifar", "mobilenet_v1_cifar@0.5", tmp_path / "out",
                              mapper=remote_mapper)
    assert seen == ["b", "a"] and [r.device for r in results] == ["a", "b"]
    assert all(r.status == "ok" and r.speedup == pytest.approx(2.0) for r in results)
    assert paths["json"].is_file()
