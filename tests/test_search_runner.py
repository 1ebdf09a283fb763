"""The search end to end on a tiny model and a toy data set: outputs, budgets, baselines, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from conftest import MacsLatency

from amc_mobile.errors import UserError

TOY = "toy-search"
HERE = Path(__file__).resolve().parent


def test_search_writes_every_output_and_every_episode_meets_the_latency_budget(toy: Path, tmp_path: Path, search_cfg: Any, macs_latency: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    out = tmp_path / "run"
    summary = run_search(SearchInputs(str(toy), latency_budget="60%", params_budget="80%"), search_cfg(reward="latency"),
                         out, progress=False, log=lambda m: None, latency_predictor=macs_latency)
    for name in ("policy.json", "pruned.pt", "episodes.csv", "summary.json", "search.png"):
        assert (out / name).stat().st_size > 0, name
    log = pd.read_csv(out / "episodes.csv")
    assert list(log["episode"]) == list(range(6))
    budget = {b["kind"]: b["value"] for b in summary.budgets}
    assert (log["latency_ms"] <= budget["latency"] * (1 + 1e-9)).all()
    assert (log["params"] <= budget["params"]).all()
    assert summary.final.predicted_latency_ms <= budget["latency"] * (1 + 1e-9)
    assert summary.final.predicted_latency_ms < summary.teacher.predicted_latency_ms
    assert json.loads((out / "summary.json").read_text())["best_episode"] == summary.best_episode
    # the saved model is the pruned one and reloads at its pruned widths
    from amc_mobile.models import describe_model
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.pruning import PruningPolicy

    model, _ = load_checkpoint(out / "pruned.pt")
    assert describe_model(model, 12).macs == summary.final.macs
    assert PruningPolicy.load(out / "policy.json").keep_channels == summary.keep_channels


def test_flops_search_and_uniform_baseline_share_the_output_format(toy: Path, tmp_path: Path, search_cfg: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    amc = run_search(SearchInputs(str(toy), flops_budget="50%"), search_cfg(episodes=4, warmup=2), tmp_path / "amc",
                     progress=False, log=lambda m: None)
    uni = run_search(SearchInputs(str(toy), flops_budget="50%", method="uniform"), search_cfg(), tmp_path / "uni",
                     progress=False, log=lambda m: None)
    assert set(amc.to_dict()) == set(uni.to_dict())
    limit = amc.budgets[0]["value"]
    assert amc.final.macs <= limit and uni.final.macs <= limit
    assert uni.uniform_keep_ratio is not None and 0.2 <= uni.uniform_keep_ratio < 1.0
    assert len(pd.read_csv(tmp_path / "uni" / "episodes.csv")) == 1


def test_infeasible_budget_is_one_line_with_the_minimum(toy: Path, tmp_path: Path, search_cfg: Any, macs_latency: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    with pytest.raises(UserError, match=r"infeasible latency budget .* minimum reachable latency is [0-9.]+ ms"):
        run_search(SearchInputs(str(toy), latency_budget="0.01ms"), search_cfg(), tmp_path / "x", progress=False,
                   log=lambda m: None, latency_predictor=macs_latency)


def test_missing_latency_table_names_the_profile_command(toy: Path, tmp_path: Path, search_cfg: Any) -> None:
    """No table for this model and a device that cannot be measured here (a phone that is not
    connected): one line naming the command that builds the table (on a reachable device the search
    builds it in the user store itself)."""
    from amc_mobile.search.runner import SearchInputs, run_search

    with pytest.raises(UserError, match=r"amc-bench profile --device pixel1 --checkpoint "):
        run_search(SearchInputs(str(toy), device="pixel1", latency_budget="50%"), search_cfg(), tmp_path / "x",
                   progress=False, log=lambda m: None)
    assert not (tmp_path / "x").exists()  # a refused search leaves no directory behind


def test_rerunning_continues_the_same_search_and_refuses_other_settings(toy: Path, tmp_path: Path, search_cfg: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    inputs = SearchInputs(str(toy), flops_budget="50%")
    run_search(inputs, search_cfg(episodes=2, warmup=1), tmp_path / "r", progress=False, log=lambda m: None)
    run_search(inputs, search_cfg(episodes=3, warmup=1), tmp_path / "r", progress=False, log=lambda m: None)
    assert list(pd.read_csv(tmp_path / "r" / "episodes.csv")["episode"]) == [0, 1, 2]
    with pytest.raises(UserError, match=r"other settings \(flops_budget\).*--resume"):
        run_search(SearchInputs(str(toy), flops_budget="40%"), search_cfg(episodes=3, warmup=1), tmp_path / "r",
                   progress=False, log=lambda m: None)


# --- resume after SIGKILL -------------------------------------------------------------------------

def _child(data_root: str, teacher: str, out: str, episodes: int, kill_after: int) -> None:
    """Entry point of the subprocess that gets killed (run via ``python -c``): SIGKILL right after
    episode ``kill_after`` was saved (a deterministic point, no polling)."""
    import conftest  # the shared toy data set (this runs in a child process, outside pytest)

    from amc_mobile.search.runner import SearchInputs, run_search

    torch.set_num_threads(1)
    conftest.register_toy(Path(data_root))
    run_search(SearchInputs(teacher, flops_budget="50%"), conftest.toy_search_config(episodes=episodes, warmup=3),
               out, progress=False,
               log=lambda m: None, stop_after=kill_after)
    os.kill(os.getpid(), signal.SIGKILL)


def test_killed_search_resumes_without_losing_or_repeating_an_episode(toy: Path, tmp_path: Path, search_cfg: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, load_saved_settings, run_search

    torch.set_num_threads(1)
    episodes = 10
    inputs = SearchInputs(str(toy), flops_budget="50%")
    straight = tmp_path / "straight"
    run_search(inputs, search_cfg(episodes=episodes, warmup=3), straight, progress=False, log=lambda m: None)

    killed = tmp_path / "killed"
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_search_runner as t; "
            f"t._child({str(tmp_path / 'data')!r}, {str(toy)!r}, {str(killed)!r}, {episodes}, 5)")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL
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


# --- issue 9: BN re-estimation, seeded baselines, honest selection, greedy, bad input, failures ---------

@pytest.fixture(scope="module")
def trained_toy(tmp_path_factory: pytest.TempPathFactory, toy_data: Any) -> Path:
    """A toy teacher trained for real (a few hundred SGD steps), so accuracies mean something."""
    from amc_mobile.data import TensorLoader, get_dataset
    from amc_mobile.models import create_model
    from amc_mobile.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("trained")
    toy_data(root / "data")
    train = get_dataset(TOY, split="train")
    torch.manual_seed(0)
    model = create_model("mobilenet_v1_cifar", num_classes=4, in_chans=1, width_mult=0.25, input_size=12)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(3):
        for x, y in TensorLoader(train, 64, shuffle=True, seed=0):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return save_checkpoint(root / "teacher.pt", model.eval(), data=get_dataset(TOY, split="val").data_info())


def test_bn_reestimation_changes_statistics_and_improves_a_pruned_models_accuracy(trained_toy: Path) -> None:
    from amc_mobile.data import TensorLoader, get_dataset
    from amc_mobile.models.bn import reestimate_bn
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.pruning import ChannelPruner, round_channels
    from amc_mobile.training import evaluate

    teacher, _ = load_checkpoint(trained_toy)
    pruner = ChannelPruner(teacher, 12, None, reconstruct=False)
    # half the channels: the teacher's statistics no longer fit (keep 0.3 leaves the toy at chance level
    # whatever the statistics: on one machine 23.5% -> 21.0%, where keep 0.5 went 25.5% -> 49.5%)
    keep = [round_channels(g.width, 0.5) for g in pruner.groups]
    val = list(TensorLoader(get_dataset(TOY, split="val"), 300, shuffle=False))
    train_x = torch.cat([x for x, _ in TensorLoader(get_dataset(TOY, split="train").subset(500, 1), 250,
                                                      shuffle=False)])
    pruned = pruner.prune(keep)
    before = evaluate(pruned, val)["top1"]
    bn = next(m for m in pruned.modules() if isinstance(m, torch.nn.BatchNorm2d))
    mean_before = bn.running_mean.clone()
    reestimate_bn(pruned, train_x, batch_size=100)
    assert not torch.allclose(bn.running_mean, mean_before)
    assert not pruned.training and bn.momentum == 0.1  # eval mode, momentum restored
    after = evaluate(pruned, val)["top1"]
    assert after > before, (before, after)
    # the teacher itself is untouched by evaluating pruned candidates
    assert evaluate(teacher, val)["top1"] == evaluate(load_checkpoint(trained_toy)[0], val)["top1"]


def test_search_never_returns_less_than_uniform_and_reports_both_slices(trained_toy: Path, tmp_path: Path, search_cfg: Any, macs_latency: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    inputs = SearchInputs(str(trained_toy), latency_budget="50%")
    amc = run_search(inputs, search_cfg(episodes=5, warmup=3, top_k=3, bn_images=200), tmp_path / "amc", progress=False,
                     log=lambda m: None, latency_predictor=macs_latency)
    uni = run_search(SearchInputs(str(trained_toy), latency_budget="50%", method="uniform"), search_cfg(bn_images=200),
                     tmp_path / "uni", progress=False, log=lambda m: None, latency_predictor=macs_latency)
    log = pd.read_csv(tmp_path / "amc" / "episodes.csv")
    assert list(log["source"][:2]) == ["uniform", "flops-proportional"]
    assert log["keep_channels"][0] == " ".join(map(str, uni.keep_channels))
    # the best episode on the search slice is never below uniform width on that slice
    assert log["reward"].max() >= log["reward"][0]
    assert log["top1"].max() >= uni.final.val_top1
    # honest selection: the top-k were re-scored on the second slice, and the pick is the best there
    assert 1 <= len(amc.top_k) <= 3
    assert amc.final.select_top1 == max(s.select_top1 for s in amc.top_k) or amc.config["reward"] != "err"
    assert amc.final.select_images and amc.final.select_images > 0 and amc.bn_images == 200
    # the seeded episodes are in the agent's replay buffer with their raw actions
    state = torch.load(tmp_path / "amc" / "search_state.pt", weights_only=True)
    buf = state["agent"]["buffer"]
    n_groups = len(amc.keep_channels)
    assert int(buf["size"]) == 5 * n_groups
    assert buf["a"][:n_groups, 0].tolist() == pytest.approx([uni.uniform_keep_ratio] * n_groups, abs=1e-6)
    assert len(state["selection"]) == len(amc.top_k)  # re-scoring is saved: a resumed search reuses it


def test_greedy_meets_its_budget_and_logs_every_candidate(trained_toy: Path, tmp_path: Path, search_cfg: Any, macs_latency: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    out = tmp_path / "greedy"
    s = run_search(SearchInputs(str(trained_toy), latency_budget="45%", params_budget="80%", method="greedy"),
                   search_cfg(bn_images=100, greedy_steps=3), out, progress=False, log=lambda m: None,
                   latency_predictor=macs_latency)
    budget = {b["kind"]: b["value"] for b in s.budgets}
    assert s.final.predicted_latency_ms <= budget["latency"] * (1 + 1e-9)
    assert s.final.params <= budget["params"]
    log = pd.read_csv(out / "episodes.csv")
    assert len(log) > 3 and log["source"].str.startswith("greedy step").all()
    # resuming a finished greedy search re-evaluates nothing and picks the same final model
    again = run_search(SearchInputs(str(trained_toy), latency_budget="45%", params_budget="80%", method="greedy"),
                       search_cfg(bn_images=100, greedy_steps=3), out, progress=False, log=lambda m: None,
                       latency_predictor=macs_latency)
    assert len(pd.read_csv(out / "episodes.csv")) == len(log) and again.keep_channels == s.keep_channels


def test_greedy_with_an_infeasible_budget_is_one_line_with_the_minimum(toy: Path, tmp_path: Path, search_cfg: Any, macs_latency: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    with pytest.raises(UserError, match=r"infeasible latency budget .* minimum reachable latency is [0-9.]+ ms"):
        run_search(SearchInputs(str(toy), latency_budget="0.01ms", method="greedy"), search_cfg(), tmp_path / "g",
                   progress=False, log=lambda m: None, latency_predictor=macs_latency)
    assert not (tmp_path / "g").exists()  # a refused search leaves no directory behind


@pytest.mark.parametrize(("kw", "inputs_kw", "pattern"), [
    ({"bn_images": 10**7}, {}, r"--bn-images 10000000: the training split has [0-9]+ images; valid range: 0\.\.[0-9]+"),
    ({"top_k": 0}, {}, r"--top-k must be >= 1"),
    ({"val_size": 0}, {}, r"--val-size must be >= 1"),
    ({"warmup": 6}, {}, r"--warmup must be in \[0, 5\]"),
    ({"correct_budget_at": 1.0}, {}, r"--correct-budget-at must be in \[0, 1\)"),
    ({}, {"flops_budget": "1G"}, r"--flops-budget 1G is not below the teacher's macs"),
    ({}, {"method": "random"}, r"unknown method 'random'; valid methods: amc, uniform, greedy"),
])
def test_bad_settings_are_one_line_and_leave_no_directory(toy: Path, tmp_path: Path, kw: dict, inputs_kw: dict,
                                                          pattern: str, search_cfg: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    inputs = SearchInputs(str(toy), **{"flops_budget": "50%", **inputs_kw})
    with pytest.raises(UserError, match=pattern):
        run_search(inputs, search_cfg(**kw), tmp_path / "bad", progress=False, log=lambda m: None)
    assert not (tmp_path / "bad").exists()


def test_library_defaults_give_a_sensible_warmup() -> None:
    from amc_mobile.search.config import SearchConfig

    assert SearchConfig(episodes=50).warmup_episodes() == 12
    assert SearchConfig().warmup_episodes() == 100
    assert SearchConfig(episodes=50).warmup_episodes(transfer=True) == 0


def test_damaged_state_and_bad_transfer_source_are_one_line(toy: Path, tmp_path: Path, search_cfg: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    inputs = SearchInputs(str(toy), flops_budget="50%")
    out = tmp_path / "r"
    run_search(inputs, search_cfg(episodes=3, warmup=1), out, progress=False, log=lambda m: None, stop_after=2)
    data = (out / "search_state.pt").read_bytes()
    (out / "search_state.pt").write_bytes(data[: len(data) // 2])  # truncated by a full disk, say
    with pytest.raises(UserError, match=r"search_state.pt is unreadable \(truncated or not a search state"):
        run_search(inputs, search_cfg(episodes=3, warmup=1), out, progress=False, log=lambda m: None)
    with pytest.raises(UserError, match=r"--transfer-from .* is unreadable"):
        run_search(SearchInputs(str(toy), flops_budget="50%", transfer_from=str(out)), search_cfg(episodes=3, warmup=1),
                   tmp_path / "t", progress=False, log=lambda m: None)
    assert not (tmp_path / "t").exists()


def test_a_second_writer_of_a_search_directory_is_refused_naming_the_holder(toy: Path, tmp_path: Path, search_cfg: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search
    from amc_mobile.storage import ExclusiveLock

    out = tmp_path / "busy"
    out.mkdir()
    code = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "f.write(str(__import__('os').getpid())); f.flush(); print('held', flush=True); time.sleep(60)")
    lock_path = ExclusiveLock(out / "search").path
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"in use by another process \(PID {holder.pid}\)"):
            run_search(SearchInputs(str(toy), flops_budget="50%"), search_cfg(), out, progress=False, log=lambda m: None)
    finally:
        holder.kill()
        holder.wait()


def test_final_candidates_are_measured_and_an_over_budget_pick_is_replaced_or_reported(
        toy: Path, tmp_path: Path, search_cfg: Any, macs_latency: Any) -> None:
    from amc_mobile.search.runner import SearchInputs, run_search

    logs: list[str] = []
    s = run_search(SearchInputs(str(toy), device="host-cpu", latency_budget="50%"),
                   search_cfg(episodes=4, warmup=2, top_k=3, measure=True), tmp_path / "m", progress=False,
                   log=logs.append, latency_predictor=macs_latency)
    assert s.final.measured_latency_ms is not None and s.teacher.measured_latency_ms is not None
    assert s.measured_vs_budget is not None and s.measured_speedup is not None
    measured = [c for c in s.top_k if c.measured_vs_budget is not None]
    if measured[0].measured_vs_budget > 1.05:  # the stand-in table does not predict this CPU: say so, in one line
        assert len(s.notes) == 1 and "\n" not in s.notes[0] and s.notes[0] in logs
        within = [c for c in measured if c.measured_vs_budget <= 1.05]
        assert (s.best_episode == within[0].episode) if within else "warning" in s.notes[0]
    else:  # within the budget: at most the note that the table over-predicts the pick on this CPU
        assert all("over-predicts" in n for n in s.notes) and s.best_episode == s.top_k[0].episode


class _OptimisticTable:
    """A latency table for the fake device (ms proportional to parameters x pixels, as the fake
    backend measures) that predicts every pruned model ``factor`` x too fast: uniform widths that meet
    the predicted budget measure over it."""

    def __init__(self, teacher_macs: int, factor: float) -> None:
        self.teacher_macs, self.factor = teacher_macs, factor

    def predict(self, desc: Any) -> float:
        from conftest import FakeBackend

        ms = FakeBackend.latency_ms(desc.params, desc.input_size ** 2)
        return ms * (self.factor if desc.macs < self.teacher_macs else 1.0)


def _fake_device_and_table(toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           factor: float) -> _OptimisticTable:
    """Device 'fake' (the MAC-proportional fake backend) and a table predicting pruned models ``factor``x."""
    from amc_mobile.models import describe_model
    from amc_mobile.models.checkpoint import load_checkpoint

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "fake.yaml").write_text("name: fake\nbackend: fake-test\nruns: 2\nrepeats: 2\nwarmup_runs: 0\n"
                                        "min_window_ms: 0\ncalibrate_overhead: false\n")
    monkeypatch.setenv("AMC_DEVICE_PROFILES", str(profiles))
    teacher, _ = load_checkpoint(toy)
    return _OptimisticTable(describe_model(teacher, 12).macs, factor)


def test_uniform_falls_back_to_the_widest_width_within_the_measured_budget(
        toy: Path, tmp_path: Path, search_cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every method's final model obeys the measured budget: uniform evaluates fall-back widths under
    tighter latency budgets and takes the widest one that measures within 1.05x."""
    from amc_mobile.search.runner import SearchInputs, run_search

    table = _fake_device_and_table(toy, tmp_path, monkeypatch, 0.88)
    logs: list[str] = []
    s = run_search(SearchInputs(str(toy), device="fake", latency_budget="50%", method="uniform"),
                   search_cfg(measure=True, correct_budget_at=0), tmp_path / "u", progress=False, log=logs.append,
                   latency_predictor=table)
    assert s.budget_correction == {"applied": False, "reason": "open-loop: --correct-budget-at 0"}
    rows = pd.read_csv(tmp_path / "u" / "episodes.csv")
    assert len(rows) >= 3 and rows["source"].iloc[0] == "uniform"  # the widest, then its fall-backs
    widths = [sum(int(c) for c in k.split()) for k in rows["keep_channels"]]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == len(widths)
    by_episode = {c.episode: c for c in s.top_k}
    assert by_episode[0].measured_vs_budget is not None and by_episode[0].measured_vs_budget > 1.05
    within = [c for c in sorted(s.top_k, key=lambda c: c.episode)
              if c.measured_vs_budget is not None and c.measured_vs_budget <= 1.05]
    assert within and s.best_episode == within[0].episode  # the widest that measures within the budget
    assert s.uniform_keep_ratio == pytest.approx(float(rows["agent_actions"].iloc[s.best_episode].split()[0]), abs=1e-3)
    assert len(s.notes) == 1 and f"taking episode {s.best_episode} instead" in s.notes[0] and s.notes[0] in logs


def test_a_pick_the_table_over_predicts_is_reported_with_the_command_that_fixes_it(
        toy: Path, tmp_path: Path, search_cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Open-loop, a table that predicts pruned models 1.3x too slow leaves a quarter of the budget unused:
    the search keeps its pick (it meets the budget) and says so in one line, naming the re-profiling command."""
    from amc_mobile.search.runner import SearchInputs, run_search

    table = _fake_device_and_table(toy, tmp_path, monkeypatch, 1.3)
    logs: list[str] = []
    s = run_search(SearchInputs(str(toy), device="fake", latency_budget="50%"),
                   search_cfg(episodes=4, warmup=2, top_k=2, measure=True, correct_budget_at=0), tmp_path / "p",
                   progress=False, log=logs.append, latency_predictor=table)
    assert s.measured_vs_budget is not None and s.measured_vs_budget < 0.9
    assert s.best_episode == s.top_k[0].episode  # within the budget: the pick stays
    assert len(s.notes) == 1 and "\n" not in s.notes[0] and s.notes[0] in logs
    assert "over-predicts" in s.notes[0] and "0.769x its predicted latency" in s.notes[0]
    assert f"amc-bench profile --device fake --checkpoint {toy} --reprofile" in s.notes[0]
    budget = next(b["value"] for b in s.budgets if b["kind"] == "latency")
    assert f"--latency-budget {budget / 0.769:.3g}" in s.notes[0]  # the budget that spends it


def test_closed_loop_spends_the_budget_a_table_over_predicts(
        trained_toy: Path, tmp_path: Path, search_cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closed loop (``correct_budget_at=0.5``): half-way, the best candidates are measured (0.769x their predicted
    latency); the budget on the table's scale becomes budget / 0.769 for the second half, the baselines
    are seeded again there, and the final model measures closer to the user's budget than open-loop."""
    from amc_mobile.search.runner import SearchInputs, run_search

    table = _fake_device_and_table(trained_toy, tmp_path, monkeypatch, 1.3)
    logs: list[str] = []
    s = run_search(SearchInputs(str(trained_toy), device="fake", latency_budget="50%"),
                   search_cfg(episodes=6, warmup=2, top_k=3, measure=True, correct_budget_at=0.5), tmp_path / "c", progress=False,
                   log=logs.append, latency_predictor=table)
    c = s.budget_correction
    budget = next(b["value"] for b in s.budgets if b["kind"] == "latency")  # the user's, on the table's scale
    assert c is not None and c["applied"] and c["budget_ms_requested"] == pytest.approx(budget)
    first_step, second_step = c["steps"]  # the table's error is one factor here: the second step keeps the budget
    assert first_step["after_episode"] == 3 and len(first_step["candidates"]) == 3
    assert first_step["share"] == pytest.approx(1 / 1.3, rel=1e-3)
    assert first_step["budget_ms_before"] == pytest.approx(budget)
    assert first_step["budget_ms_after"] == pytest.approx(budget * 1.3, rel=1e-3)
    assert not second_step["applied"] and second_step["measured_at_budget_ms"] == pytest.approx(budget, rel=1e-3)
    assert c["budget_ms_in_force"] == pytest.approx(budget * 1.3, rel=1e-3)
    assert any(line.startswith("closed loop: the best candidates measured 0.769x") for line in logs)
    rows = pd.read_csv(tmp_path / "c" / "episodes.csv")
    first, second = rows.iloc[:3], rows.iloc[3:]
    assert (first["latency_ms"] <= budget * (1 + 1e-9)).all()
    assert (second["latency_ms"] <= c["budget_ms_in_force"] * (1 + 1e-9)).all()
    assert second["source"].iloc[0] == "uniform (corrected budget)" and second["latency_ms"].iloc[0] > budget
    # candidates the open-loop wall forbade compete in the final selection; the pick obeys the MEASURED budget
    predicted = dict(zip(rows["episode"], rows["latency_ms"], strict=True))
    assert any(t.episode >= 3 and predicted[t.episode] > budget * 1.2 for t in s.top_k)
    assert s.measured_vs_budget is not None and s.measured_vs_budget <= 1.05
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["budget_correction"]["applied"] is True
    assert (tmp_path / "c" / "search.png").stat().st_size > 0  # the plot draws the corrected budget too
    assert not any("could not draw the plot" in line for line in logs)


def test_closed_loop_narrows_the_budget_a_table_under_predicts_and_resumes_without_remeasuring(
        toy: Path, tmp_path: Path, search_cfg: Any, monkeypatch: pytest.MonkeyPatch, fake_backend: Any) -> None:
    """Uniform width, a table predicting pruned models 0.88x: the widest width measures over the budget, so
    the correction lowers the table-scale budget and the widest width under it is the final model (no
    fall-back needed). A search killed after the correction resumes with the saved one: nothing is
    measured twice."""
    from amc_mobile.search.runner import SearchInputs, run_search

    table = _fake_device_and_table(toy, tmp_path, monkeypatch, 0.88)
    inputs = SearchInputs(str(toy), device="fake", latency_budget="50%", method="uniform")
    s = run_search(inputs, search_cfg(measure=True, correct_budget_at=0.5), tmp_path / "u", progress=False, log=lambda m: None,
                   latency_predictor=table)
    c = s.budget_correction
    assert c is not None and c["applied"] and c["steps"][0]["share"] == pytest.approx(1 / 0.88, rel=1e-3)
    rows = pd.read_csv(tmp_path / "u" / "episodes.csv")
    after = c["budget_ms_in_force"]
    assert after == pytest.approx(c["budget_ms_requested"] * 0.88, rel=1e-3)
    assert rows["source"].str.endswith("corrected budget)").any()
    within = rows[rows["latency_ms"] <= after * (1 + 1e-9)]
    widest = within.loc[within["keep_channels"].map(lambda k: sum(int(v) for v in k.split())).idxmax()]
    assert s.best_episode == int(widest["episode"])  # the widest uniform width under the corrected budget
    assert s.measured_vs_budget is not None and 0.9 < s.measured_vs_budget <= 1.05 and not s.notes  # no fall-back

    fake_backend.order.clear()  # AMC: stop right after the correction, then resume: the correction is reused, not re-measured
    out = tmp_path / "a"
    cfg = search_cfg(episodes=6, warmup=2, top_k=2, measure=True, correct_budget_at=0.5)
    run_search(SearchInputs(str(toy), device="fake", latency_budget="50%"), cfg, out, progress=False,
               log=lambda m: None, latency_predictor=table, stop_after=4)
    assert fake_backend.order  # the correction measured
    logs: list[str] = []
    s = run_search(SearchInputs(str(toy), device="fake", latency_budget="50%"), cfg, out, resume=True,
                   progress=False, log=logs.append, latency_predictor=table)
    assert not any(line.startswith("closed loop") for line in logs)
    assert s.budget_correction is not None and s.budget_correction["applied"]
    assert [st["after_episode"] for st in s.budget_correction["steps"]] == [3, 4]
    assert list(pd.read_csv(out / "episodes.csv")["episode"]) == list(range(6))


class _WidthDependentTable(_OptimisticTable):
    """Predicts narrow pruned models 1.3x too slow and wider ones less so (monotone, error shrinking with
    width above ``knee_ms``), as a table's error changed with width on an AVX-512 CPU."""

    def __init__(self, teacher_macs: int, knee_ms: float) -> None:
        super().__init__(teacher_macs, 1.3)
        self.knee_ms = knee_ms

    def predict(self, desc: Any) -> float:
        from conftest import FakeBackend

        ms = FakeBackend.latency_ms(desc.params, desc.input_size ** 2)
        if desc.macs >= self.teacher_macs:
            return ms
        return 1.3 * ms if ms <= self.knee_ms else 1.3 * self.knee_ms + 0.5 * (ms - self.knee_ms)


def test_closed_loop_takes_the_secant_when_the_tables_error_changes_with_width(
        toy: Path, tmp_path: Path, search_cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uniform width: the first step scales the budget by 1/0.769, but models that wide are predicted right
    and measure 1.3x the budget; the second step interpolates between the two measured points instead of
    scaling again, and the final model obeys the measured budget."""
    from amc_mobile.models import describe_model
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.search.runner import SearchInputs, run_search

    base = _fake_device_and_table(toy, tmp_path, monkeypatch, 1.3)
    teacher, _ = load_checkpoint(toy)
    from conftest import FakeBackend

    d = describe_model(teacher, 12)
    table = _WidthDependentTable(base.teacher_macs, 0.4 * FakeBackend.latency_ms(d.params, 144))
    s = run_search(SearchInputs(str(toy), device="fake", latency_budget="50%", method="uniform"),
                   search_cfg(measure=True, correct_budget_at=0.5), tmp_path / "w", progress=False, log=lambda m: None,
                   latency_predictor=table)
    c = s.budget_correction
    assert c is not None and len(c["steps"]) == 2
    first, second = c["steps"]
    budget = c["budget_ms_requested"]
    assert first["method"] == "scaled" and first["budget_ms_after"] == pytest.approx(budget * 1.3, rel=1e-3)
    assert second["measured_at_budget_ms"] > 1.05 * budget  # the wider width measures over the budget
    assert second["applied"] and second["method"] == "secant"
    assert budget < second["budget_ms_after"] < first["budget_ms_after"]
    assert s.measured_vs_budget is not None and s.measured_vs_budget <= 1.05


def _session_counting() -> Any:
    """A fresh fake-backend class that numbers its instances (one per measurement session) in
    ``self.session``, from 1; ``sessions`` on the class is how many there were."""
    from conftest import FakeBackend

    class SessionCounting(FakeBackend):
        sessions = 0

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            SessionCounting.sessions += 1
            self.session = SessionCounting.sessions

    return SessionCounting


def test_closed_loop_keeps_the_budget_when_its_two_rounds_disagree(
        toy: Path, tmp_path: Path, search_cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A device whose pruned models run 1.3x slower in every other session (a noisy shared machine): the two
    rounds of the first step disagree, so the loop does not steer by them and says why in one line."""
    from amc_mobile.latency.base import register_backend
    from amc_mobile.search.runner import SearchInputs, run_search

    @register_backend("fake-noisy-test")
    class NoisyBackend(_session_counting()):

        def run(self, artifact: str | Path, warmup_runs: int, runs: int) -> str:
            from amc_mobile.latency.base import format_samples

            ms = float(Path(artifact).read_text())
            # every other session, the candidates (not teacher or reference) run slower
            slow = self.session % 2 == 0 and Path(artifact).stem.startswith("c")
            return format_samples([ms * (1.3 if slow else 1.0)] * runs)

    table = _fake_device_and_table(toy, tmp_path, monkeypatch, 1.3)
    (tmp_path / "profiles" / "fake.yaml").write_text(
        (tmp_path / "profiles" / "fake.yaml").read_text().replace("fake-test", "fake-noisy-test"))
    logs: list[str] = []
    s = run_search(SearchInputs(str(toy), device="fake", latency_budget="50%"),
                   search_cfg(episodes=4, warmup=2, top_k=2, measure=True, correct_budget_at=0.5), tmp_path / "n", progress=False,
                   log=logs.append, latency_predictor=table)
    c = s.budget_correction
    assert c is not None and not c["applied"] and len(c["steps"]) == 1
    step = c["steps"][0]
    assert step["round_shares"][1] == pytest.approx(1.3 * step["round_shares"][0], rel=1e-3)
    assert "too noisy right now to steer by; budget kept" in step["reason"]
    assert sum("too noisy" in line for line in logs) == 1


def test_a_pick_over_budget_in_one_disturbed_session_is_measured_again_and_kept(
        toy: Path, tmp_path: Path, search_cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first measurement session runs the candidates slower (a neighbour's burst on a shared machine):
    the pick measures 1.08x its budget there. It is measured again next to the other top-k and judged on
    the mean of its two sessions, so one disturbed session does not cost the user the pick."""
    from amc_mobile.latency.base import register_backend
    from amc_mobile.search.runner import SearchInputs, run_search

    @register_backend("fake-burst-test")
    class BurstBackend(_session_counting()):

        def run(self, artifact: str | Path, warmup_runs: int, runs: int) -> str:
            from amc_mobile.latency.base import format_samples

            art = Path(artifact)
            ms = float(art.read_text())
            if self.session == 1 and art.stem.startswith("top"):  # 1.08x the budget (50% of the teacher)
                ms = 1.08 * 0.5 * float((art.parent / f"teacher{art.suffix}").read_text())
            return format_samples([ms] * runs)

    table = _fake_device_and_table(toy, tmp_path, monkeypatch, 1.0)
    (tmp_path / "profiles" / "fake.yaml").write_text(
        (tmp_path / "profiles" / "fake.yaml").read_text().replace("fake-test", "fake-burst-test"))
    logs: list[str] = []
    s = run_search(SearchInputs(str(toy), device="fake", latency_budget="50%"),
                   search_cfg(episodes=4, warmup=2, top_k=3, measure=True, correct_budget_at=0), tmp_path / "b",
                   progress=False, log=logs.append, latency_predictor=table)
    pick = s.top_k[0]
    assert BurstBackend.sessions == 2 and s.best_episode == pick.episode
    assert pick.measured_sessions[0] == pytest.approx(1.08, rel=1e-3) and pick.measured_sessions[1] <= 1.0 + 1e-6
    assert s.measured_vs_budget == pytest.approx(sum(pick.measured_sessions) / 2) and s.measured_vs_budget <= 1.05
    assert all(len(c.measured_sessions) == 1 for c in s.top_k[1:])  # the others: the second session only
    assert len(s.notes) == 1 and "kept" in s.notes[0] and "then" in s.notes[0] and s.notes[0] in logs


class _Step16Table(MacsLatency):
    """A latency table measured on a 16-channel grid (``amc-bench profile --granularity 16``)."""

    meta = {"granularity": 16}


def test_kept_channels_follow_the_latency_tables_channel_step(toy: Path, tmp_path: Path, search_cfg: Any) -> None:
    """CPUs with AVX-512 run 16-channel blocks: a table profiled on a 16-channel grid makes every method
    keep multiples of 16 (what the table measured), unless --multiple says otherwise."""
    from amc_mobile.search.runner import SearchInputs, run_search

    for method, multiple, step in (("amc", 0, 16), ("uniform", 0, 16), ("amc", 8, 8)):
        out = tmp_path / f"{method}{multiple}"
        s = run_search(SearchInputs(str(toy), latency_budget="50%", method=method), search_cfg(multiple=multiple),
                       out, progress=False, log=lambda m: None, latency_predictor=_Step16Table())
        assert s.config["multiple"] == step
        for keep in pd.read_csv(out / "episodes.csv")["keep_channels"]:
            # (a group narrower than the step keeps its width)
            assert all(int(c) % step == 0 or int(c) < step for c in keep.split()), (method, keep)
    assert any(int(c) % 16 for s in [tmp_path / "amc8"] for k in pd.read_csv(s / "episodes.csv")["keep_channels"]
               for c in k.split())  # with --multiple 8 the search does use the 8-channel steps
