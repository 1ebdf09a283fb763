"""The search end to end on a tiny model and a toy data set: outputs, budgets, baselines, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from amc_mobile.errors import UserError

TOY = "toy-search"
HERE = Path(__file__).resolve().parent


def _register_toy(root: Path) -> None:
    """A 4-class, 1-channel, 12 px data set: a bright square whose position gives the class."""
    from amc_mobile.data.datasets import DatasetEntry, RawData, register_dataset

    def reader(_: Path) -> RawData:
        gen = torch.Generator().manual_seed(0)

        def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.randint(0, 4, (n,), generator=gen)
            x = torch.randint(0, 60, (n, 1, 12, 12), generator=gen, dtype=torch.uint8)
            for c in range(4):
                r, q = divmod(c, 2)
                x[y == c, :, 6 * r:6 * r + 6, 6 * q:6 * q + 6] += 150
            return x, y

        xtr, ytr = make(2000)
        xte, yte = make(200)
        return RawData(xtr, ytr, xte, yte, ["a", "b", "c", "d"])

    root.mkdir(parents=True, exist_ok=True)
    register_dataset(DatasetEntry(TOY, "toy", reader, (str(root),), "generated", None, None, val_size=300))


def _teacher(path: Path) -> Path:
    from amc_mobile.data import get_dataset
    from amc_mobile.models import create_model
    from amc_mobile.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("mobilenet_v1_cifar", num_classes=4, in_chans=1, width_mult=0.25, input_size=12)
    return save_checkpoint(path, model, data=get_dataset(TOY, split="val").data_info())


class MacsLatency:
    """A stand-in latency table: ms = 1e-5 * MACs + 0.002 * channels + 0.05 (monotone, non-linear in
    MACs), so the latency path runs without measuring anything."""

    def predict(self, desc) -> float:  # noqa: ANN001
        return 0.05 + 1e-5 * desc.macs + 0.002 * sum(s.out_channels for s in desc.layers)


def _cfg(**kw):  # noqa: ANN202
    from amc_mobile.search.runner import SearchConfig

    base = {"episodes": 6, "warmup": 3, "val_size": 150, "calib_batches": 2, "calib_batch_size": 20,
            "eval_batch_size": 150, "measure": False}
    return SearchConfig(**{**base, **kw})


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    _register_toy(tmp_path / "data")
    return _teacher(tmp_path / "teacher.pt")


def test_search_writes_every_output_and_every_episode_meets_the_latency_budget(toy: Path, tmp_path: Path) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    out = tmp_path / "run"
    summary = run_search(SearchInputs(str(toy), latency_budget="60%", params_budget="80%"), _cfg(reward="latency"),
                         out, progress=False, log=lambda m: None, latency_predictor=MacsLatency())
    for name in ("policy.json", "pruned.pt", "episodes.csv", "summary.json", "search.png"):
        assert (out / name).stat().st_size > 0, name
    log = pd.read_csv(out / "episodes.csv")
    assert list(log["episode"]) == list(range(6))
    budget = {b["kind"]: b["value"] for b in summary["budgets"]}
    assert (log["latency_ms"] <= budget["latency"] * (1 + 1e-9)).all()
    assert (log["params"] <= budget["params"]).all()
    assert summary["final"]["predicted_latency_ms"] <= budget["latency"] * (1 + 1e-9)
    assert summary["final"]["predicted_latency_ms"] < summary["teacher"]["predicted_latency_ms"]
    assert json.loads((out / "summary.json").read_text())["best_episode"] == summary["best_episode"]
    # the saved model is the pruned one and reloads at its pruned widths
    from amc_mobile.models import describe_model
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.pruning import PruningPolicy

    model, _ = load_checkpoint(out / "pruned.pt")
    assert describe_model(model, 12).macs == summary["final"]["macs"]
    assert PruningPolicy.load(out / "policy.json").keep_channels == summary["keep_channels"]


def test_flops_search_and_uniform_baseline_share_the_output_format(toy: Path, tmp_path: Path) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    amc = run_search(SearchInputs(str(toy), flops_budget="50%"), _cfg(episodes=4, warmup=2), tmp_path / "amc",
                     progress=False, log=lambda m: None)
    uni = run_search(SearchInputs(str(toy), flops_budget="50%", method="uniform"), _cfg(), tmp_path / "uni",
                     progress=False, log=lambda m: None)
    assert set(amc) - {"uniform_keep_ratio"} <= set(uni)
    limit = amc["budgets"][0]["value"]
    assert amc["final"]["macs"] <= limit and uni["final"]["macs"] <= limit
    assert 0.2 <= uni["uniform_keep_ratio"] < 1.0
    assert len(pd.read_csv(tmp_path / "uni" / "episodes.csv")) == 1


def test_infeasible_budget_is_one_line_with_the_minimum(toy: Path, tmp_path: Path) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    with pytest.raises(UserError, match=r"infeasible latency budget .* minimum reachable latency is [0-9.]+ ms"):
        run_search(SearchInputs(str(toy), latency_budget="0.01ms"), _cfg(), tmp_path / "x", progress=False,
                   log=lambda m: None, latency_predictor=MacsLatency())


def test_missing_latency_table_names_the_profile_command(toy: Path, tmp_path: Path) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    with pytest.raises(UserError, match=r"amc-bench profile --device host-cpu --checkpoint "):
        run_search(SearchInputs(str(toy), device="host-cpu", latency_budget="50%"), _cfg(), tmp_path / "x",
                   progress=False, log=lambda m: None)


def test_rerunning_continues_the_same_search_and_refuses_other_settings(toy: Path, tmp_path: Path) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    inputs = SearchInputs(str(toy), flops_budget="50%")
    run_search(inputs, _cfg(episodes=2, warmup=1), tmp_path / "r", progress=False, log=lambda m: None)
    run_search(inputs, _cfg(episodes=3, warmup=1), tmp_path / "r", progress=False, log=lambda m: None)
    assert list(pd.read_csv(tmp_path / "r" / "episodes.csv")["episode"]) == [0, 1, 2]
    with pytest.raises(UserError, match=r"other settings \(flops_budget\).*--resume"):
        run_search(SearchInputs(str(toy), flops_budget="40%"), _cfg(episodes=3, warmup=1), tmp_path / "r",
                   progress=False, log=lambda m: None)


# --- resume after SIGKILL -------------------------------------------------------------------------

def _child(data_root: str, teacher: str, out: str, episodes: int) -> None:
    """Entry point of the subprocess that gets killed (run via ``python -c``)."""
    from amc_mobile.search.runner import SearchInputs, run_search

    torch.set_num_threads(1)
    _register_toy(Path(data_root))
    run_search(SearchInputs(teacher, flops_budget="50%"), _cfg(episodes=episodes, warmup=3), out, progress=False,
               log=lambda m: None)


def test_killed_search_resumes_without_losing_or_repeating_an_episode(toy: Path, tmp_path: Path) -> None:
    from amc_mobile.search.runner import SearchInputs, load_saved_settings, run_search

    torch.set_num_threads(1)
    episodes = 10
    inputs = SearchInputs(str(toy), flops_budget="50%")
    straight = tmp_path / "straight"
    run_search(inputs, _cfg(episodes=episodes, warmup=3), straight, progress=False, log=lambda m: None)

    killed = tmp_path / "killed"
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_search_runner as t; "
            f"t._child({str(tmp_path / 'data')!r}, {str(toy)!r}, {str(killed)!r}, {episodes})")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            log = killed / "episodes.csv"
            if log.exists() and len(log.read_text().splitlines()) - 1 >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the child finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done_before = len(pd.read_csv(killed / "episodes.csv"))
    assert 5 <= done_before < episodes

    saved_inputs, cfg = load_saved_settings(killed)
    assert saved_inputs == inputs and cfg.episodes == episodes
    run_search(saved_inputs, cfg, killed, resume=True, progress=False, log=lambda m: None)
    a = pd.read_csv(straight / "episodes.csv")
    b = pd.read_csv(killed / "episodes.csv")
    assert list(b["episode"]) == list(range(episodes))  # exactly N unique, consecutive episodes
    # the continuation is the same RNG stream as the uninterrupted run
    assert list(a["keep_channels"]) == list(b["keep_channels"])
    assert a["reward"].tolist() == pytest.approx(b["reward"].tolist())
    assert json.loads((killed / "summary.json").read_text())["episodes"] == episodes


def test_cli_search_and_resume_flags(toy: Path, tmp_path: Path) -> None:
    from amc_mobile.cli.common import run_app
    from amc_mobile.cli.main import app

    out = tmp_path / "cli"
    args = ["search", "--checkpoint", str(toy), "--flops-budget", "50%", "--episodes", "2", "--warmup", "1",
            "--val-size", "100", "--out", str(out), "--no-progress", "--no-measure"]
    assert run_app(app, args) == 0
    assert (out / "summary.json").exists()
    # extending a finished search by --resume runs only the new episodes
    assert run_app(app, ["search", "--resume", str(out), "--episodes", "3", "--no-progress", "--no-measure"]) == 0
    assert len(pd.read_csv(out / "episodes.csv")) == 3
    assert run_app(app, ["search", "--checkpoint", str(toy), "--out", str(tmp_path / "y"), "--no-progress"]) == 2
