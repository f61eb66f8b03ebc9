"""Tearsheet: one HTML page and its PNGs for a backtest or walk-forward result.

Usage::

    python -m training.tearsheet OUT_DIR [--timeframe 1h] [--title TEXT]

It reads what ``training.backtest`` or ``training.walkforward`` wrote under ``OUT_DIR``
(``equity.csv``, ``fills.csv``, ``positions.csv``, ``summary.json``) and writes
``tearsheet.html`` (self-contained: the plots are embedded) with ``equity.png``
(the strategy after and before fees against buy-and-hold, volatility-targeted
buy-and-hold and cash), ``drawdown.png``, ``monthly.png`` (heatmap of monthly returns),
``rolling_sharpe.png`` (30 days), ``exposure.png`` and ``symbol_pnl.png``; and tables of
the figures (:mod:`training.performance`, after and before fees), the per-regime
breakdown (:func:`training.performance.regime_labels`: the run's recorded regime, else the
rules over the traded basket; point in time), monthly
returns, the round trips and a plain statement of every halt.  Other jobs append their
own sections: ``sections=[(title, markdown)]``, or ``*.section.md`` files in ``OUT_DIR``
(the go-live gate writes ``gate.section.md``, the walk-forward ``windows.section.md``).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training import performance as perf
from training.plots import _pyplot, _save

CURVES = ("strategy", "before fees", "buy and hold", "vol-targeted buy and hold", "cash")


def read_outputs(out: Path) -> tuple[pd.Series, pd.Series, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Return (equity, basket growth, fills with signed qty, position values, summary) of a result directory."""
    eq = pd.read_csv(out / "equity.csv", parse_dates=["ts"]).set_index("ts")
    fills = pd.read_csv(out / "fills.csv", parse_dates=["ts"])
    fills["qty"] = np.where(fills["side"] == "buy", fills["qty"], -fills["qty"])
    pos_path = out / "positions.csv"
    positions = pd.read_csv(pos_path, parse_dates=["ts"]).set_index("ts") if pos_path.is_file() else \
        pd.DataFrame(index=eq.index)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    return eq["equity"].astype(float), eq["buy_and_hold_growth"].astype(float), fills, positions, summary


def curves(equity: pd.Series, basket: pd.Series, fills: pd.DataFrame, timeframe: str, vol_target: float = 0.2
           ) -> dict[str, pd.Series]:
    """Return the equity curves compared: after fees, before fees, buy-and-hold, vol-targeted, cash."""
    e0 = float(equity.iloc[0])
    paid = fills.groupby("ts")["fee"].sum().astype(float).sort_index().cumsum()  # fees paid up to each fill time
    added = paid.reindex(equity.index, method="ffill").fillna(0.0) if len(paid) else pd.Series(0.0, index=equity.index)
    growth = basket / float(basket.iloc[0])
    bars = max(2, round(perf.bars_per_year(timeframe) / 365 * 30))
    return {"strategy": equity, "before fees": equity + added, "buy and hold": e0 * growth,
            "vol-targeted buy and hold": perf.vol_targeted(growth, timeframe, vol_target, bars, e0),
            "cash": pd.Series(e0, index=equity.index, dtype=float)}


def _png(path: Path) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" alt="{path.stem}">'


def plots(out: Path, cs: dict[str, pd.Series], positions: pd.DataFrame, trips: pd.DataFrame, timeframe: str
          ) -> list[Path]:
    """Write the tearsheet's PNGs; return their paths."""
    plt = _pyplot()
    paths = []
    fig, ax = plt.subplots(figsize=(9, 3.8), dpi=80)
    for name in CURVES:
        ax.plot(cs[name].index, cs[name] / cs[name].iloc[0], label=name, lw=1.4 if name == "strategy" else 1.0,
                ls="--" if name == "before fees" else "-")
    ax.set_ylabel("growth of 1")
    ax.set_title("Equity: the strategy after and before fees, against the benchmarks")
    ax.legend(loc="upper left", fontsize=8)
    _save(plt, fig, out / "equity.png")
    paths.append(out / "equity.png")
    fig, ax = plt.subplots(figsize=(9, 2.6), dpi=80)
    for name in ("strategy", "buy and hold", "vol-targeted buy and hold"):
        dd = perf.drawdown_of(cs[name])
        ax.fill_between(dd.index, dd * 100, 0, alpha=0.35 if name == "strategy" else 0.15, label=name)
    ax.set_ylabel("drawdown %")
    ax.set_title("Drawdown from the running peak")
    ax.legend(loc="lower left", fontsize=8)
    _save(plt, fig, out / "drawdown.png")
    paths.append(out / "drawdown.png")
    monthly = perf.monthly_returns(cs["strategy"])
    grid = pd.DataFrame({"year": monthly.index.year, "month": monthly.index.month, "r": monthly.to_numpy() * 100}
                        ).pivot(index="year", columns="month", values="r").reindex(columns=range(1, 13))
    fig, ax = plt.subplots(figsize=(9, max(2.0, 0.6 + 0.45 * len(grid))), dpi=80)
    lim = max(1.0, float(np.nanmax(np.abs(grid.to_numpy()))) if grid.size else 1.0)
    ax.imshow(grid.to_numpy(), cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(12), ["J", "F", "M", "A", "M", "J", "J", "A", "S", "O", "N", "D"])
    ax.set_yticks(range(len(grid)), [str(y) for y in grid.index])
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7)
    ax.set_title("Monthly returns of the strategy after fees, %")
    _save(plt, fig, out / "monthly.png")
    paths.append(out / "monthly.png")
    window = max(2, round(perf.bars_per_year(timeframe) / 365 * 30))
    fig, ax = plt.subplots(figsize=(9, 2.6), dpi=80)
    for name in ("strategy", "buy and hold"):
        r = perf.returns_of(cs[name])
        roll = r.rolling(window).mean() / r.rolling(window).std() * math.sqrt(perf.bars_per_year(timeframe))
        ax.plot(roll.index, roll, label=name, lw=1.0)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_title("Rolling 30-day Sharpe ratio (annualised)")
    ax.legend(loc="upper left", fontsize=8)
    _save(plt, fig, out / "rolling_sharpe.png")
    paths.append(out / "rolling_sharpe.png")
    fig, ax = plt.subplots(figsize=(9, 2.6), dpi=80)
    if positions.shape[1]:
        share = positions.div(cs["strategy"].reindex(positions.index), axis=0) * 100
        colors = [f"C{i}" for i in range(share.shape[1])]
        ax.stackplot(share.index, *[share[c].clip(lower=0) for c in share], labels=list(share.columns), alpha=0.7,
                     colors=colors)
        ax.stackplot(share.index, *[share[c].clip(upper=0) for c in share], alpha=0.7, colors=colors)
        ax.legend(loc="upper left", fontsize=7, ncol=5)
    ax.set_ylabel("% of equity")
    ax.set_title("Exposure per symbol (long above zero, short below)")
    _save(plt, fig, out / "exposure.png")
    paths.append(out / "exposure.png")
    fig, ax = plt.subplots(figsize=(9, 2.6), dpi=80)
    pnl = trips.groupby("symbol")["pnl"].sum() if len(trips) else pd.Series(dtype=float)
    ax.bar(pnl.index.astype(str), pnl.to_numpy(), color=["tab:green" if v > 0 else "tab:red" for v in pnl])
    ax.set_ylabel("P&L after fees")
    ax.set_title("P&L of the round trips per symbol")
    _save(plt, fig, out / "symbol_pnl.png")
    paths.append(out / "symbol_pnl.png")
    return paths


def halts_statement(summary: dict[str, Any]) -> str:
    """Return a plain sentence on every halt the risk engine reported (or that there was none)."""
    halts = summary.get("halts", [])
    stops = [h for h in halts if str(h.get("rule", "")).endswith(":halt")]
    if not halts:
        return "Trading was never halted."
    lines = [f"Trading was halted {len(stops)} time{'s' if len(stops) != 1 else ''}; every halt, probation and "
             "release in order:"]
    lines += [f"- {h['ts']}: {h['rule']}: {h['reason']}" for h in halts]
    return "\n".join(lines)


def markdown_html(text: str) -> str:
    """Render the Markdown the reports write (headings, pipe tables, bullets, paragraphs) as HTML."""
    out: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head, body = rows[0], [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            rows.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|"):
            rows.append([c.strip().replace("**", "").replace("`", "") for c in s.strip("|").split("|")])
            continue
        flush()
        if s.startswith("#"):
            level = min(len(s) - len(s.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{html.escape(s.lstrip('#').strip())}</h{level}>")
        elif s.startswith("- "):
            out.append(f"<li>{html.escape(s[2:])}</li>")
        elif s:
            out.append(f"<p>{html.escape(s.replace('**', '').replace('`', ''))}</p>")
    flush()
    return "\n".join(out)


def figures_table(cs: dict[str, pd.Series], fills: pd.DataFrame, positions: pd.DataFrame, timeframe: str) -> str:
    """Return the Markdown table of every curve's figures, with the strategy's trade and exposure figures."""
    rows = {name: perf.metrics(c, timeframe).as_dict() for name, c in cs.items()}
    strat = perf.summary(cs["strategy"], timeframe, fills, positions.reindex(cs["strategy"].index).fillna(0.0)
                         if positions.shape[1] else None)
    extra = {k: v for k, v in strat.items() if k not in rows["strategy"]}
    return perf.format_table(rows) + "\n\n" + perf.format_table({"strategy (after fees)": extra})


def regime_table(equity: pd.Series, labels: pd.Series, timeframe: str) -> str:
    """Return the per-regime Markdown table (labels: :func:`training.performance.regime_labels`)."""
    table = perf.by_group(equity, labels, timeframe)
    lines = ["| regime | bars | return | Sharpe |", "|---|---|---|---|"]
    lines += [f"| {k} | {r['bars']:.0f} | {r['return']:.2%} | {r['sharpe']:.2f} |" for k, r in table.iterrows()]
    return "\n".join(lines)


def trades_table(trips: pd.DataFrame, timeframe: str, limit: int = 200) -> str:
    """Return the round trips as a Markdown table (the last ``limit``)."""
    if trips.empty:
        return "No round trip was completed."
    t = trips.tail(limit)
    bar = pd.Timedelta(timeframe)
    lines = [f"{len(trips)} round trips (flat to flat, after fees); the last {len(t)}:", "",
             "| symbol | side | opened | closed | bars held | P&L | return on entry |", "|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        held = (pd.Timestamp(r.close_ts) - pd.Timestamp(r.open_ts)) / bar
        ret = r.pnl / r.notional if r.notional else float("nan")
        lines.append(f"| {r.symbol} | {'long' if r.side > 0 else 'short'} | {pd.Timestamp(r.open_ts):%Y-%m-%d %H:%M} | "
                     f"{pd.Timestamp(r.close_ts):%Y-%m-%d %H:%M} | {held:.0f} | {r.pnl:,.2f} | {ret:.2%} |")
    return "\n".join(lines)


def render_tearsheet(out: Path, timeframe: str | None = None, title: str | None = None,
                     sections: Sequence[tuple[str, str]] = ()) -> Path:
    """Write ``tearsheet.html`` and its PNGs under ``out`` (see the module docstring); return the page's path."""
    equity, basket, fills, positions, summary = read_outputs(out)
    tf = timeframe or str(summary.get("timeframe", "1h"))
    cs = curves(equity, basket, fills, tf)
    trips = perf.round_trips(fills) if len(fills) else pd.DataFrame(columns=["symbol", "pnl"])
    pngs = plots(out, cs, positions, trips, tf)
    monthly = pd.DataFrame({name: perf.monthly_returns(cs[name]) for name in ("strategy", "buy and hold")})
    month_md = "| month | strategy | buy and hold |\n|---|---|---|\n" + "\n".join(
        f"| {t:%Y-%m} | {r['strategy']:.2%} | {r['buy and hold']:.2%} |" for t, r in monthly.iterrows())
    parts: list[tuple[str, str]] = [
        ("Figures (after fees unless named)", figures_table(cs, fills, positions, tf)),
        ("Halts", halts_statement(summary)),
        ("Per regime (strategy after fees)", regime_table(equity, perf.regime_labels(
            pd.read_csv(out / "equity.csv", parse_dates=["ts"]).set_index("ts")), tf)),
        ("Monthly returns", month_md),
        ("Trades", trades_table(trips, tf)),
    ]
    extra = list(sections) + [(_title(p), p.read_text()) for p in sorted(out.glob("*.section.md"))]
    name = title or f"Tearsheet: {summary.get('start', equity.index[0])} .. {summary.get('end', equity.index[-1])}"
    body = [f"<h1>{html.escape(name)}</h1>", f"<p>{len(equity)} closes of {tf}, {len(fills)} fills, strategy "
            f"{html.escape(str(summary.get('strategy_name', '')))}; every figure from training/performance.py.</p>"]
    body += [_png(p) for p in pngs[:2]]
    for head, md in extra:  # verdicts and windows first: what a reader looks for
        body.append(f"<h2>{html.escape(head)}</h2>{markdown_html(md)}")
    for head, md in parts[:2]:
        body.append(f"<h2>{html.escape(head)}</h2>{markdown_html(md)}")
    body += [_png(p) for p in pngs[2:]]
    for head, md in parts[2:]:
        body.append(f"<h2>{html.escape(head)}</h2>{markdown_html(md)}")
    page = out / "tearsheet.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(name)
                    + "</title><style>body{font-family:sans-serif;max-width:980px;margin:auto}"
                    "table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:2px 6px;"
                    "text-align:right;font-size:13px}img{max-width:100%}</style></head><body>"
                    + "\n".join(body) + "</body></html>\n")
    return page


def _title(path: Path) -> str:
    first = path.read_text().splitlines()[:1]
    return first[0].lstrip("#").strip() if first and first[0].startswith("#") else path.name.split(".")[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Re-render the tearsheet of a result directory."""
    p = argparse.ArgumentParser(prog="python -m training.tearsheet", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="directory a backtest or walk-forward wrote")
    p.add_argument("--timeframe", help="bar timeframe (default: the summary's, else 1h)")
    p.add_argument("--title")
    a = p.parse_args(argv)
    if not (a.out / "equity.csv").is_file():
        print(f"error: {a.out / 'equity.csv'} not found (run python -m training.backtest or training.walkforward)")
        return 2
    print(f"written {render_tearsheet(a.out, a.timeframe, a.title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
