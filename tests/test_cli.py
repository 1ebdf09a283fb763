"""The CLI end to end: one-line errors (no tracebacks) and a tiny train -> resume -> eval round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from amc_mobile.cli.common import run_app
from amc_mobile.cli.main import app
from amc_mobile.models import list_models


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_app(app, list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


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


def test_data_command_reports_found_and_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                fake_fmnist: Any) -> None:
    root = fake_fmnist(tmp_path / "fm", 200, 50)
    code, out, err = cli(capsys, "data", "--data-dir", str(root))
    assert code == 0
    assert "fashion-mnist" in out and "found" in out and "200 train" in out.replace("\n", " ")
    assert "to get cifar10" in err  # the others are missing there, with instructions


def test_train_resume_eval_round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_fmnist: Any) -> None:
    root = fake_fmnist(tmp_path / "fm", 200, 50)
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


# --- usage errors, --version, help, Ctrl-C (issue 10) ---------------------------------------------
from amc_mobile.cli.bench import app as bench_app  # noqa: E402


@pytest.mark.parametrize("the_app", [app, bench_app], ids=["amc-mobile", "amc-bench"])
def test_version_and_bare_command_print_version_and_help(capsys: pytest.CaptureFixture[str], the_app) -> None:
    import amc_mobile

    assert run_app(the_app, ["--version"]) == 0
    assert capsys.readouterr().out.strip().endswith(amc_mobile.__version__)
    assert run_app(the_app, []) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out and "Commands:" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["train", "--model", "mobilenet_v1_cifar", "--out", "x", "--no-such-option"], "No such option: --no-such-option"),
    (["train", "--model", "mobilenet_v1_cifar"], "Missing option '--out'"),
    (["train", "--model", "mobilenet_v1_cifar", "--out", "x", "--epochs", "many"], "'--epochs'"),
    (["eval"], "Missing option '--checkpoint'"),
    (["no-such-command"], "No such command 'no-such-command'"),
    (["info", "--model"], "requires an argument"),
])
def test_usage_errors_are_one_line_with_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                                               needle: str) -> None:
    code, out, err = cli(capsys, *argv)
    assert_one_line_error(code, err, needle, "--help")
    assert out == ""


def test_bench_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_app(bench_app, ["profile", "--bogus"])
    assert_one_line_error(code, capsys.readouterr().err, "No such option: --bogus")


def test_console_scripts_answer_version_and_usage_errors() -> None:
    """The installed entry points themselves (not only run_app): version, exit codes, one stderr line."""
    import shutil
    import subprocess
    import sys

    scripts = Path(sys.executable).parent
    for name in ("amc-mobile", "amc-bench"):
        exe = scripts / name
        if not exe.exists():
            exe = Path(shutil.which(name) or name)
        res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and res.stdout.startswith("amc-mobile ")
        res = subprocess.run([str(exe), "--frobnicate"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: ")


def test_ctrl_c_says_what_was_saved_and_exits_130(tmp_path: Path) -> None:
    """A real SIGINT to a real training process: exit 130, one line naming --out, then --resume continues."""
    import signal
    import subprocess
    import sys
    import time

    root = make_idx(tmp_path / "fm")
    out_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "amc_mobile.cli.main", "train", "--model", "mobilenet_v1_cifar", "--width",
            "0.25", "--data-dir", str(root), "--epochs", "200", "--batch-size", "64", "--threads", "1",
            "--no-test", "--out", str(out_dir)]
    # a test run started in the background of a non-interactive shell inherits SIGINT ignored (POSIX),
    # and Python keeps it ignored in the child: give the child the default disposition a terminal
    # user has, so that Ctrl-C raises KeyboardInterrupt there
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out_dir / "metrics.json").exists():  # epoch 1 is saved: a well-defined point
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no epoch finished in 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and [line for line in lines if "interrupted" in line] == lines[-1:]
    assert str(out_dir) in lines[-1] and "--resume" in lines[-1]
    done = json.loads((out_dir / "metrics.json").read_text())["epochs_done"]
    assert done >= 1 and not list(out_dir.glob("*.tmp")) and not list(out_dir.glob(".*.tmp"))
    res = subprocess.run([*argv[:argv.index("--epochs") + 1], str(done + 1), *argv[argv.index("--epochs") + 2:],
                          "--resume"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{done} epoch(s) done" in res.stdout
    assert json.loads((out_dir / "metrics.json").read_text())["epochs_done"] == done + 1


def make_idx(root: Path) -> Path:
    from conftest import make_fake_fmnist

    return make_fake_fmnist(root, n_train=400, n_test=50)


# --- bad numbers: one line each, from the library's own validation ---------------------------------
@pytest.mark.parametrize(("argv", "needle"), [
    (["train", "--model", "mobilenet_v1_cifar", "--width", "0"], "width_mult must be a positive number"),
    (["train", "--model", "mobilenet_v1_cifar", "--resolution", "0"], "input_size must be a positive integer"),
    (["train", "--model", "mobilenet_v1_cifar", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["train", "--model", "mobilenet_v1_cifar", "--epochs", "0"], "--epochs must be a positive integer"),
    (["train", "--model", "mobilenet_v1_cifar", "--lr", "nan"], "--lr must be a number"),
    (["info", "--model", "mobilenet_v1_cifar", "--width", "0"], "width_mult must be a positive number"),
    (["info", "--model", "mobilenet_v1_cifar", "--resolution", "0"], "input_size must be a positive integer"),
    (["info", "--model", "mobilenet_v1_cifar", "--num-classes", "0"], "num_classes must be a positive integer"),
    (["prune", "--model", "mobilenet_v1_cifar", "--uniform", "0.5", "--num-classes", "0"], "num_classes must be"),
    (["prune", "--model", "mobilenet_v1_cifar", "--uniform", "0.5", "--width", "0"], "width_mult must be"),
    (["prune", "--model", "mobilenet_v1_cifar", "--uniform", "0.5", "--resolution", "0"], "input_size must be"),
    (["prune", "--checkpoint", "zoo:mobilenet_v1-fmnist", "--uniform", "0.5", "--calib-batch-size", "0"],
     "calibration image"),
    (["eval", "--checkpoint", "zoo:mobilenet_v1-fmnist", "--batch-size", "0"], "--batch-size must be a positive"),
    (["export", "--checkpoint", "zoo:mobilenet_v1-fmnist", "--resolution", "0"], "--resolution must be a positive"),
    (["finetune", "--checkpoint", "zoo:mobilenet_v1-fmnist", "--teacher", "zoo:mobilenet_v1-fmnist",
      "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["finetune", "--checkpoint", "zoo:mobilenet_v1-fmnist", "--teacher", "zoo:mobilenet_v1-fmnist",
      "--epochs", "0"], "--epochs must be a positive integer"),
])
def test_zero_sizes_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str],
                                 needle: str) -> None:
    out_args = ["--out", str(tmp_path / ("o.pt" if argv[0] in ("prune", "export") else "o"))]
    root = make_idx(tmp_path / "fm") if argv[0] in ("train", "eval", "finetune", "prune") else None
    data = ["--data-dir", str(root)] if root is not None else []
    code, _, err = cli(capsys, *argv, *(out_args if argv[0] not in ("info", "eval") else []), *data)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_out_under_a_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    root = make_idx(tmp_path / "fm")
    code, _, err = cli(capsys, "train", "--model", "mobilenet_v1_cifar", "--width", "0.25", "--data-dir", str(root),
                       "--epochs", "1", "--out", str(blocker / "run"))
    assert_one_line_error(code, err, str(blocker / "run"), "file")
    code, _, err = cli(capsys, "prune", "--model", "mobilenet_v1_cifar", "--width", "0.25", "--uniform", "0.5",
                       "--out", str(blocker / "p.pt"))
    assert_one_line_error(code, err, "part of the path is a file")
    assert blocker.read_text() == "x" and list(tmp_path.glob("**/*.tmp")) == []


# --- malformed checkpoint payloads -------------------------------------------------------------------
def _payload(**changes: object) -> dict:
    from amc_mobile.models import create_model
    from amc_mobile.models.checkpoint import FORMAT, arch_of

    net = create_model("mobilenet_v1_cifar", num_classes=4, in_chans=1, width_mult=0.25, input_size=12)
    payload = {"format": FORMAT, "version": 1, "arch": arch_of(net), "state_dict": net.state_dict()}
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    return payload


@pytest.mark.parametrize(("changes", "needle"), [
    ({"state_dict": None}, "no 'state_dict'"),
    ({"state_dict": {"conv1.0.weight": [1, 2, 3]}}, "'state_dict' must map parameter names to tensors"),
    ({"state_dict": [1, 2]}, "'state_dict' must map"),
    ({"arch": [1, 2]}, "'arch' must be a mapping"),
    ({"arch": {"num_classes": 4}}, "no model name"),
    ({"arch": {"name": "mobilenet_v1_cifar", "num_classes": "four", "in_chans": 1}}, "num_classes"),
    ({"arch": {"name": "mobilenet_v1_cifar", "num_classes": 4, "in_chans": 1, "shapes": {"conv1.0": "x"}}},
     "layer shape of 'conv1.0'"),
    ({"arch": {"name": "mobilenet_v1_cifar", "num_classes": 4, "in_chans": 1, "shapes": {"conv1.0": [1, 2, 3, 4]}}},
     "layer shape of 'conv1.0'"),
    ({"version": "1"}, "'version' must be an integer"),
    ({"data": "fashion-mnist"}, "'data' must be a mapping"),
])
def test_malformed_checkpoint_payloads_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                    changes: dict, needle: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(_payload(**changes), path)
    code, _, err = cli(capsys, "info", "--checkpoint", str(path))
    assert_one_line_error(code, err, needle)


def test_train_init_from_and_rerun_refusal_through_the_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = make_idx(tmp_path / "fm")
    base = ["train", "--model", "mobilenet_v1_cifar", "--width", "0.25", "--data-dir", str(root), "--epochs", "1",
            "--batch-size", "64", "--threads", "1", "--no-test"]
    code, _, err = cli(capsys, *base, "--out", str(tmp_path / "a"))
    assert code == 0, err
    # the same command again: refused, nothing overwritten
    before = (tmp_path / "a" / "final.pt").read_bytes()
    code, _, err = cli(capsys, *base, "--out", str(tmp_path / "a"))
    assert_one_line_error(code, err, "already holds a training run", "--resume", "another --out")
    assert (tmp_path / "a" / "final.pt").read_bytes() == before
    # continue the finished model with a new schedule; --model and --width come from the checkpoint
    code, out, err = cli(capsys, "train", "--init-from", str(tmp_path / "a" / "final.pt"), "--data-dir", str(root),
                         "--epochs", "1", "--batch-size", "64", "--lr", "0.01", "--no-test",
                         "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert "initialised the weights from" in out and "mobilenet_v1_cifar width 0.25" in out
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["config"]["init_from"] == str(tmp_path / "a" / "final.pt") and metrics["done"]
    code, _, err = cli(capsys, "train", "--init-from", str(tmp_path / "a" / "final.pt"), "--width", "0.5",
                       "--data-dir", str(root), "--out", str(tmp_path / "c"))
    assert_one_line_error(code, err, "different architecture", "width_mult 0.25 != 0.5")
    code, _, err = cli(capsys, "train", "--init-from", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "d"))
    assert_one_line_error(code, err, "checkpoint not found")


def test_train_options_come_from_the_config_dataclasses(capsys: pytest.CaptureFixture[str]) -> None:
    """TrainInputs/TrainConfig are the single source: every CLI field is an option showing its default."""
    from dataclasses import fields

    from amc_mobile.training import TrainConfig, TrainInputs

    code, out, _ = cli(capsys, "train", "--help")
    assert code == 0
    text = " ".join(out.split())
    for cls in (TrainInputs, TrainConfig):
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            if f.metadata["cli"]:
                assert flag in text, flag
                if f.default not in (None, ""):
                    assert f"[default: {f.default}]" in text, flag
            else:
                assert flag not in text, flag
