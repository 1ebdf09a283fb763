"""ONNX export of pruned models: onnxruntime must reproduce torch (max |error| reported)."""

from __future__ import annotations

import pytest
import torch

from amc_mobile.errors import UserError
from amc_mobile.export import export_onnx
from amc_mobile.models import create_model, list_models
from amc_mobile.models.bn import calibrate_bn
from amc_mobile.pruning import ChannelPruner, uniform_policy


def _healthy(name: str, size: int) -> torch.nn.Module:
    """Random weights with BatchNorm statistics fitted to the inputs (outputs of order 1)."""
    torch.manual_seed(0)
    return calibrate_bn(create_model(name, width_mult=0.5, input_size=size), (32, 3, size, size))


@pytest.mark.parametrize("name", [name for name in list_models() if name.endswith("_cifar")])
def test_pruned_model_exports_and_matches_torch(name: str, tmp_path) -> None:
    model = _healthy(name, 32)
    pruner = ChannelPruner(model, 32)
    pruned = pruner.prune(uniform_policy(pruner.groups, 0.5).keep_channels)
    report = export_onnx(pruned, tmp_path / "m.onnx", (1, 3, 32, 32))
    assert report.max_abs_error < 1e-4
    assert (tmp_path / "m.onnx").stat().st_size == report.size_bytes > 0

    import onnx

    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    widths = sorted({int(t.dims[0]) for t in graph.initializer if len(t.dims) == 4})
    assert max(widths) <= max(g.width for g in pruner.groups) // 2  # the file holds the pruned shapes


def test_mismatch_fails_loudly(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _healthy("mobilenet_v1_cifar", 32)
    real_forward = model.forward
    calls = {"n": 0}

    def forward_off_after_export(x: torch.Tensor) -> torch.Tensor:  # torch output != exported graph
        calls["n"] += 1
        return real_forward(x) + (1.0 if calls["n"] > 1 else 0.0)

    monkeypatch.setattr(model, "forward", forward_off_after_export)
    with pytest.raises(UserError, match="differs from torch: max \\|error\\|"):
        export_onnx(model, tmp_path / "bad.onnx", (1, 3, 32, 32))
    assert not (tmp_path / "bad.onnx").exists()
