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
    with pytest.raises(UserError, match="batch_size 32 != 16"):
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


# --- one run per --out: no silent restart, strict resume, one writer, --init-from (issue 10) --------
def _quiet(**kw):  # noqa: ANN003, ANN202
    return {"progress": False, "log": lambda s: None, **kw}


def test_rerun_without_resume_is_refused_and_keeps_the_run(tmp_path: Path) -> None:
    from amc_mobile.errors import UserError

    cfg = TrainConfig(epochs=1, batch_size=32)
    train_model(_model(), _toy(64, 0), None, tmp_path, cfg, **_quiet())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".pt", ".json")}
    with pytest.raises(UserError, match="already holds a training run .*--resume.*another --out"):
        train_model(_model(), _toy(64, 0), None, tmp_path, cfg, **_quiet())
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".pt", ".json")} == before


@pytest.mark.parametrize(("change", "field"), [
    ("model", "model.width_mult 0.25 != 0.5"),
    ("classes", "data.classes"),
    ("images", "data.train_images 64 != 48"),
    ("lr", "config.lr 0.1 != 0.2"),
    ("augment", "config.augment True != False"),
])
def test_resume_refuses_a_different_model_data_or_config(tmp_path: Path, change: str, field: str) -> None:
    from amc_mobile.errors import UserError

    cfg = TrainConfig(epochs=2, batch_size=32)
    train_model(_model(), _toy(64, 0), None, tmp_path, cfg, **_quiet(stop_after=1))
    model, data = _model(), _toy(64, 0)
    if change == "model":
        model = create_model("mobilenet_v1_cifar", num_classes=2, in_chans=1, width_mult=0.5, input_size=8)
    elif change == "classes":
        data = Dataset("toy", "train", data.images, data.labels, ["night", "day"], (0.4,), (0.3,), "-")
    elif change == "images":
        data = _toy(48, 0)
    elif change == "lr":
        cfg = TrainConfig(epochs=2, batch_size=32, lr=0.2)
    else:
        cfg = TrainConfig(epochs=2, batch_size=32, augment=False)
    with pytest.raises(UserError, match=f"cannot resume .*{field.replace('[', '.')}"):
        train_model(model, data, None, tmp_path, cfg, **_quiet(resume=True))


def test_resume_may_extend_the_epochs(tmp_path: Path) -> None:
    train_model(_model(), _toy(64, 0), None, tmp_path, TrainConfig(epochs=1, batch_size=32), **_quiet())
    logs: list[str] = []
    metrics = train_model(_model(), _toy(64, 0), None, tmp_path, TrainConfig(epochs=2, batch_size=32),
                          progress=False, log=logs.append, resume=True)
    assert metrics["done"] and metrics["epochs_done"] == 2 and any("1 epoch(s) done" in s for s in logs)


def test_a_second_training_into_the_same_out_is_refused_naming_the_holder(tmp_path: Path) -> None:
    import os

    from amc_mobile.errors import UserError
    from amc_mobile.storage import ExclusiveLock

    with ExclusiveLock(tmp_path / "run.lock"):  # another training holds the directory
        with pytest.raises(UserError, match=f"in use by another process \\(PID {os.getpid()}\\)"):
            train_model(_model(), _toy(64, 0), None, tmp_path, TrainConfig(epochs=1, batch_size=32), **_quiet())
    assert not (tmp_path / "last.pt").exists()


def test_checkpoints_and_metrics_leave_no_temp_files(tmp_path: Path) -> None:
    train_model(_model(), _toy(64, 0), None, tmp_path, TrainConfig(epochs=2, batch_size=32), **_quiet())
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "final.pt", "last.pt", "metrics.json"]


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"batch_size": 0}, "--batch-size must be a positive integer"),
    ({"epochs": 0}, "--epochs must be a positive integer"),
    ({"lr": 0.0}, "--lr must be a number in \\(0, inf\\)"),
    ({"lr": float("nan")}, "--lr must be a number"),
    ({"label_smoothing": 1.0}, "--label-smoothing"),
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; valid optimizers: adamw, sgd"),
])
def test_train_config_validates_itself(kwargs: dict, needle: str) -> None:
    from amc_mobile.errors import UserError

    with pytest.raises(UserError, match=needle):
        TrainConfig(**kwargs)


def test_init_from_copies_the_weights_and_resume_keeps_it(tmp_path: Path) -> None:
    from amc_mobile.models.checkpoint import save_checkpoint
    from amc_mobile.training.trainer import init_weights_from

    torch.manual_seed(5)
    source = _model()
    ckpt = save_checkpoint(tmp_path / "teacher.pt", source)
    target = _model()
    init_weights_from(target, str(ckpt))
    for (k, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # a training run started from it records it; a resume without the option keeps it
    cfg = TrainConfig(epochs=2, batch_size=32, init_from=str(ckpt))
    first = train_model(_model(), _toy(64, 0), None, tmp_path / "run", cfg, **_quiet(stop_after=1))
    assert first["config"]["init_from"] == str(ckpt)
    resumed = train_model(_model(), _toy(64, 0), None, tmp_path / "run", TrainConfig(epochs=2, batch_size=32),
                          **_quiet(resume=True))
    assert resumed["done"] and resumed["config"]["init_from"] == str(ckpt)


def test_init_from_another_architecture_is_one_line(tmp_path: Path) -> None:
    from amc_mobile.errors import UserError
    from amc_mobile.models.checkpoint import save_checkpoint
    from amc_mobile.training.trainer import init_weights_from

    wide = create_model("mobilenet_v1_cifar", num_classes=2, in_chans=1, width_mult=0.5, input_size=8)
    ckpt = save_checkpoint(tmp_path / "wide.pt", wide)
    with pytest.raises(UserError, match="different architecture .*width_mult 0.5 != 0.25"):
        init_weights_from(_model(), str(ckpt))
    other = create_model("mobilenet_v1_cifar", num_classes=3, in_chans=1, width_mult=0.25, input_size=8)
    with pytest.raises(UserError, match="num_classes 3 != 2"):
        init_weights_from(_model(), str(save_checkpoint(tmp_path / "three.pt", other)))
