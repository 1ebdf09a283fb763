"""Knowledge distillation (DDC eq. 12): the loss formula and a resumable fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from amc_mobile.distill import FinetuneConfig, finetune, kd_loss
from amc_mobile.errors import UserError


def test_kd_loss_is_lambda_soft_plus_one_minus_lambda_hard() -> None:
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=gen), torch.randn(8, 10, generator=gen)
    y = torch.randint(0, 10, (8,), generator=gen)
    temp = 3.0
    p_t = torch.softmax(t / temp, 1)
    soft = (p_t * (p_t.log() - torch.log_softmax(s / temp, 1))).sum(1).mean() * temp ** 2
    hard = nn.functional.cross_entropy(s, y)
    assert kd_loss(s, t, y, 0.7, temp) == pytest.approx(float(0.7 * soft + 0.3 * hard), rel=1e-5)
    assert kd_loss(s, t, y, 0.0, temp) == pytest.approx(float(hard), rel=1e-5)
    assert kd_loss(s, t, y, 1.0, temp) == pytest.approx(float(soft), rel=1e-5)
    assert float(kd_loss(t, t, y, 1.0, temp)) == pytest.approx(0.0, abs=1e-6)  # student == teacher


def _toy(n: int, split: str):  # noqa: ANN202
    from amc_mobile.data import Dataset

    gen = torch.Generator().manual_seed(1 if split == "val" else 0)
    y = torch.randint(0, 4, (n,), generator=gen)
    x = torch.randint(0, 60, (n, 1, 12, 12), generator=gen, dtype=torch.uint8)
    for c in range(4):
        r, q = divmod(c, 2)
        x[y == c, :, 6 * r:6 * r + 6, 6 * q:6 * q + 6] += 150
    return Dataset("toy", split, x, y, ["a", "b", "c", "d"], (0.3,), (0.3,), "")


def _models():  # noqa: ANN202
    from amc_mobile.models import create_model

    torch.manual_seed(0)
    teacher = create_model("mobilenet_v1_cifar", num_classes=4, in_chans=1, width_mult=0.25, input_size=12)
    student = create_model("mobilenet_v1_cifar", num_classes=4, in_chans=1, width_mult=0.25, input_size=12)
    return teacher.eval(), student


def test_finetune_lowers_the_kd_loss_and_resumes_exactly(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    train, val = _toy(256, "train"), _toy(128, "val")
    cfg = FinetuneConfig(epochs=3, batch_size=32, lr=0.05, augment=False)
    teacher, student = _models()
    straight = finetune(student, teacher, train, val, tmp_path / "a", cfg, progress=False, log=lambda m: None)
    assert (tmp_path / "a" / "final.pt").exists()
    losses = [h["train_kd_loss"] for h in straight["history"][1:]]
    assert losses[-1] < losses[0]

    def kill_after_first_epoch(msg: str) -> None:
        if msg.startswith("epoch 1/"):
            raise KeyboardInterrupt  # like Ctrl-C right after the epoch's checkpoint

    teacher, student = _models()
    with pytest.raises(KeyboardInterrupt):
        finetune(student, teacher, train, val, tmp_path / "b", cfg, progress=False, log=kill_after_first_epoch)
    teacher, student = _models()  # a fresh student: resume must load the saved weights
    resumed = finetune(student, teacher, train, val, tmp_path / "b", cfg, resume=True, progress=False,
                       log=lambda m: None)
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2, 3]
    assert resumed["history"][-1]["val_top1"] == pytest.approx(straight["history"][-1]["val_top1"])
    assert resumed["history"][-1]["train_kd_loss"] == pytest.approx(straight["history"][-1]["train_kd_loss"])
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["history"] == resumed["history"]


def test_bad_lambda_is_a_user_error(tmp_path: Path) -> None:
    teacher, student = _models()
    with pytest.raises(UserError, match="lambda"):
        finetune(student, teacher, _toy(32, "train"), None, tmp_path, FinetuneConfig(lam=1.5), progress=False)


def test_finetune_writes_metrics_every_epoch_and_refuses_a_silent_restart(tmp_path: Path) -> None:
    cfg = FinetuneConfig(epochs=3, batch_size=32, augment=False)
    train, val = _toy(96, "train"), _toy(64, "val")

    def kill_after_second_epoch(msg: str) -> None:
        if msg.startswith("epoch 2/"):
            raise KeyboardInterrupt

    teacher, student = _models()
    with pytest.raises(KeyboardInterrupt):
        finetune(student, teacher, train, val, tmp_path, cfg, progress=False, log=kill_after_second_epoch)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert not saved["done"] and saved["epochs_done"] == 2 and [h["epoch"] for h in saved["history"]] == [0, 1, 2]
    teacher, student = _models()
    with pytest.raises(UserError, match="already holds a fine-tuning run .*pass --resume"):
        finetune(student, teacher, train, val, tmp_path, cfg, progress=False, log=lambda m: None)
    assert json.loads((tmp_path / "metrics.json").read_text()) == saved  # untouched
    teacher, student = _models()
    with pytest.raises(UserError, match="cannot resume .*config.lam 0.7 != 0.5"):
        finetune(student, teacher, train, val, tmp_path, FinetuneConfig(epochs=3, batch_size=32, augment=False,
                                                                         lam=0.5),
                 resume=True, progress=False, log=lambda m: None)
    teacher, student = _models()
    done = finetune(student, teacher, train, val, tmp_path, cfg, resume=True, progress=False, log=lambda m: None)
    assert done["done"] and done["epochs_done"] == 3


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"batch_size": 0}, "--batch-size must be a positive integer"),
    ({"epochs": 0}, "--epochs must be a positive integer"),
    ({"temperature": 0.0}, "--temperature must be positive"),
    ({"lam": float("nan")}, "--lambda must be in"),
    ({"max_train_images": -1}, "--max-train-images"),
])
def test_finetune_config_validates_itself(kwargs: dict, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        FinetuneConfig(**kwargs)
