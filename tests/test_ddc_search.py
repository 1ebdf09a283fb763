"""DDC's search end to end on a tiny ResNet and a toy data set: outputs, resume, transfer, bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from amc_mobile.errors import UserError

TOY = "toy-ddc"


@pytest.fixture()
def teacher(tmp_path: Path, toy_data: Any) -> Path:
    """A seeded ResNet-18 (width 1/8, 4 classes, 12 px) trained one epoch on the shared toy data set."""
    from amc_mobile.data import TensorLoader, get_dataset
    from amc_mobile.models import create_model
    from amc_mobile.models.checkpoint import save_checkpoint

    toy_data(tmp_path / "data", name=TOY, n_train=1200)
    torch.manual_seed(0)
    model = create_model("resnet18_cifar", num_classes=4, in_chans=1, width_mult=0.125, input_size=12)
    train = get_dataset(TOY, split="train")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for x, y in TensorLoader(train, 64, shuffle=True, seed=0):  # one epoch: the toy is easy
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_checkpoint(tmp_path / "teacher.pt", model.eval(), data=get_dataset(TOY, split="val").data_info())


def _cfg(**kw):  # noqa: ANN202
    from amc_mobile.search.ddc import DDCConfig

    base = {"episodes": 4, "samples_per_iteration": 3, "student_images": 64, "student_batch_size": 32,
            "bn_images": 32, "val_size": 64, "measure": False}
    return DDCConfig(**{**base, **kw})


class MacsLatency:
    """Stand-in latency table (ms grows with MACs and channels; the shared fixture's formula), so the
    latency path runs without measuring; block-removed models simply have fewer layers."""

    def predict(self, desc: Any) -> float:
        return 0.05 + 1e-5 * desc.macs + 0.002 * sum(s.out_channels for s in desc.layers)


def _run(teacher: Path, out: Path, **kw: Any) -> Any:
    from amc_mobile.search.ddc import DDCInputs, run_ddc_search

    inputs = DDCInputs(str(teacher), **kw.pop("inputs", {}))
    return run_ddc_search(inputs, _cfg(**kw.pop("cfg", {})), out, log=lambda m: None,
                          latency_predictor=kw.pop("latency_predictor", MacsLatency()), **kw)


def test_ddc_search_writes_a_smaller_student_that_reloads(teacher: Path, tmp_path: Path) -> None:
    from amc_mobile.models.checkpoint import load_checkpoint

    out = tmp_path / "ddc"
    summary = _run(teacher, out)
    assert summary["removable_units"] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert summary["iterations"] == 4 and summary["samples"] == 12
    assert 1 <= summary["students_trained"] <= 12  # cached by architecture
    for name in ("student.pt", "samples.csv", "iterations.csv", "summary.json", "ddc.png"):
        assert (out / name).exists(), name
    student, _ = load_checkpoint(out / "student.pt")
    assert list(student.arch_spec.removed) == summary["student"]["removed"]
    n_params = sum(p.numel() for p in student.parameters())
    assert n_params == summary["student"]["params"]
    assert student(torch.randn(2, 1, 12, 12)).shape == (2, 4)
    rows = (out / "samples.csv").read_text().splitlines()
    assert len(rows) == 1 + 12
    # the saved student is the picked candidate re-trained: same seed, same weights, same score
    assert summary["student"]["val_top1"] == summary["candidates"][0]["top1"]
    saved = json.loads((out / "summary.json").read_text())
    assert "PREDICTED" in saved["note"] and saved["pick_basis"].startswith("predicted")


def test_students_are_cached_and_evaluation_is_pure(teacher: Path, tmp_path: Path) -> None:
    from amc_mobile.search.ddc.search import DDCInputs, build_ddc_problem, evaluate_students

    problem = build_ddc_problem(DDCInputs(str(teacher)), _cfg(), MacsLatency(), log=lambda m: None)
    archs = [("layer1.1",), ("layer2.1", "layer4.1"), ()]
    serial = evaluate_students(problem.ctx, archs)
    # a worker receives the function and its context pickled (as Ray does) and runs them in any order
    reversed_ = evaluate_students(problem.ctx, archs[::-1],
                                  map_fn=lambda f, xs: [pickle.loads(pickle.dumps(f))(x) for x in xs])
    for a, b in zip(serial, reversed_[::-1], strict=True):
        assert a["top1"] == b["top1"] and a["loss"] == b["loss"] and a["params"] == b["params"]
    assert serial[1]["params"] < serial[0]["params"] < serial[2]["params"]


def test_killed_search_resumes_to_the_same_result(teacher: Path, tmp_path: Path) -> None:
    straight = _run(teacher, tmp_path / "a")
    first = _run(teacher, tmp_path / "b", stop_after=2)
    assert first == {"iterations_done": 2, "finished": False}
    resumed = _run(teacher, tmp_path / "b", resume=True)
    a = (tmp_path / "a" / "samples.csv").read_text()
    b = (tmp_path / "b" / "samples.csv").read_text()
    strip = [",".join(r.split(",")[:-1]) for r in a.splitlines()]  # all but train_s (wall time)
    assert strip == [",".join(r.split(",")[:-1]) for r in b.splitlines()]
    assert resumed["student"]["removed"] == straight["student"]["removed"]
    assert resumed["reward"] == straight["reward"]
    with pytest.raises(UserError, match="other settings"):
        _run(teacher, tmp_path / "b", cfg={"samples_per_iteration": 2})


def test_transfer_starts_from_the_source_policy(teacher: Path, tmp_path: Path) -> None:
    from amc_mobile.search.ddc.agent import ReinforceAgent

    _run(teacher, tmp_path / "full")
    _run(teacher, tmp_path / "sub", inputs={"classes": "0,1,2", "transfer_from": str(tmp_path / "full")},
         cfg={"episodes": 1})
    src = torch.load(tmp_path / "full" / "ddc_state.pt", weights_only=True)["agent"]
    dst = torch.load(tmp_path / "sub" / "ddc_state.pt", weights_only=True)["agent"]
    # after one update from the transferred weights, the policies are close but not equal
    a = torch.cat([v.flatten() for v in src["policy"].values()])
    b = torch.cat([v.flatten() for v in dst["policy"].values()])
    fresh = ReinforceAgent(torch.zeros(10, 8), [True] * 10, seed=0).policy.state_dict()
    c = torch.cat([v.flatten() for v in fresh.values()])
    assert (a - b).norm() < (c - b).norm()
    with pytest.raises(UserError, match="no ddc_state.pt"):
        _run(teacher, tmp_path / "bad", inputs={"transfer_from": str(tmp_path)})


def test_bad_input_is_one_line(teacher: Path, tmp_path: Path) -> None:
    from amc_mobile.models import create_model
    from amc_mobile.models.checkpoint import save_checkpoint

    with pytest.raises(UserError, match="outside"):
        _run(teacher, tmp_path / "x", cfg={"thresholds": (0.9, 1.5, 0.6)})
    with pytest.raises(UserError, match="outside"):
        _run(teacher, tmp_path / "x", cfg={"thresholds": (0.0, 0.3, 0.6)})
    with pytest.raises(UserError, match="samples-per-iteration"):
        _run(teacher, tmp_path / "x", cfg={"samples_per_iteration": 0})
    with pytest.raises(UserError, match="infeasible.*at best"):
        _run(teacher, tmp_path / "x", inputs={"latency_budget": "5%"})
    assert not (tmp_path / "x").exists()  # a refused search leaves nothing behind
    # a model whose removable units are all gone already: says so and lists the trunk it found
    from amc_mobile.data import get_dataset
    from amc_mobile.search.ddc import remove_units

    model = create_model("resnet18_cifar", num_classes=4, in_chans=1, width_mult=0.125, input_size=12)
    bare = remove_units(model, ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"])
    path = save_checkpoint(tmp_path / "bare.pt", bare, data=get_dataset(TOY, split="val").data_info())
    with pytest.raises(UserError, match=r"no removable units.*layer2\.0 \(BasicBlock"):
        _run(path, tmp_path / "y")


def test_ddc_plus_amc_channel_prunes_the_removed_model_under_the_budget(teacher: Path, tmp_path: Path,
                                                                         search_cfg: Any) -> None:
    from amc_mobile.models.checkpoint import load_checkpoint

    out = tmp_path / "two"
    # removing every unit reaches ~36% of the teacher's stand-in latency: a 25% budget needs the channel stage
    summary = _run(teacher, out, inputs={"method": "ddc+amc", "latency_budget": "25%"},
                   amc_config=search_cfg(episodes=4, warmup=2, val_size=100, select_size=100, top_k=2,
                                         calib_batches=4))
    amc = summary["amc"]
    assert amc["budget_ms"] == pytest.approx(0.25 * summary["teacher"]["predicted_latency_ms"])
    assert not amc["skipped"] and amc["removed_latency_ms"] > amc["budget_ms"]
    final, _ = load_checkpoint(amc["final_checkpoint"])
    assert final.arch_spec.removed == tuple(summary["student"]["removed"])
    from amc_mobile.models import describe_model

    assert MacsLatency().predict(describe_model(final)) <= amc["budget_ms"] * 1.001
    assert final(torch.randn(1, 1, 12, 12)).shape == (1, 4)


def test_cli_ddc_with_a_profiled_table_and_resume(teacher: Path, tmp_path: Path, fake_profile: Any,
                                                 fake_backend: Any) -> None:
    """``amc-mobile search --method ddc`` end to end: a latency table profiled (fake backend) for the
    teacher predicts every candidate, block-removed ones included; --resume extends the search."""
    from amc_mobile.cli.common import run_app
    from amc_mobile.cli.main import app
    from amc_mobile.latency.profiling import profile_table
    from amc_mobile.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(teacher)
    table = tmp_path / "table.csv"
    profile_table(fake_profile, model, table, granularity=8, points=2, calibration=2)
    out = tmp_path / "cli"
    base = ["search", "--method", "ddc", "--checkpoint", str(teacher), "--latency-table", str(table),
            "--samples-per-iteration", "2", "--student-images", "64", "--val-size", "64", "--bn-images", "32",
            "--no-measure", "--no-progress"]
    assert run_app(app, [*base, "--episodes", "2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["student"]["predicted_latency_ms"] > 0
    assert run_app(app, ["search", "--resume", str(out), "--episodes", "3", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["iterations"] == 3
    # bad input: one line, exit code 2
    assert run_app(app, [*base, "--ddc-thresholds", "0.9,0,0.6", "--out", str(tmp_path / "z")]) == 2
    assert run_app(app, [*base, "--samples-per-iteration", "0", "--out", str(tmp_path / "z")]) == 2
    assert run_app(app, [*base, "--top-k", "3", "--out", str(tmp_path / "z")]) == 2  # an AMC-only option
    assert run_app(app, ["search", "--checkpoint", str(teacher), "--student-images", "5", "--flops-budget", "50%",
                         "--out", str(tmp_path / "z")]) == 2  # a DDC-only option with AMC


def test_latency_budget_sets_t_th_and_the_pick_meets_it(teacher: Path, tmp_path: Path) -> None:
    summary = _run(teacher, tmp_path / "b", inputs={"latency_budget": "60%"}, cfg={"episodes": 2})
    assert summary["thresholds_used"] == pytest.approx([0.9, 0.6, 0.6])
    assert summary["meets_budget"] is True
    assert summary["student"]["predicted_latency_ms"] <= summary["latency_budget_ms"]


def test_a_second_writer_is_refused_with_the_holder_pid(teacher: Path, tmp_path: Path) -> None:
    import os

    from amc_mobile.storage import ExclusiveLock

    out = tmp_path / "busy"
    with ExclusiveLock(out / "ddc_search"), pytest.raises(UserError, match=f"PID {os.getpid()}"):
        _run(teacher, out)
