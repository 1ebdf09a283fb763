"""``amc-bench`` latency commands end to end on tiny models (onnxruntime), and their one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from amc_mobile.cli.bench import app
from amc_mobile.cli.common import run_app
from amc_mobile.models import create_model
from amc_mobile.models.checkpoint import save_checkpoint

QUICK = """name: quick-cpu
backend: onnxruntime
description: onnxruntime, tiny protocol for tests
warmup_runs: 1
runs: 3
repeats: 2
min_window_ms: 0.5
"""
TINY = ["--model", "mobilenet_v1_cifar", "--width", "0.25", "--resolution", "8", "--in-chans", "1"]


@pytest.fixture()
def quick(tmp_path, monkeypatch):
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "quick-cpu.yaml").write_text(QUICK)
    monkeypatch.setenv("AMC_DEVICE_PROFILES", str(d))
    monkeypatch.setenv("AMC_ARTIFACT_CACHE", str(tmp_path / "cache"))
    return d


def _run(args, capsys):
    code = run_app(app, args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_devices_lists_profiles_and_why_unusable(capsys) -> None:
    code, out, _ = _run(["devices"], capsys)
    assert code == 0
    assert "host-cpu" in out and "host-tflite" in out and "gpu-cuda" in out


@pytest.mark.parametrize("args,needle", [
    (["profile", "--device", "no-such"] + TINY, "host-cpu"),
    (["measure", "--device", "no-such", "x.onnx"], "host-tflite"),
])
def test_unknown_device_is_one_line_listing_profiles(args, needle, capsys) -> None:
    code, _, err = _run(args, capsys)
    assert code == 2 and err.count("\n") == 1 and needle in err


def test_unusable_device_is_one_line_with_a_fix(capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: gpu-cuda is usable")
    code, _, err = _run(["profile", "--device", "gpu-cuda"] + TINY, capsys)
    assert code == 2 and err.count("\n") == 1 and "not usable" in err and "fix" in err


def test_corrupt_model_file_is_one_line(tmp_path, quick, capsys) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    code, _, err = _run(["measure", "--device", "quick-cpu", str(bad)], capsys)
    assert code == 2 and err.count("\n") == 1 and "bad.onnx" in err
    ckpt = tmp_path / "bad.pt"
    ckpt.write_bytes(b"nope")
    code, _, err = _run(["measure", "--device", "quick-cpu", str(ckpt)], capsys)
    assert code == 2 and err.count("\n") == 1 and "corrupt" in err


def test_profile_cli_resumes_without_duplicates(tmp_path, quick, capsys) -> None:
    out = tmp_path / "t.csv"
    code, _, _ = _run(["profile", "--device", "quick-cpu", *TINY, "--points", "2", "--out", str(out),
                       "--max-rows", "3"], capsys)
    assert code == 0
    first = pd.read_csv(out)
    assert len(first) == 3
    code, stdout, _ = _run(["profile", "--device", "quick-cpu", *TINY, "--points", "2", "--out", str(out),
                            "--max-rows", "2"], capsys)
    df = pd.read_csv(out)
    assert code == 0 and len(df) == 5 and not df.duplicated(["slot", "cin", "cout"]).any()
    pd.testing.assert_frame_equal(df.head(3), first)
    assert "5/" in stdout


def test_measure_and_compare_checkpoints(tmp_path, quick, capsys) -> None:
    a = save_checkpoint(tmp_path / "a.pt", create_model("mobilenet_v1_cifar", width_mult=0.25, input_size=8, in_chans=1))
    b = save_checkpoint(tmp_path / "b.pt", create_model("mobilenet_v1_cifar", width_mult=0.125, input_size=8, in_chans=1))
    code, out, _ = _run(["measure", "--device", "quick-cpu", str(a), "--json"], capsys)
    res = json.loads(out)
    assert code == 0 and res["median_ms"] >= 0 and res["count"] == 2
    assert res["metadata"]["runtime"] == "onnxruntime" and res["metadata"]["runtime_version"]
    assert res["metadata"]["protocol"]["repeats"] == 2
    code, out, _ = _run(["compare", "--device", "quick-cpu", str(a), str(b), "--repeats", "3", "--json"], capsys)
    res = json.loads(out)
    assert code == 0 and res["ci95_low"] <= res["speedup"] <= res["ci95_high"] and res["pairs"] == 3


def test_predict_needs_a_table_and_names_the_command(quick, capsys) -> None:
    code, _, err = _run(["predict", "--device", "quick-cpu", *TINY], capsys)
    assert code == 2 and "amc-bench profile --device quick-cpu" in err and err.count("\n") == 1


def test_predict_from_channels_with_a_table(tmp_path, quick, capsys) -> None:
    (quick / "fake.yaml").write_text("name: fake\nbackend: fake-test\nruns: 2\nrepeats: 2\nmin_window_ms: 0\n")
    out = tmp_path / "t.csv"
    assert _run(["profile", "--device", "fake", *TINY, "--points", "2", "--out", str(out)], capsys)[0] == 0
    code, stdout, err = _run(["predict", "--device", "quick-cpu", *TINY, "--table", str(out), "--json"], capsys)
    assert code == 0, err
    full = json.loads(stdout)["predicted_ms"]
    from amc_mobile.pruning import find_groups

    groups = find_groups(create_model("mobilenet_v1_cifar", width_mult=0.25, input_size=8, in_chans=1), 8)
    keep = ",".join(str(max(1, g.width // 2)) for g in groups)
    code, stdout, err = _run(["predict", "--device", "quick-cpu", *TINY, "--table", str(out), "--channels", keep,
                              "--json"], capsys)
    assert code == 0, err
    assert 0 < json.loads(stdout)["predicted_ms"] <= full * 1.5
    # the same table asked about another resolution: one line
    other = [*TINY[:4], "--resolution", "16", "--in-chans", "1"]
    code, _, err = _run(["predict", "--device", "quick-cpu", *other, "--table", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and "px" in err
