"""Batch mode for latency tables: many ``.tflite`` files measured in one on-device script.

The host pushes every pending model (hash-cached), then writes a flat ``sh`` script that, per item,
records the thermal status, runs ``benchmark_model`` with its output to ``<i>.txt`` and exit status
to ``<i>.rc`` (written last, so it marks the item finished), records the thermal status again and
sleeps ``cooldown_s``. The host pulls the result files and parses them. Items are processed in chunks;
between chunks the host waits for the phone to cool down. Resumable item by item: each finished row
is saved at once to the ``state_path`` JSON, a dropped connection loses only the unfinished items
(they are re-run), and rows measured while the phone was hot (thermal status above the limit before
or after the item) are discarded and measured again. An item whose ``benchmark_model`` was killed by a
signal (exit status >= 128, e.g. 139 = SIGSEGV) is run again like a dropped one. Batch folders and
models a killed run left on the phone are removed on the runner's first use
(:meth:`~android_harness.runner.BenchmarkRunner.clean_stale`).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from android_harness.facts import parse_thermal_status
from android_harness.parser import BenchmarkParseError, parse_benchmark_output
from android_harness.runner import BenchmarkRunner, crashed
from android_harness.transport import TRANSIENT_ERRORS, AdbError, quote

log = logging.getLogger(__name__)
STATE_SCHEMA = 1


@dataclass(frozen=True)
class BatchRow:
    key: str
    model: str
    output: str            # raw benchmark_model text (parse with parse_benchmark_output)
    thermal_before: int
    thermal_after: int
    attempts: int


class BatchState:
    """Finished rows on disk (JSON, schema-versioned), rewritten atomically after every row."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.rows: dict[str, BatchRow] = {}
        if self.path and self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                if data.get("schema_version") != STATE_SCHEMA:
                    raise AdbError(f"{self.path}: unknown batch state schema {data.get('schema_version')}")
                self.rows = {k: BatchRow(**v) for k, v in data["rows"].items()}
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                raise AdbError(f"{self.path}: corrupt batch state ({type(exc).__name__}); delete it to start "
                               f"the batch again") from None

    def add(self, row: BatchRow) -> None:
        self.rows[row.key] = row
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"schema_version": STATE_SCHEMA, "rows": {k: asdict(r) for k, r in self.rows.items()}},
                          indent=1)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def batch_script(items: Sequence[tuple[str, str]], out_dir: str, cooldown_s: float) -> str:
    """The on-device script; ``items`` = [(index, quoted benchmark command)]."""
    o = out_dir.rstrip("/")
    lines = ["# amc-mobile batch: one benchmark_model run per item, results in files"]
    for idx, cmd in items:
        def q(suffix: str, idx: str = idx) -> str:
            return quote(f"{o}/{idx}{suffix}")

        lines += [f"dumpsys thermalservice > {q('.before')} 2>&1",
                  f"{cmd} > {q('.txt')} 2>&1",
                  f"echo $? > {q('.rc')}",
                  f"dumpsys thermalservice > {q('.after')} 2>&1"]
        if cooldown_s > 0:
            lines.append(f"sleep {cooldown_s:g}")
    return "\n".join(lines) + "\n"


def run_batch(runner: BenchmarkRunner, items: Sequence[tuple[str, str | Path]], warmup_runs: int,
              num_runs: int | Sequence[int], state_path: str | Path | None = None, chunk_size: int = 8,
              max_attempts: int = 3, item_timeout_s: float | None = None,
              on_row: Callable[[BatchRow], None] | None = None) -> list[BatchRow]:
    """Measure ``items`` = [(key, local .tflite)] and return one row per item, in order."""
    runs = list(num_runs) if not isinstance(num_runs, int) else [num_runs] * len(items)
    if len(runs) != len(items):
        raise ValueError("num_runs must be one int or one per item")
    keys = [k for k, _ in items]
    if len(set(keys)) != len(keys):
        raise ValueError("batch item keys must be unique")
    state = BatchState(state_path)
    spec = {k: (Path(p), r) for (k, p), r in zip(items, runs, strict=True)}
    pending = [k for k in keys if k not in state.rows]
    if state.rows and pending != keys:
        log.info("resuming batch: %d of %d rows already measured", len(keys) - len(pending), len(keys))
    attempts = dict.fromkeys(pending, 0)
    remote = {k: runner.push_model(spec[k][0]) for k in pending}
    runner.drop_stale_models()
    cfg = runner.cfg
    t = runner.t
    per_item = item_timeout_s or cfg.run_timeout_s
    with tempfile.TemporaryDirectory(prefix="amc-batch-") as tmp_name:
        tmp = Path(tmp_name)
        while pending:
            runner.wait_until_cool()
            chunk = pending[:chunk_size]
            out_dir = posixpath.join(runner.batch_dir, uuid.uuid4().hex[:12])
            t.shell(f"mkdir -p {quote(out_dir)}").check("mkdir batch dir")
            cmds = [(str(i), runner.command(remote[k], warmup_runs, spec[k][1])) for i, k in enumerate(chunk)]
            script_local = tmp / "batch.sh"
            script_local.write_text(batch_script(cmds, out_dir, cfg.cooldown_s))
            script_remote = posixpath.join(out_dir, "batch.sh")
            t.push(script_local, script_remote)
            for k in chunk:
                attempts[k] += 1
            try:
                t.shell(f"sh {quote(script_remote)}", timeout_s=len(chunk) * (per_item + cfg.cooldown_s) + 30,
                        retry=False)  # silent until the whole chunk is done
            except TRANSIENT_ERRORS as exc:
                log.warning("batch script interrupted (%s); keeping finished items, re-running the rest", exc)
            names = set(t.listdir(out_dir))
            for i, k in enumerate(chunk):
                row = _collect(runner, tmp, out_dir, str(i), k, spec[k][0], names, attempts[k])
                if row is None:
                    if attempts[k] >= max_attempts:
                        t.shell(f"rm -r {quote(out_dir)}")
                        raise AdbError(f"batch item '{k}' ({spec[k][0].name}) failed {attempts[k]} times "
                                       f"(crashed, cut short or hot; see the warnings above); "
                                       f"{len(state.rows)} finished rows are saved"
                                       + (f" in {state.path}" if state.path else ""))
                    continue
                state.add(row)
                pending.remove(k)
                if on_row is not None:
                    on_row(row)
            t.shell(f"rm -r {quote(out_dir)}")
    return [state.rows[k] for k in keys]


def _collect(runner: BenchmarkRunner, tmp: Path, out_dir: str, idx: str, key: str, model: Path,
             names: set[str], attempt: int) -> BatchRow | None:
    """The finished row of item ``idx``, or None when it must be measured again."""
    if f"{idx}.rc" not in names:
        log.warning("batch item '%s' did not finish; will run it again", key)
        return None
    texts = {}
    for suffix in ("rc", "txt", "before", "after"):
        local = tmp / f"{idx}.{suffix}"
        if f"{idx}.{suffix}" in names:
            runner.t.pull(posixpath.join(out_dir, f"{idx}.{suffix}"), local)
            texts[suffix] = local.read_text(errors="replace")
        else:
            texts[suffix] = ""
    rc_text = texts["rc"].strip()
    if not rc_text.isdigit():
        log.warning("batch item '%s': unreadable exit status %r; will run it again", key, rc_text[:20])
        return None
    rc = int(rc_text)
    if crashed(rc):
        log.warning("batch item '%s' crashed (exit status %d); will run it again", key, rc)
        return None
    if rc != 0:
        tail = " | ".join(texts["txt"].strip().splitlines()[-3:])[:300]
        raise AdbError(f"benchmark_model failed on '{key}' ({model.name}), exit status {rc}: {tail}")
    try:
        parse_benchmark_output(texts["txt"])
    except BenchmarkParseError as exc:
        log.warning("batch item '%s': unusable output (%s); will run it again", key, exc)
        return None
    before, after = parse_thermal_status(texts["before"]), parse_thermal_status(texts["after"])
    if max(before, after) > runner.cfg.max_thermal_status:
        log.warning("batch item '%s' ran hot (thermal status %d -> %d); discarded, will run it again",
                    key, before, after)
        return None
    return BatchRow(key=key, model=str(model), output=texts["txt"], thermal_before=before,
                    thermal_after=after, attempts=attempt)
