"""Training writes checkpoints + metrics every epoch; a killed run resumes exactly; evaluate() is correct."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amc_mobile.data import Dataset, TensorLoader
from amc_mobile.models import create_model
from amc_mobile.models.checkpoint import load_checkpoint
from amc_mobile.training import TrainConfig, evaluate, lr_at, train_model


def _toy(n: int, seed: int) -> Dataset:
    """Two easy classes (bright vs dark 8x8 images)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = (torch.rand(n, 1, 8, 8, generator=gen) * 60 + labels[:, None, None, None] * 190).to(torch.uint8)
    return Dataset("toy", "train", images, labels, ["dark", "bright"], (0.4,), (0.3,), "-")


def _model() -> torch.nn.Module:
    return create_model("mobilenet_v1_cifar", num_classes=2, in_chans=1, width_mult=0.25, input_size=8)


CFG = TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=1, eval_batch_size=256)


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    lrs = [lr_at(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False)) and lrs[-1] < 1e-3


def test_tiny_training_run_writes_checkpoints_and_metrics(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _model()
    metrics = train_model(model, _toy(128, 0), _toy(64, 1), tmp_path, CFG, test_data=_toy(64, 2),
                          command="test", progress=False, log=lambda s: None)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["done"] and saved["epochs_done"] == 2 and saved["seed"] == 1 and saved["command"] == "test"
    assert [row["epoch"] for row in saved["history"]] == [1, 2]
    assert {"train_loss", "val_top1", "val_top5", "epoch_s"} <= set(saved["history"][0])
    assert saved["test"]["n"] == 64 and saved["test"]["top1"] == metrics["test"]["top1"]
    assert all(0.0 < row["train_loss"] < 10.0 for row in saved["history"])
    for name in ("last.pt", "final.pt"):
        payload = torch.load(tmp_path / name, map_location="cpu", weights_only=True)
        assert payload["arch"]["input_size"] == 8 and payload["arch"]["in_chans"] == 1
        assert payload["data"]["classes"] == ["dark", "bright"]
    final, meta = load_checkpoint(tmp_path / "final.pt")
    assert "train_state" not in meta
    assert evaluate(final, TensorLoader(_toy(64, 2), 64))["top1"] == pytest.approx(saved["test"]["top1"])


def test_killed_run_resumes_exactly(tmp_path: Path) -> None:
    train, val = _toy(96, 0), _toy(32, 1)
    torch.manual_seed(0)
    ref = _model()
    train_model(ref, train, val, tmp_path / "ref", CFG, progress=False, log=lambda s: None)

    torch.manual_seed(0)
    first = _model()
    partial = train_model(first, train, val, tmp_path / "run", CFG, progress=False, log=lambda s: None,
                          stop_after=1)  # as if killed after epoch 1 was saved
    assert not partial["done"] and partial["epochs_done"] == 1
    assert not (tmp_path / "run" / "final.pt").exists()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["train_state"]
    assert state["epoch"] == 1 and state["optimizer"]["state"]  # momentum buffers saved

    logs: list[str] = []
    resumed = _model()  # a fresh process: new random init, overwritten by the checkpoint
    metrics = train_model(resumed, train, val, tmp_path / "run", CFG, progress=False, log=logs.append,
                          resume=True)
    assert any("1 epoch(s) done" in line for line in logs)
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]  # epoch 1 not re-done
    ref_hist = json.loads((tmp_path / "ref" / "metrics.json").read_text())["history"]
    assert metrics["history"][1]["train_loss"] == pytest.approx(ref_hist[1]["train_loss"], rel=1e-4)
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k  # same weights as the uninterrupted run


def test_resume_with_other_batch_size_is_refused(tmp_path: Path) -> None:
    from amc_mobile.errors import UserError

    train_model(_model(), _toy(64, 0), None, tmp_path, TrainConfig(epochs=2, batch_size=32), progress=False,
                log=lambda s: None, stop_after=1)
    with pytest.raises(UserError, match="batch size 32"):
        train_model(_model(), _toy(64, 0), None, tmp_path, TrainConfig(epochs=2, batch_size=16),
                    progress=False, log=lambda s: None, resume=True)


def test_evaluate_counts_top1_top5_and_restores_mode() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # class scores: 6 > 5 > ... > 0
            return torch.arange(7, dtype=torch.float32).flip(0).expand(x.shape[0], 7)

    labels = torch.tensor([0, 1, 4, 5, 6, 0])
    data = Dataset("d", "test", torch.zeros(6, 1, 2, 2, dtype=torch.uint8), labels, list("abcdefg"),
                   (0.0,), (1.0,), "-")
    model = Fixed().train()
    res = evaluate(model, TensorLoader(data, batch_size=4))
    assert res["n"] == 6
    assert res["top1"] == pytest.approx(100 * 2 / 6)  # labels 0, 0
    assert res["top5"] == pytest.approx(100 * 4 / 6)  # labels 0, 1, 4, 0
    assert model.training


def test_batchnorm_folding_gives_the_same_predictions() -> None:
    torch.manual_seed(0)
    model = _model()
    for m in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    loader = TensorLoader(_toy(64, 3), 32)
    plain = evaluate(model, loader, fold_bn=False)
    folded = evaluate(model, loader, fold_bn=True)
    assert folded["top1"] == plain["top1"] and folded["loss"] == pytest.approx(plain["loss"], rel=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model is untouched
