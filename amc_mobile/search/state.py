"""Resume and transfer state of a search (``search_state.pt``).

The state holds everything needed to continue a killed search exactly where it stopped: the settings
fingerprint, the agent (networks, optimisers, replay buffer, baseline, generators), every episode row
and the top-k re-scoring done so far. It is rewritten atomically (amc_mobile.storage) after every
episode and every re-scored candidate, so a kill loses nothing. A truncated or foreign file is one
line, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from amc_mobile.errors import UserError
from amc_mobile.search.config import SearchConfig, SearchInputs, fingerprint, settings_from_fingerprint
from amc_mobile.search.ddpg import DDPGAgent
from amc_mobile.search.env import N_STATE_FEATURES
from amc_mobile.storage import atomic_torch_save

STATE_SCHEMA = 2
STATE_FILE = "search_state.pt"
_REQUIRED = ("schema_version", "fingerprint", "rows")


def state_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / STATE_FILE


def read_state(path: Path, what: str = "search state") -> dict[str, Any]:
    """The saved state at ``path``; unreadable, truncated, foreign or old files are one line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise UserError(f"{what} {path} is unreadable (truncated or not a search state: {type(exc).__name__}); "
                        "delete it to start over, or choose another directory") from None
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED):
        raise UserError(f"{what} {path} is not a search state written by amc-mobile; delete it to start over, "
                        "or choose another directory")
    if state.get("schema_version") != STATE_SCHEMA:
        raise UserError(f"{what} {path} has schema {state.get('schema_version')}; this amc-mobile reads "
                        f"{STATE_SCHEMA} (start a new search in another directory)")
    return state


def check_same_settings(state: dict[str, Any], inputs: SearchInputs, cfg: SearchConfig, out: Path) -> None:
    """Re-running the same command continues it; other settings are refused in one line."""
    saved = state["fingerprint"]
    now = fingerprint(inputs, cfg)
    diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diff:
        raise UserError(f"{out} already holds a search with other settings ({', '.join(diff)}); continue it "
                        f"with 'amc-mobile search --resume {out}' or choose another --out")


def save_state(path: Path, inputs: SearchInputs, cfg: SearchConfig, rows: list[dict[str, Any]], wall_s: float,
               agent: DDPGAgent | None, signature: dict[str, Any] | None,
               selection: dict[str, Any] | None = None, correction: list[dict[str, Any]] | None = None) -> None:
    atomic_torch_save(path, {
        "schema_version": STATE_SCHEMA, "fingerprint": fingerprint(inputs, cfg), "rows": rows, "wall_s": wall_s,
        "episodes": cfg.episodes, "measure": cfg.measure, "signature": signature,
        "agent": agent.state_dict() if agent is not None else None, "selection": selection or {},
        "correction": correction or []})  # the closed loop's steps (amc_mobile.search.correction)


def load_saved_settings(out_dir: str | Path) -> tuple[SearchInputs, SearchConfig]:
    """The inputs and config a search in ``out_dir`` was started with (for ``--resume DIR`` alone)."""
    path = state_path(out_dir)
    if not path.exists():
        raise UserError(f"nothing to resume: {path} does not exist")
    state = read_state(path)
    fp = {**state["fingerprint"], "episodes": state.get("episodes", 400), "measure": state.get("measure", True)}
    return settings_from_fingerprint(fp)


def agent_signature(model_name: str, group_names: list[str]) -> dict[str, Any]:
    """What an agent is tied to: the model, its channel groups and the state size."""
    return {"model": model_name, "n_groups": len(group_names), "n_states": N_STATE_FEATURES,
            "group_names": list(group_names)}


def load_transferred_agent(agent: DDPGAgent, source_dir: str | Path, signature: dict[str, Any]) -> None:
    """DDC policy transfer: start ``agent`` from the actor, critic and their targets of the search in
    ``source_dir``. Its replay buffer, reward baseline and optimiser moments are NOT copied: they hold
    rewards of the source's data (another class set, another accuracy scale), which would bias the
    critic and the baseline of the new search; the new search fills its own buffer from episode 0."""
    path = state_path(source_dir)
    if not path.exists():
        raise UserError(f"--transfer-from {source_dir}: no {STATE_FILE} there (not a search directory)")
    state = read_state(path, what=f"--transfer-from {source_dir}: search state")
    saved = state.get("signature") or {}
    sd = state.get("agent")
    if not isinstance(sd, dict) or "actor" not in sd:
        raise UserError(f"--transfer-from {source_dir}: that search has no DDPG agent (method "
                        f"{state['fingerprint'].get('method')}); transfer needs an amc search")
    diff = [f"{k} {saved.get(k)} vs {signature[k]}" for k in ("model", "n_groups", "n_states")
            if saved.get(k) is not None and saved.get(k) != signature[k]]
    hidden = int(sd["config"].get("hidden", agent.cfg.hidden))
    if hidden != agent.cfg.hidden:
        diff.append(f"hidden {hidden} vs {agent.cfg.hidden}")
    if diff:
        raise UserError(f"--transfer-from {source_dir}: its search used another setup ({'; '.join(diff)}); "
                        "transfer needs the same model, channel groups and state size")
    try:
        for name in ("actor", "critic", "actor_target", "critic_target"):
            getattr(agent, name).load_state_dict(sd[name])
    except (KeyError, RuntimeError) as exc:
        raise UserError(f"--transfer-from {source_dir}: its agent does not fit this search "
                        f"({type(exc).__name__})") from None
