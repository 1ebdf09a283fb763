"""``amc-mobile prune`` / ``export``: artefacts written, bad input answered with one line."""

from __future__ import annotations

import json

import pytest

from amc_mobile.cli.common import run_app
from amc_mobile.cli.main import app
from amc_mobile.models import describe_model
from amc_mobile.models.checkpoint import load_checkpoint


def test_prune_uniform_then_export(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out, pol = tmp_path / "p.pt", tmp_path / "policy.json"
    rc = run_app(app, ["prune", "--model", "mobilenet_v1_cifar", "--width", "0.5", "--uniform", "0.5",
                       "--out", str(out), "--save-policy", str(pol)])
    text = capsys.readouterr().out
    assert rc == 0 and "MACs" in text and "params" in text
    model, meta = load_checkpoint(out)
    assert model.conv1[0].out_channels == 8 and meta["pruning"]["keep_channels"][0] == 8
    assert json.loads(pol.read_text())["model"] == "mobilenet_v1_cifar"
    # the saved policy re-applies to the same model, and the result exports to ONNX
    assert run_app(app, ["prune", "--model", "mobilenet_v1_cifar", "--width", "0.5", "--policy", str(pol),
                         "--out", str(tmp_path / "q.pt")]) == 0
    assert run_app(app, ["export", "--checkpoint", str(out), "--out", str(tmp_path / "p.onnx")]) == 0
    assert "max |error|" in capsys.readouterr().out and (tmp_path / "p.onnx").exists()


def test_prune_channels_reproduces_amc_shapes(tmp_path) -> None:
    keep = "24,48,96,80,192,200,328,352,368,360,328,400,736,752"
    out = tmp_path / "amc.pt"
    assert run_app(app, ["prune", "--model", "mobilenet_v1", "--resolution", "64", "--channels", keep,
                         "--out", str(out)]) == 0
    model, _ = load_checkpoint(out)
    convs = [s.out_channels for s in describe_model(model, 64).layers if s.type == "conv"]
    assert convs == [int(c) for c in keep.split(",")]


def test_fine_grained_cli(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.pt"
    assert run_app(app, ["prune", "--model", "mobilenet_v1_cifar", "--width", "0.25", "--sparsity", "0.8",
                         "--out", str(out)]) == 0
    assert "sparsity 80.0%" in capsys.readouterr().out
    _, meta = load_checkpoint(out)
    assert abs(meta["fine_grained"]["sparsity"] - 0.8) < 1e-3


@pytest.mark.parametrize(("args", "message"), [
    (["--channels", "8,8"], "got 2 channel counts for 14 prunable groups"),
    (["--channels", "8,16,32,32,64,64,128,128,128,128,128,128,256,600"],
     "group 'features.12.pw.0': 600 channels is above its full width 512"),
    (["--uniform", "1.5"], "outside (0, 1]"),
    (["--uniform", "0.5", "--channels", "8"], "exactly one of"),
    (["--uniform", "0.5", "--criterion", "l3"], "unknown criterion 'l3'"),
])
def test_bad_input_is_one_line(args: list[str], message: str, tmp_path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    rc = run_app(app, ["prune", "--model", "mobilenet_v1_cifar", "--width", "0.5", *args,
                       "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err and "Traceback" not in err


def test_policy_for_another_model_is_rejected(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    pol = tmp_path / "v1.json"
    assert run_app(app, ["prune", "--model", "mobilenet_v1_cifar", "--width", "0.25", "--uniform", "0.5",
                         "--out", str(tmp_path / "a.pt"), "--save-policy", str(pol)]) == 0
    capsys.readouterr()
    rc = run_app(app, ["prune", "--model", "mobilenet_v2_cifar", "--width", "0.25", "--policy", str(pol),
                       "--out", str(tmp_path / "b.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "policy is for model 'mobilenet_v1_cifar', not 'mobilenet_v2_cifar'" in err


def _saved_policy(tmp_path) -> dict:  # noqa: ANN001
    pol = tmp_path / "good.json"
    assert run_app(app, ["prune", "--model", "mobilenet_v1_cifar", "--width", "0.25", "--uniform", "0.5",
                         "--out", str(tmp_path / "a.pt"), "--save-policy", str(pol)]) == 0
    return json.loads(pol.read_text())


@pytest.mark.parametrize(("edit", "message"), [
    ({"keep_ratios": "nan-first", "keep_channels": None}, "keep ratio nan is outside (0, 1]"),
    ({"keep_ratios": "big-first", "keep_channels": None}, "keep ratio 1.5 is outside (0, 1]"),
    ({"keep_ratios": "text-first", "keep_channels": None}, "keep ratio 'half' is outside (0, 1]"),
    ({"keep_channels": "nan-first"}, "keep_channels must be an integer, got nan"),
    ({"keep_channels": "neg-first"}, "keep_channels must be >= 1, got -8"),
    ({"keep_channels": "frac-first"}, "keep_channels must be an integer, got 7.5"),
    ({"keep_channels": "big-first"}, "channels is above its full width"),
    ({"full_widths": "text-first"}, "full_widths must be an integer"),
    ({"group_names": "a string"}, "'group_names' must be a list of strings"),
    ({"multiple": 0}, "'multiple' must be >= 1"),
    ({"extra": [1]}, "'extra' must be a JSON object"),
])
def test_malformed_policy_json_is_one_line(edit: dict, message: str, tmp_path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = _saved_policy(tmp_path)
    first = {"nan-first": float("nan"), "big-first": 1.5, "text-first": "half", "neg-first": -8, "frac-first": 7.5}
    for key, value in edit.items():
        if value is None:
            data.pop(key)
        elif isinstance(value, str) and value.endswith("-first"):
            replacement = first[value]
            if value == "big-first" and key == "keep_channels":
                replacement = 10_000
            data[key] = [replacement, *data[key][1:]]
        else:
            data[key] = value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))  # json writes NaN as the bare token NaN, as a hand edit might
    capsys.readouterr()
    rc = run_app(app, ["prune", "--model", "mobilenet_v1_cifar", "--width", "0.25", "--policy", str(bad),
                       "--out", str(tmp_path / "b.pt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "b.pt").exists()


# --- the library call behind the command ----------------------------------------------------------
def test_prune_model_library_call_matches_its_checkpoint(tmp_path) -> None:
    from amc_mobile.errors import UserError
    from amc_mobile.models import create_model
    from amc_mobile.pruning import PruneConfig, prune_model

    net = create_model("mobilenet_v1_cifar", width_mult=0.5)
    res = prune_model(net, {}, PruneConfig(channels="8,16,32,32,64,64,128,128,128,128,128,128,256,256"),
                      tmp_path / "p.pt")
    pruned, meta = load_checkpoint(res.out)
    assert res.keep_channels == tuple(meta["pruning"]["keep_channels"])
    assert res.after.macs == describe_model(pruned, 32).macs < res.before.macs
    assert res.reconstruct_skipped and not res.reconstructed and res.metrics_after is None  # no data given
    assert meta["parent"] == "mobilenet_v1_cifar"
    with pytest.raises(UserError, match="exactly one of"):
        PruneConfig()
    with pytest.raises(UserError, match="unknown criterion"):
        PruneConfig(uniform=0.5, criterion="l3")
