"""The CLI end to end: one-line errors (no tracebacks) and a tiny train -> resume -> eval round trip."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from amc_mobile.cli.common import run_app
from amc_mobile.cli.main import app
from amc_mobile.models import list_models


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_app(app, list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def fake_fmnist(root: Path, n_train: int = 200, n_test: int = 50) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            head = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
            with gzip.open(root / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(head + arr.tobytes())
    return root


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0]


def test_models_lists_every_registered_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "models")
    assert code == 0 and all(name in out for name in list_models())


def test_unknown_model_lists_valid_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "train", "--model", "resnet9000", "--out", str(tmp_path))
    assert_one_line_error(code, err, "unknown model 'resnet9000'", *list_models())


def test_unknown_dataset_lists_valid_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "train", "--model", "mobilenet_v1_cifar", "--dataset", "mnist2",
                       "--out", str(tmp_path))
    assert_one_line_error(code, err, "unknown dataset 'mnist2'", "fashion-mnist", "cifar10")


def test_missing_data_dir_says_where_and_how(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-data-here"
    code, _, err = cli(capsys, "train", "--model", "mobilenet_v1_cifar", "--data-dir", str(missing),
                       "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, str(missing), "apt-get install dataset-fashion-mnist", "--data-dir")


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04 truncated zip", b"junk\n"])
def test_corrupt_checkpoint_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        content: bytes) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    code, _, err = cli(capsys, "eval", "--checkpoint", str(bad))
    assert_one_line_error(code, err, "corrupt or unreadable checkpoint", str(bad))


def test_foreign_and_missing_checkpoints_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    code, _, err = cli(capsys, "eval", "--checkpoint", str(foreign))
    assert_one_line_error(code, err, "not an amc-mobile checkpoint")
    code, _, err = cli(capsys, "eval", "--checkpoint", str(tmp_path / "nope.pt"))
    assert_one_line_error(code, err, "checkpoint not found")
    code, _, err = cli(capsys, "info", "--checkpoint", "zoo:no-such-teacher")
    assert_one_line_error(code, err, "unknown zoo checkpoint 'no-such-teacher'")


def test_data_command_reports_found_and_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = fake_fmnist(tmp_path / "fm")
    code, out, err = cli(capsys, "data", "--data-dir", str(root))
    assert code == 0
    assert "fashion-mnist" in out and "found" in out and "200 train" in out.replace("\n", " ")
    assert "to get cifar10" in err  # the others are missing there, with instructions


def test_train_resume_eval_round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = fake_fmnist(tmp_path / "fm")
    out_dir = tmp_path / "run"
    common = ["train", "--model", "mobilenet_v1_cifar", "--width", "0.25", "--data-dir", str(root),
              "--epochs", "2", "--batch-size", "64", "--threads", "1", "--classes", "0,1,2,3",
              "--out", str(out_dir)]
    code, out, err = cli(capsys, *common, "--stop-after", "1")
    assert code == 0, err
    assert "stopped after epoch 1" in out and not (out_dir / "final.pt").exists()
    code, out, err = cli(capsys, *common, "--resume")
    assert code == 0, err
    assert "resuming" in out and "1 epoch(s) done" in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2] and metrics["done"]
    assert metrics["data"]["classes"] == ["T-shirt/top", "Trouser", "Pullover", "Dress"]
    payload = torch.load(out_dir / "final.pt", weights_only=True)
    assert payload["arch"]["num_classes"] == 4 and payload["arch"]["input_size"] == 28
    assert payload["arch"]["in_chans"] == 1
    # eval needs no --dataset/--classes: they come from the checkpoint
    code, out, err = cli(capsys, "eval", "--checkpoint", str(out_dir / "final.pt"), "--data-dir", str(root),
                         "--split", "test", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["n"] == 20 and res["dataset"] == "fashion-mnist"
    assert res["top1"] == pytest.approx(metrics["test"]["top1"])
