"""DDC options of the search: class-subset compression (classifier cut to k rows) and policy transfer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from amc_mobile.errors import UserError

TOY = "toy-search"  # the data set of the shared ``toy`` fixture (conftest.py)


@pytest.mark.parametrize("name", ["mobilenet_v1_cifar", "mobilenet_v2_cifar"])
def test_restrict_classes_keeps_exactly_the_chosen_logits_and_reloads(name: str, tmp_path: Path) -> None:
    from amc_mobile.models import create_model
    from amc_mobile.models.checkpoint import load_checkpoint, save_checkpoint
    from amc_mobile.search.subset import restrict_classes

    torch.manual_seed(0)
    model = create_model(name, num_classes=6, in_chans=1, width_mult=0.25, input_size=12).eval()
    small = restrict_classes(model, [4, 0, 2]).eval()
    x = torch.randn(5, 1, 12, 12)
    with torch.no_grad():
        full, sub = model(x), small(x)
    assert sub.shape == (5, 3)
    torch.testing.assert_close(sub, full[:, [4, 0, 2]], rtol=1e-5, atol=1e-6)  # GEMM rounding differs by width
    assert small.arch_spec.num_classes == 3 and model.arch_spec.num_classes == 6  # original untouched
    reloaded, _ = load_checkpoint(save_checkpoint(tmp_path / "s.pt", small))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(x), sub)
    with pytest.raises(UserError, match="distinct"):
        restrict_classes(model, [1, 1])


def test_subset_search_records_the_classes_and_saves_a_k_output_model(toy: Path, tmp_path: Path, search_cfg: Any) -> None:
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.pruning import PruningPolicy
    from amc_mobile.search.runner import SearchInputs, run_search

    full = run_search(SearchInputs(str(toy), flops_budget="50%", method="uniform"), search_cfg(), tmp_path / "full",
                      progress=False, log=lambda m: None)
    out = tmp_path / "sub"
    sub = run_search(SearchInputs(str(toy), flops_budget="50%", classes="d,A"), search_cfg(episodes=3, warmup=2), out,
                     progress=False, log=lambda m: None)
    assert sub.classes == ["d", "a"] and sub.num_classes == 2 and sub.data["classes"] == ["d", "a"]
    assert json.loads((out / "summary.json").read_text())["classes"] == ["d", "a"]
    assert PruningPolicy.load(out / "policy.json").extra["classes"] == ["d", "a"]
    model, meta = load_checkpoint(out / "pruned.pt")
    assert model.arch_spec.num_classes == 2 and meta["data"]["classes"] == ["d", "a"]
    assert model(torch.zeros(1, 1, 12, 12)).shape == (1, 2)
    # the teacher's MACs shrink by exactly the two dropped classifier rows
    from amc_mobile.search.subset import final_linear_name

    teacher, _ = load_checkpoint(toy)
    fc = teacher.get_submodule(final_linear_name(teacher))
    assert full.teacher.macs - sub.teacher.macs == 2 * fc.in_features
    # scored on the subset's val images only (2 of 4 balanced classes)
    assert sub.teacher.val_images < full.teacher.val_images


def _source(toy: Path, out: Path, search_cfg: Any) -> Path:
    from amc_mobile.search.runner import SearchInputs, run_search

    run_search(SearchInputs(str(toy), flops_budget="50%"), search_cfg(episodes=3, warmup=1), out, progress=False,
               log=lambda m: None)
    return out


def test_transfer_loads_the_source_agent_and_runs_a_subset_search(toy: Path, tmp_path: Path, search_cfg: Any) -> None:
    from amc_mobile.search.ddpg import DDPGAgent
    from amc_mobile.search.env import N_STATE_FEATURES
    from amc_mobile.search.runner import SearchInputs, load_transferred_agent, run_search

    src = _source(toy, tmp_path / "src", search_cfg)
    saved = torch.load(src / "search_state.pt", map_location="cpu", weights_only=True)
    sig = saved["signature"]
    agent = DDPGAgent(N_STATE_FEATURES, sig["n_groups"], seed=123)
    load_transferred_agent(agent, src, sig)
    for name in ("actor", "critic", "actor_target", "critic_target"):
        for k, v in getattr(agent, name).state_dict().items():
            torch.testing.assert_close(v, saved["agent"][name][k], rtol=0, atol=0)
    assert agent.buffer.size == 0  # the source's rewards (other data) are not replayed

    out = tmp_path / "transfer"
    logs: list[str] = []
    summary = run_search(SearchInputs(str(toy), flops_budget="50%", classes="a,b", transfer_from=str(src)),
                         search_cfg(episodes=2, warmup=0, init_sigma=0.0, sigma_floor=0.0, seed_baselines=False), out,
                         progress=False, log=logs.append)
    assert summary.transfer_from == str(src) and summary.classes == ["a", "b"]
    assert any("transferred from" in m for m in logs)
    # with no noise, the first action is the SOURCE actor's action on the same first state
    first = float(pd.read_csv(out / "episodes.csv")["agent_actions"][0].split()[0])
    src_state = torch.load(out / "search_state.pt", map_location="cpu", weights_only=True)
    s0 = torch.from_numpy(src_state["agent"]["buffer"]["s"][0].numpy())
    agent0 = DDPGAgent(N_STATE_FEATURES, sig["n_groups"], seed=0)
    agent0.actor.load_state_dict(saved["agent"]["actor"])
    with torch.no_grad():
        assert first == pytest.approx(float(agent0.actor(s0[None])[0, 0]), abs=1e-4)


def test_transfer_refuses_another_model_in_one_line(toy: Path, tmp_path: Path, search_cfg: Any) -> None:
    from amc_mobile.data import get_dataset
    from amc_mobile.models import create_model
    from amc_mobile.models.checkpoint import save_checkpoint
    from amc_mobile.search.runner import SearchInputs, run_search

    src = _source(toy, tmp_path / "src", search_cfg)
    torch.manual_seed(0)
    other = create_model("mobilenet_v2_cifar", num_classes=4, in_chans=1, width_mult=0.25, input_size=12)
    other_ckpt = save_checkpoint(tmp_path / "v2.pt", other, data=get_dataset(TOY, split="val").data_info())
    with pytest.raises(UserError) as err:
        run_search(SearchInputs(str(other_ckpt), flops_budget="50%", transfer_from=str(src)),
                   search_cfg(episodes=2, warmup=0), tmp_path / "bad", progress=False, log=lambda m: None)
    msg = str(err.value)
    assert "\n" not in msg and "model mobilenet_v1_cifar vs mobilenet_v2_cifar" in msg
    with pytest.raises(UserError, match="no search_state.pt"):
        run_search(SearchInputs(str(toy), flops_budget="50%", transfer_from=str(tmp_path / "nowhere")),
                   search_cfg(episodes=2, warmup=0), tmp_path / "bad2", progress=False, log=lambda m: None)


def test_cli_subset_search_transfer_and_finetune_with_the_same_classes(toy: Path, tmp_path: Path, search_cfg: Any) -> None:
    from amc_mobile.cli.common import run_app
    from amc_mobile.cli.main import app
    from amc_mobile.models.checkpoint import load_checkpoint

    src = _source(toy, tmp_path / "src", search_cfg)
    out = tmp_path / "cli"
    common = ["--flops-budget", "50%", "--val-size", "100", "--no-progress", "--no-measure"]
    assert run_app(app, ["search", "--checkpoint", str(toy), "--classes", "c,b", "--transfer-from", str(src),
                         "--episodes", "2", "--out", str(out), *common]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["c", "b"] and summary["config"]["warmup"] == 0  # transfer: no random warm-up
    ft = ["finetune", "--checkpoint", str(out / "pruned.pt"), "--teacher", str(toy), "--epochs", "1",
          "--max-train-images", "64", "--batch-size", "32", "--no-progress"]
    assert run_app(app, [*ft, "--classes", "c,b", "--out", str(tmp_path / "ft")]) == 0
    model, meta = load_checkpoint(tmp_path / "ft" / "final.pt")
    assert model.arch_spec.num_classes == 2 and meta["data"]["classes"] == ["c", "b"]
    assert run_app(app, [*ft, "--out", str(tmp_path / "ft2")]) == 0  # classes inferred from the student
    assert run_app(app, [*ft, "--classes", "b,c", "--out", str(tmp_path / "ft3")]) == 2  # other order: refused
