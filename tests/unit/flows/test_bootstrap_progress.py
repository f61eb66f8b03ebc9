"""The first run shows a progress bar for each bootstrap step (flows/bootstrap.py, issue 18 item 6).

Before, a step printed one line when it started and one when it ended: a minute of
training showed nothing moving.  The bar is tqdm's, on a terminal only; a pipe or a log
file gets the two lines.
"""

from __future__ import annotations

import io
import re
import sys

import pytest

from flows import bootstrap

STEP = [sys.executable, "-c", "import time; time.sleep(1.5)"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_step_on_a_terminal_draws_a_bar_that_moves_and_ends_full(capsys) -> None:
    out = Terminal()
    bootstrap._run(STEP, {}, "train lstm", 3, expected_s=3.0, out=out)
    frames = out.getvalue().split("\r")
    assert all(f.strip().startswith("bootstrap 3/7: train lstm:") for f in frames if f.strip()), frames
    shown = [int(m.group(1)) for f in frames if (m := re.search(r":\s+(\d+)%\|", f))]
    assert len(shown) >= 3 and shown == sorted(shown), shown  # redrawn while the step runs, never backwards
    assert any(0 < x < 100 for x in shown) and shown[-1] == 100, shown
    assert "done in 2 s" in frames[-1] or "done in 1 s" in frames[-1], frames[-1]
    assert capsys.readouterr().out == ""  # no duplicate lines beside the bar


def test_without_a_terminal_a_step_prints_a_line_at_start_and_end(capsys) -> None:
    out = io.StringIO()
    bootstrap._run(STEP, {}, "train lstm", 3, expected_s=3.0, out=out)
    assert out.getvalue() == ""
    assert re.fullmatch(r"bootstrap: train lstm \.\.\.\nbootstrap: train lstm done in \d s\n", capsys.readouterr().out)


def test_a_failed_step_stops_the_bootstrap_with_its_output() -> None:
    with pytest.raises(SystemExit, match="bootstrap step failed.*\n.*boom"):
        bootstrap._run([sys.executable, "-c", "import sys; sys.exit('boom')"], {}, "train gnn", 4, 3.0,
                       out=Terminal())


def test_every_step_has_its_number_and_expected_duration() -> None:
    import inspect

    src = inspect.getsource(bootstrap.bootstrap)
    steps = re.findall(r'EXPECTED_S\["(\w+)"\]|EXPECTED_S\[fam\]', src)
    assert len(steps) + 2 == bootstrap.STEPS  # the loop's call covers three families
    assert set(bootstrap.EXPECTED_S) >= {"backfill", "lightgbm", "lstm", "gnn", "ensemble", "policy", "export"}
