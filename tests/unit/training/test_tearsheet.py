"""training.tearsheet: every section, figures equal to training.performance's, readable PNGs, halts said plainly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from tests.kit.walkforward_dir import write_run
from training import performance as perf
from training.tearsheet import halts_statement, main, markdown_html, render_tearsheet

PNGS = ("equity", "drawdown", "monthly", "rolling_sharpe", "exposure", "symbol_pnl")


def _positions(out: Path) -> None:
    eq = pd.read_csv(out / "equity.csv")
    pd.DataFrame({"ts": eq.ts, "BTC/USDT": eq.equity * 0.2, "ETH/USDT": -eq.equity * 0.1}).to_csv(
        out / "positions.csv", index=False)


def test_the_page_has_every_section_and_the_performance_modules_figures(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", 0.0002, bars=24 * 120)
    _positions(out)
    (out / "gate.section.md").write_text("# Go-live gate\n\n| criterion | value |\n|---|---|\n| sharpe | 2.1 |\n")
    page = render_tearsheet(out, "1h", sections=[("Extra", "one **line**")]).read_text()
    for head in ("Figures (after fees unless named)", "Halts", "Per regime", "Monthly returns", "Trades",
                 "Go-live gate", "Extra"):
        assert f">{head}" in page
    assert "<td>sharpe</td><td>2.1</td>" in page
    eq = pd.read_csv(out / "equity.csv", parse_dates=["ts"]).set_index("ts")["equity"]
    m = perf.metrics(eq, "1h")
    row = re.search(r"<td>sharpe</td><td>([-\d.,]+)</td>", page.split("Figures (after fees unless named)")[1])
    assert row is not None and float(row.group(1)) == pytest.approx(m.sharpe, abs=0.006)
    assert f"{m.total_return:.2%}" in page
    assert page.count("data:image/png;base64,") == len(PNGS)
    for name in PNGS:
        img = mpimg.imread(out / f"{name}.png")
        assert img.shape[0] > 100 and img.shape[1] > 300


def test_fees_are_added_back_for_the_before_fee_curve(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", 0.0002, bars=24 * 60)
    page = render_tearsheet(out, "1h").read_text()
    fills = pd.read_csv(out / "fills.csv")
    eq = pd.read_csv(out / "equity.csv")
    before = (eq.equity.iloc[-1] + fills.fee.sum()) / eq.equity.iloc[0] - 1
    assert f"{before:.2%}" in page


def test_halts_are_said_plainly() -> None:
    assert halts_statement({"halts": []}) == "Trading was never halted."
    text = halts_statement({"halts": [
        {"ts": "2024-01-02", "rule": "max_drawdown:halt", "reason": "drawdown 15% reached the limit"},
        {"ts": "2024-01-03", "rule": "max_drawdown:probation", "reason": "cooldown over"}]})
    assert text.startswith("Trading was halted 1 time;") and "max_drawdown:halt: drawdown 15%" in text


def test_markdown_tables_become_html_tables() -> None:
    out = markdown_html("# T\n\n| a | b |\n|---|---|\n| 1 | <x> |\n\n- item")
    assert "<h2>T</h2>" in out and "<th>a</th>" in out and "<td>&lt;x&gt;</td>" in out and "<li>item</li>" in out


def test_the_cli_re_renders_and_refuses_an_empty_directory(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", 0.0001, bars=24 * 40)
    assert main([str(out)]) == 0 and (out / "tearsheet.html").is_file()
    assert main([str(tmp_path / "nothing")]) == 2
    assert json.loads((out / "summary.json").read_text())["timeframe"] == "1h"
