"""``amc-mobile search`` (latency-aware AMC, baselines) and ``amc-mobile finetune`` (KD)."""

from __future__ import annotations

import inspect
import shlex
import sys
from dataclasses import fields
from typing import Any, Optional, cast

import typer

from amc_mobile.cli.common import console
from amc_mobile.search.outputs import SearchSummary


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("finetune")(finetune)


def _command_line() -> str:
    return "amc-mobile " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _option_params() -> list[inspect.Parameter]:
    """One typer option per CLI field of SearchInputs and SearchConfig: flag, help and default come
    from the dataclass (the single source); every option defaults to None = "not given"."""
    from amc_mobile.search.config import SearchConfig, SearchInputs

    params = []
    for cls in (SearchInputs, SearchConfig):
        defaults = cls.__dataclass_fields__
        for f in fields(cls):
            if not f.metadata.get("cli", True):
                continue
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            default = defaults[f.name].default
            base = str(f.type).split("|")[0].split("[")[0].strip()  # "int | None" -> int
            kind: type = {"int": int, "float": float, "bool": bool, "tuple": tuple}.get(base, str)
            decls = [flag] + ([f.metadata["short"]] if f.metadata.get("short") else [])
            if kind is bool:
                decls = [f"{flag}/--no-{flag[2:]}"]
            if kind is tuple:  # DDC thresholds: "A,T,C"
                kind = str
                default = ",".join(f"{v:g}" for v in cast(tuple, default))
            shown = "" if default in (None, "") else f" [default: {default}]"
            params.append(inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],  # noqa: UP045 - typer reads it
                default=typer.Option(None, *decls, help=f"{f.metadata['help']}{shown}", show_default=False)))
    from amc_mobile.search.ddc.search import CLI_OPTIONS as DDC_OPTIONS  # DDC-only options (H6)

    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],  # noqa: UP045
                                 default=typer.Option(None, "--" + name.replace("_", "-"), help=text,
                                                      show_default=False))
               for name, (kind, text) in DDC_OPTIONS.items()]
    params += [
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],  # noqa: UP045
                          default=typer.Option(None, "--out", "-o", help="Output directory (required unless --resume).")),
        inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],  # noqa: UP045
                          default=typer.Option(None, "--resume", help="Continue the interrupted search in this "
                                               "directory (only --episodes and --measure may change).")),
        inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")),
        inspect.Parameter("workers", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                          default=typer.Option(1, "--workers", help="Evaluate independent candidates (top-k "
                                               "re-scoring, greedy steps, DDC's students) on this many Ray "
                                               "workers; same seed, same result as 1 (serial).")),
        inspect.Parameter("ray", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],  # noqa: UP045
                          default=typer.Option(None, "--ray", help="HEAD:PORT of a Ray cluster for --workers "
                                               "(default with --workers > 1: 'local', an embedded Ray here).")),
    ]
    return params


def _parse_thresholds(text: str) -> tuple[float, ...]:
    from amc_mobile.errors import UserError

    try:
        th = tuple(float(v) for v in text.split(","))
    except ValueError:
        th = ()
    if len(th) != 3:
        raise UserError(f"--ddc-thresholds {text}: expected three numbers A,T,C like 0.9,0.3,0.6")
    return th


def search(**options: Any) -> None:
    """Search per-group keep ratios under latency / MACs / params budgets (AMC, DDPG; greedy; uniform)."""
    from amc_mobile.errors import UserError
    from amc_mobile.search.config import RESUMABLE, SearchConfig, SearchInputs
    from amc_mobile.search.runner import run_search
    from amc_mobile.search.state import load_saved_settings

    out, resume, progress = options.pop("out"), options.pop("resume"), options.pop("progress")
    workers, ray = options.pop("workers"), options.pop("ray")
    given = {k: v for k, v in options.items() if v is not None}
    from amc_mobile.distributed.pool import ray_pool, serial_map
    from amc_mobile.search.ddc.search import is_ddc_dir

    if given.get("method") in ("ddc", "ddc+amc") or (resume and is_ddc_dir(resume)):
        with ray_pool(workers, ray or "local") as map_fn:
            return _search_ddc(given, out, resume, map_fn)
    from amc_mobile.search.ddc.search import CLI_OPTIONS as DDC_OPTIONS

    ddc_only = [k for k in given if k in DDC_OPTIONS]
    if ddc_only:
        raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in ddc_only)}: only for --method ddc|ddc+amc")
    if given.get("ddc_thresholds") is not None:
        given["ddc_thresholds"] = _parse_thresholds(given["ddc_thresholds"])
    names_in = {f.name for f in fields(SearchInputs)}
    if resume:
        inputs, cfg = load_saved_settings(resume)
        other = sorted(set(given) - set(RESUMABLE))
        if other:
            raise UserError(f"--resume continues a search with its saved settings; only --episodes and --measure "
                            f"may change (got {', '.join('--' + k.replace('_', '-') for k in other)})")
        for k in RESUMABLE:
            if k in given:
                setattr(cfg, k, given[k])
        out_dir = resume
    else:
        if not given.get("checkpoint") or out is None:
            raise UserError("give --checkpoint FILE|zoo:NAME and --out DIR (or --resume DIR)")
        inputs = SearchInputs(**{k: v for k, v in given.items() if k in names_in})
        cfg = SearchConfig(**{k: v for k, v in given.items() if k not in names_in})
        out_dir = out
    with ray_pool(workers, ray or "local") as map_fn:
        summary = run_search(inputs, cfg, out_dir, resume=bool(resume), progress=progress,
                             log=lambda m: console.print(m, markup=False, highlight=False), command=_command_line(),
                             map_fn=None if map_fn is serial_map else map_fn)
    assert isinstance(summary, SearchSummary)
    f, t = summary.final, summary.teacher
    line = (f"final (episode {summary.best_episode}): val top-1 {f.val_top1:.2f}% (teacher {t.val_top1:.2f}%), "
            f"second slice {f.select_top1:.2f}%, {f.macs / 1e6:.2f}M MACs, {f.params / 1e6:.3f}M params")
    if f.predicted_latency_ms is not None and t.predicted_latency_ms is not None:
        line += f", predicted {f.predicted_latency_ms:.3f} ms (teacher {t.predicted_latency_ms:.3f} ms)"
    if f.measured_latency_ms is not None and t.measured_latency_ms is not None:
        line += (f", measured {f.measured_latency_ms:.3f} ms vs teacher {t.measured_latency_ms:.3f} ms "
                 f"({summary.measured_speedup:.2f}x)")
    console.print(line, markup=False, highlight=False)
    console.print(f"outputs in {out_dir}: policy.json, pruned.pt, episodes.csv, summary.json, search.png",
                  markup=False, highlight=False)


def _search_ddc(given: dict[str, Any], out: str | None, resume: str | None, map_fn: Any = None) -> None:
    """``--method ddc|ddc+amc``: DDC's Bi-LSTM REINFORCE block removal (amc_mobile.search.ddc)."""
    from amc_mobile.errors import UserError
    from amc_mobile.search.ddc.search import ddc_settings, load_ddc_settings, run_ddc_search

    if given.get("ddc_thresholds") is not None:
        given["ddc_thresholds"] = _parse_thresholds(given["ddc_thresholds"])
    if resume:
        inputs, cfg = load_ddc_settings(resume)
        other = sorted(set(given) - {"episodes", "measure"})
        if other:
            raise UserError(f"--resume continues a DDC search with its saved settings; only --episodes and --measure "
                            f"may change (got {', '.join('--' + k.replace('_', '-') for k in other)})")
        for k in ("episodes", "measure"):
            if k in given:
                setattr(cfg, k, given[k])
        out = resume
    elif not given.get("checkpoint") or out is None:
        raise UserError("give --checkpoint FILE|zoo:NAME and --out DIR (or --resume DIR)")
    else:
        inputs, cfg = ddc_settings(given)
    s = run_ddc_search(inputs, cfg, out, resume=bool(resume), command=_command_line(), map_fn=map_fn,
                       log=lambda m: console.print(m, markup=False, highlight=False))
    st, t = s["student"], s["teacher"]
    line = (f"{inputs.method}: removed {', '.join(st['removed']) or 'nothing'}; val top-1 {st['val_top1']:.2f}% after "
            f"the short KD pass (teacher {t['val_top1']:.2f}%), params {st['params'] / 1e6:.3f}M "
            f"({100 * s['params_ratio']:.1f}% of the teacher)")
    if st["predicted_latency_ms"] is not None:
        line += f", predicted {st['predicted_latency_ms']:.3f} ms (teacher {t['predicted_latency_ms']:.3f} ms)"
    if st["measured_latency_ms"] is not None:
        line += f", measured {st['measured_latency_ms']:.3f} ms (teacher {t['measured_latency_ms']:.3f} ms)"
    console.print(line, markup=False, highlight=False)
    if s.get("amc") and not s["amc"].get("skipped"):
        f = s["amc"].get("final") or {}
        text = f"channel stage (AMC): final model {s['amc']['final_checkpoint']}"
        if f.get("val_top1") is not None:
            text += (f": val top-1 {f['val_top1']:.2f}% before fine-tuning, params {f['params'] / 1e6:.3f}M, "
                     f"predicted {f['predicted_latency_ms']:.3f} ms (budget {s['amc']['budget_ms']:.3f} ms)")
        if f.get("measured_latency_ms") is not None:
            text += f", measured {f['measured_latency_ms']:.3f} ms"
        console.print(text, markup=False, highlight=False)
    console.print(f"outputs in {out}: student.pt, samples.csv, iterations.csv, summary.json, ddc.png",
                  markup=False, highlight=False)


search.__signature__ = inspect.Signature(_option_params())  # type: ignore[attr-defined]
search.__annotations__ = {p.name: p.annotation for p in inspect.signature(search).parameters.values()}


def _finetune_params() -> list[inspect.Parameter]:
    """Options of ``finetune``: the run's own, then FinetuneConfig's fields (their help and defaults)."""
    from amc_mobile.distill import FinetuneConfig
    from amc_mobile.options import cli_parameters

    def option(name: str, kind: Any, default: Any, *decls: str, help: str) -> inspect.Parameter:  # noqa: A002
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                 default=typer.Option(default, *decls, help=help))

    return [
        option("checkpoint", str, ..., "--checkpoint", "-c", help="Pruned student checkpoint (e.g. OUT/pruned.pt)."),
        option("teacher", str, ..., "--teacher", "-t", help="Teacher checkpoint file or zoo:NAME."),
        option("out", str, ..., "--out", "-o", help="Output directory (last.pt, final.pt, metrics.json)."),
        *cli_parameters(FinetuneConfig),
        option("data_dir", Optional[str], None, "--data-dir", help="Directory holding the data set."),  # noqa: UP045
        option("test", bool, False, "--test", help="Also report accuracy on the test split."),
        option("resume", bool, False, "--resume",
               help="Continue the run in --out after its last finished epoch (same student, teacher, data and "
                    "settings). Without it an existing run in --out is refused."),
        option("classes", Optional[str], None, "--classes",  # noqa: UP045
               help="Class subset (as in 'amc-mobile search --classes'): the teacher's logits are cut to these "
                    "classes [default: the student's recorded classes when they are a subset of the teacher's]."),
        option("progress", bool, True, "--progress/--no-progress", help="Show a progress bar."),
    ]


def finetune(**options: Any) -> None:
    """Fine-tune a pruned model with knowledge distillation from its teacher (DDC)."""
    from amc_mobile.distill import FinetuneConfig, finetune_checkpoint
    from amc_mobile.options import config_from_options

    run = {k: options.pop(k) for k in ("checkpoint", "teacher", "out", "data_dir", "test", "resume", "classes",
                                       "progress")}
    cfg = config_from_options(FinetuneConfig, options)  # validated before anything is loaded
    metrics = finetune_checkpoint(run["checkpoint"], run["teacher"], run["out"], cfg, data_dir=run["data_dir"],
                                  classes=run["classes"], test=run["test"], resume=run["resume"],
                                  progress=run["progress"], command=_command_line(),
                                  log=lambda m: console.print(m, markup=False, highlight=False))
    console.print(f"fine-tuned model: {run['out']}/final.pt (val top-1 {metrics['final_val_top1']:.2f}%)",
                  markup=False, highlight=False)


finetune.__signature__ = inspect.Signature(_finetune_params())  # type: ignore[attr-defined]
