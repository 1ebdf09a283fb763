"""The one progress display (amc_mobile.progress): a rich bar on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from amc_mobile.progress import ProgressBar, progress_bar


class _Log(io.StringIO):
    def isatty(self) -> bool:
        return False


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_with_count_rate_and_status() -> None:
    log = _Log()
    with progress_bar(total=4, desc="epoch 1/2", unit="step", interval_s=0.0, stream=log) as bar:
        for _ in range(4):
            bar.update(1)
            bar.set_status("loss 0.5")
    lines = log.getvalue().splitlines()
    assert len(lines) == 4  # one per update at interval 0, no duplicate final line
    assert lines[-1].startswith("epoch 1/2: 4/4 step (") and lines[-1].endswith("loss 0.5")
    assert "\x1b" not in log.getvalue()  # no terminal control codes in a log


def test_a_short_job_writes_nothing_to_a_log_and_disabled_writes_nothing() -> None:
    log = _Log()
    with progress_bar(total=3, desc="quick", interval_s=3600, stream=log) as bar:
        bar.update(3)
    assert log.getvalue() == ""
    off = _Log()
    bar = progress_bar(total=3, desc="off", enabled=False, interval_s=0.0, stream=off)
    bar.update(3)
    bar.close()
    assert off.getvalue() == "" and bar.n == 3


def test_a_terminal_gets_a_rich_bar_that_accepts_the_tqdm_calls() -> None:
    tty = _Tty()
    bar = ProgressBar(total=10, desc="search", unit="ep", initial=2, stream=tty)
    bar.update(3)
    bar.set_postfix(best="0.91")
    bar.set_postfix_str("best 0.92")
    bar.set_total(12)
    bar.close()
    bar.close()  # twice is harmless
    text = tty.getvalue()
    assert "search" in text and "5/12" in text and "best 0.92" in text


def test_unknown_total_and_resumed_start_are_reported() -> None:
    log = _Log()
    bar = progress_bar(total=None, desc="rows", unit="row", initial=5, interval_s=0.0, stream=log)
    bar.update(2)
    bar.close()
    assert log.getvalue().splitlines()[-1].startswith("rows: 7 row (")
