"""``amc-bench farm``: farm files, A/B interleaving, thresholds, unreachable devices, report files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from amc_mobile.cli.bench import app
from amc_mobile.cli.common import run_app
from amc_mobile.errors import UserError
from amc_mobile.latency.base import (
    BackendOptions,
    LatencyBackend,
    format_samples,
    parse_samples,
    register_backend,
)
from android_harness.farm import load_farm

FARMS = Path(__file__).resolve().parents[1] / "device_profiles" / "farms"


@dataclass(frozen=True)
class FakeOptions(BackendOptions):
    baseline_ms: float = 2.0
    candidate_ms: float = 1.0
    unplugged: bool = False


@register_backend("farm-fake")
class FakeBackend(LatencyBackend):
    """A deterministic device: latency by artefact name; records the order it ran things in."""

    artifact_suffix = ".fake"
    Options = FakeOptions
    options: FakeOptions
    order: list[str] = []

    def check_available(self) -> str | None:
        return "fake phone unplugged (connect it)" if self.options.unplugged else None

    def prepare(self, model: Any, input_shape: tuple[int, ...], path: str | Path) -> Path:
        p = Path(path).with_suffix(".fake")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(str(input_shape))
        return p

    def run(self, artifact: str | Path, warmup_runs: int, runs: int) -> str:
        stem = Path(artifact).stem
        FakeBackend.order.append(f"{self.profile.name}:{stem}")
        ms = {"baseline": self.options.baseline_ms, "candidate": self.options.candidate_ms}.get(stem, 0.5)
        return format_samples([ms] * runs)

    def parse(self, raw: str) -> Any:
        return parse_samples(raw)


def fake_device(name: str, **kw: Any) -> dict[str, Any]:
    options = kw.pop("options", {})
    return {"name": name, "profile": {"backend": "farm-fake", "warmup_runs": 1, "runs": 3, "min_window_ms": 0.0,
                                      "calibrate_overhead": False, "options": options}, **kw}


def write_farm(tmp_path: Path, devices: list[dict[str, Any]], threshold: float = 1.5) -> Path:
    p = tmp_path / "farm.yaml"
    p.write_text(yaml.safe_dump({"schema_version": 1, "name": "t", "threshold": threshold, "rounds": 2,
                                 "devices": devices}))
    return p


def farm_cli(farm: Path, out: Path) -> int:
    return run_app(app, ["farm", "--farm", str(farm), "--baseline", "mobilenet_v1_cifar",
                         "--candidate", "mobilenet_v1_cifar@0.5", "--out", str(out)])


def test_farm_passes_and_writes_markdown_json_png(tmp_path: Path) -> None:
    FakeBackend.order.clear()
    farm = write_farm(tmp_path, [fake_device("phone-a", required=True), fake_device("phone-b")])
    assert farm_cli(farm, tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "farm-report.json").read_text())
    assert report["schema_version"] == 1 and report["passed"]
    rows = {d["device"]: d for d in report["devices"]}
    assert rows["phone-a"]["speedup"] == pytest.approx(2.0) and rows["phone-a"]["baseline_ms"] == pytest.approx(2.0)
    assert rows["phone-b"]["status"] == "ok"
    md = (tmp_path / "out" / "farm-report.md").read_text()
    assert "| phone-a | farm-fake | 2.000 | 1.000 | 2.000 |" in md and "PASS" in md
    assert (tmp_path / "out" / "farm-speedup.png").read_bytes()[:4] == b"\x89PNG"
    # each device's windows are interleaved A/B (ABBA then BAAB), not all A then all B
    seq = [s.split(":")[1] for s in FakeBackend.order if s.startswith("phone-a:") and "_" not in s.split(":")[1]]
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
