"""Exports used by the backends are checked numerically against torch; missing extras are one line."""

from __future__ import annotations

import builtins

import pytest
import torch

from amc_mobile.errors import UserError
from amc_mobile.latency import load_profile
from amc_mobile.latency.units import build_unit, reference_workload


def test_onnx_backend_exports_and_runs_a_unit(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AMC_ARTIFACT_CACHE", str(tmp_path / "cache"))
    with load_profile("host-cpu").create_backend() as backend:
        model, shape = build_unit("dw+conv+res|k3|s1|8x8", 16, 16)
        art = backend.prepare(model, shape, tmp_path / "unit")
        assert art.suffix == ".onnx" and art.exists()
        again = backend.prepare(model, shape, tmp_path / "copy")  # served from the content-hash cache
        assert again.read_bytes() == art.read_bytes()
        stats = backend.parse(backend.run(art, 2, 5))
        assert stats.count == 5 and stats.median_ms > 0
        assert backend.describe_device()["runtime_version"]


def test_tflite_export_matches_torch(tmp_path) -> None:
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    from amc_mobile.export.tflite import export_tflite, run_tflite

    model, shape = build_unit("dw+conv|k3|s2|8x8", 8, 16)
    report = export_tflite(model, tmp_path / "u.tflite", shape, atol=1e-4)
    assert report.max_abs_error <= 1e-4 and report.size_bytes > 0
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.allclose(run_tflite(report.path, x).reshape(model(x).shape), model(x), atol=1e-4)


def test_missing_tflite_extra_is_one_line(monkeypatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("litert_torch"):
            raise ImportError("No module named 'litert_torch'", name="litert_torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    from amc_mobile.export.tflite import export_tflite

    with pytest.raises(UserError, match=r"pip install 'amc-mobile\[tflite\]'"):
        export_tflite(*reference_workload()[:1], "x.tflite", (1, 32, 56, 56))


def test_small_input_profiling_models_pass_the_export_check(tmp_path) -> None:
    """A 32-px ImageNet MobileNet-V2 ends in 1x1 maps: its random-weight calibration models must still
    be well-conditioned enough for the backend's numerical check (was 4e-3 off with a 2-image BN batch)."""
    from amc_mobile.export.onnx import export_onnx
    from amc_mobile.latency.profiling import build_config_model, calibration_configs
    from amc_mobile.models import create_model

    model = create_model("mobilenet_v2", input_size=32)
    for cfg in calibration_configs(model, 32)[:4]:
        net = build_config_model(model, 32, cfg)
        report = export_onnx(net, tmp_path / f"{cfg.config_id}.onnx", (1, 3, 32, 32), atol=1e-3)
        assert report.max_abs_error < 1e-3, cfg.config_id


def test_tflite_units_are_timed_without_the_converters_boundary_transposes(tmp_path, monkeypatch) -> None:
    """A whole TFLite model runs NHWC end to end, so an isolated unit must not pay an NCHW<->NHWC
    transpose at each end (5-50% of a unit's time on XNNPACK); its numbers still match torch."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    from amc_mobile.latency.profiling import unit_artifacts

    monkeypatch.setenv("AMC_ARTIFACT_CACHE", str(tmp_path / "cache"))
    with load_profile("host-tflite").create_backend() as backend:
        assert backend.unit_layout == "nhwc"
        (art,) = unit_artifacts(backend, [("dw+conv+res|k3|s1|8x8", 8, 8)], 1, tmp_path)
        interp = Interpreter(model_path=str(art))
        ops = [op["op_name"] for op in interp._get_ops_details()]
        assert "TRANSPOSE" not in ops and "CONV_2D" in ops
        assert list(interp.get_input_details()[0]["shape"]) == [1, 8, 8, 8]
        # the NCHW export of the same unit pays the two transposes a whole model does not
        model, shape = build_unit("dw+conv+res|k3|s1|8x8", 8, 8)
        nchw = backend.prepare(model, shape, tmp_path / "nchw")
        assert [op["op_name"] for op in Interpreter(model_path=str(nchw))._get_ops_details()].count("TRANSPOSE") == 2
    with load_profile("host-cpu").create_backend() as backend:  # onnxruntime's own layout: units stay NCHW
        assert backend.unit_layout == "nchw"
