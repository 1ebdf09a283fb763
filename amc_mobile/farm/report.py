"""Farm reports: a Markdown table, schema-versioned JSON and a bar chart, each written atomically."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from amc_mobile.storage import atomic_write_bytes, atomic_write_text, figure_png

if TYPE_CHECKING:
    from amc_mobile.farm.run import DeviceResult
    from amc_mobile.farm.spec import FarmSpec

SCHEMA_VERSION = 1


def _fmt(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def markdown_table(results: list[DeviceResult], spec: FarmSpec, baseline: str, candidate: str) -> str:
    lines = [f"# Device farm '{spec.name}': {candidate} vs {baseline}", "",
             f"speedup = baseline ms / candidate ms (ABBA-interleaved windows, 95% CI); threshold {spec.threshold:g}",
             "", "| device | backend | baseline ms | candidate ms | speedup | 95% CI | spread | status |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for r in results:
        ci = f"[{_fmt(r.ci95_low, 3)}, {_fmt(r.ci95_high, 3)}]" if r.speedup is not None else "n/a"
        spread = f"±{_fmt(r.spread_pct, 1)}%" if r.spread_pct is not None else "n/a"
        status = r.status + (" (required)" if r.required else "")
        if r.reason:
            status += f": {r.reason[:160]}"
        lines.append(f"| {r.device} | {r.backend} | {_fmt(r.baseline_ms, 3)} | {_fmt(r.candidate_ms, 3)} | "
                     f"{_fmt(r.speedup, 3)} | {ci} | {spread} | {status.replace('|', '/')} |")
    failing = [r.device for r in results if r.fails_job]
    lines += ["", f"**result: {'FAIL (' + ', '.join(failing) + ')' if failing else 'PASS'}**", ""]
    return "\n".join(lines)


def report_json(results: list[DeviceResult], spec: FarmSpec, baseline: str, candidate: str) -> dict[str, object]:
    return {"schema_version": SCHEMA_VERSION, "farm": spec.name, "farm_file": spec.path,
            "baseline": baseline, "candidate": candidate, "threshold": spec.threshold,
            "rounds": spec.rounds, "passed": not any(r.fails_job for r in results),
            "devices": [asdict(r) for r in results]}


def write_report(results: list[DeviceResult], spec: FarmSpec, baseline: str, candidate: str,
                 out: Path) -> dict[str, Path]:
    """Write ``farm-report.md``, ``farm-report.json`` and ``farm-speedup.png`` into ``out``."""
    md = atomic_write_text(out / "farm-report.md", markdown_table(results, spec, baseline, candidate))
    js = atomic_write_text(out / "farm-report.json",
                           json.dumps(report_json(results, spec, baseline, candidate), indent=1, default=str))
    png = atomic_write_bytes(out / "farm-speedup.png", _plot_png(results, spec))
    return {"markdown": md, "json": js, "png": png}


def _plot_png(results: list[DeviceResult], spec: FarmSpec) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(results) + 2), 3.5))
    xs = list(range(len(results)))
    for x, r in zip(xs, results, strict=True):
        if r.speedup is None:
            ax.bar(x, 0.0, color="0.8")
            ax.text(x, 0.05, r.status, ha="center", va="bottom", rotation=90, fontsize=8)
            continue
        color = "tab:green" if r.status == "ok" else "tab:red"
        err = [[r.speedup - (r.ci95_low or r.speedup)], [(r.ci95_high or r.speedup) - r.speedup]]
        ax.bar(x, r.speedup, color=color, yerr=err, capsize=4)
    ax.axhline(spec.threshold, color="k", ls="--", lw=1, label=f"threshold {spec.threshold:g}")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_xticks(xs, [r.device for r in results], rotation=20, ha="right")
    ax.set_ylabel("speedup (baseline / candidate)")
    ax.set_title(f"farm '{spec.name}'")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return figure_png(fig, dpi=120)
