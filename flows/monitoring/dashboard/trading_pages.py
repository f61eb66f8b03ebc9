"""Pages of what the strategy did: portfolio, positions, orders and fills, predictions."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

import altair as alt
import pandas as pd
import streamlit as st

from flows.monitoring.dashboard import views
from flows.monitoring.dashboard.context import context, query, run_id, token


def of_run(title: str) -> Callable[[Callable[[str, str], None]], Callable[[], None]]:
    """Make a page of the selected run: draw ``title``, then call the page with the run and the change token.

    Without a stored run it says so and returns (no ``st.stop()``: the live check below the
    page must still run, so an empty store fills in).
    """
    def wrap(draw: Callable[[str, str], None]) -> Callable[[], None]:
        @wraps(draw)
        def page() -> None:
            st.header(title)
            run = run_id()
            if run is None:
                st.info("No portfolio rows are stored yet: start a run (`python -m flows.main`) and this page "
                        "fills in.")
                return
            draw(run, token())
        return page
    return wrap


@of_run("Portfolio")
def portfolio(run: str, tok: str) -> None:
    """Equity, drawdown, exposure; P&L by day and by symbol."""
    cfg = context().settings.dashboard
    state = query("latest_state", tok, run)  # one row: the figures paint before the curve's query runs
    if state:
        c = st.columns(5)
        c[0].metric("Equity", f"{state['equity']:,.2f}")
        c[1].metric("Drawdown", f"{(state['drawdown'] or 0.0):.2%}")
        c[2].metric("Gross exposure", f"{(state['gross_exposure'] or 0.0):,.2f}")
        c[3].metric("Net exposure", f"{(state['net_exposure'] or 0.0):,.2f}")
        c[4].metric("P&L 24 h", f"{(state['daily_pnl'] or 0.0):,.2f}")
    curve = query("equity", tok, run, cfg.points)
    st.caption(f"run {run} · {len(curve)} chart points" + (f" · last row {state['ts']}" if state else ""))
    st.subheader("Equity")
    st.altair_chart(_curve(curve, "equity"), width="stretch")
    left, right = st.columns(2)
    with left:
        st.subheader("Drawdown")
        st.area_chart(curve.assign(drawdown=-curve["drawdown"]), x="ts", y="drawdown", height=200)
    with right:
        st.subheader("Exposure")
        st.line_chart(curve, x="ts", y=["gross_exposure", "net_exposure"], height=200)
    left, right = st.columns(2)
    with left:
        st.subheader("P&L by day")
        daily = views.pnl_by_day(query("daily", tok, run))
        st.bar_chart(daily, x="day", y="pnl", height=220)
    with right:
        st.subheader("P&L by symbol")
        by_symbol = views.pnl_by_symbol(query("symbol_flows", tok, run), state)
        st.bar_chart(by_symbol, x="symbol", y="pnl", height=220)
        st.dataframe(by_symbol, hide_index=True)


def _curve(df: pd.DataFrame, column: str) -> alt.Chart:
    """Return a line chart of ``column`` over ``ts`` whose axis fits the values (not from zero)."""
    return alt.Chart(df).mark_line().encode(x=alt.X("ts:T", title=None),
                                            y=alt.Y(f"{column}:Q", scale=alt.Scale(zero=False))).properties(height=260)


@of_run("Positions")
def positions(run: str, tok: str) -> None:
    """Open positions at the latest row."""
    state = query("latest_state", tok, run)
    pos = views.positions(state)
    if pos.empty:
        st.info("Flat: no open position.")
    else:
        st.dataframe(pos, hide_index=True, column_config={"weight": st.column_config.NumberColumn(format="percent")})
    if state:
        st.caption(f"as of {state['ts']} · cash {state['cash']:,.2f} · equity {state['equity']:,.2f}")


@of_run("Orders and fills")
def orders_fills(run: str, tok: str) -> None:
    """Recent orders; recent fills with slippage against the decision price."""
    ctx = context()
    rows = ctx.settings.dashboard.rows
    fills = views.slippage(query("fills", tok, run, rows, ctx.settings.trading_timeframe()))
    st.subheader(f"Fills (last {rows})")
    if not fills.empty:
        c = st.columns(3)
        c[0].metric("Mean slippage", f"{fills['slippage_bps'].mean():.2f} bp")
        c[1].metric("Worst slippage", f"{fills['slippage_bps'].max():.2f} bp")
        c[2].metric("Fees", f"{fills['fee'].sum():,.4f}")
    st.dataframe(fills[["ts", "symbol", "side", "qty", "price", "decision_price", "slippage_bps", "fee",
                        "liquidity", "decided", "client_order_id"]].iloc[::-1], hide_index=True)
    st.subheader(f"Orders (last {rows})")
    orders = query("orders", tok, run, rows)
    st.dataframe(orders[["ts", "symbol", "side", "type", "qty", "price", "status", "reason", "mode",
                         "client_order_id", "updated_at"]].iloc[::-1], hide_index=True)


@of_run("Predictions")
def predictions(run: str, tok: str) -> None:
    """Recent predictions: probability and confidence of the ensemble and each member."""
    rows = context().settings.dashboard.rows
    preds = query("predictions", tok, run, rows)
    per_model = views.model_confidence(preds)
    if per_model.empty:
        st.info("No prediction stored for this run.")
        return
    summary = per_model.groupby("model").agg(predictions=("prob_up", "size"), mean_prob_up=("prob_up", "mean"),
                                             mean_confidence=("confidence", "mean"), last=("ts", "max"))
    st.subheader(f"Per model (last {rows} predictions)")
    st.dataframe(summary.reset_index(), hide_index=True)
    symbol = st.selectbox("Symbol", sorted(per_model["symbol"].unique()))
    chosen = per_model[per_model["symbol"] == symbol]
    wide = chosen.pivot_table(index="ts", columns="model", values="confidence", aggfunc="last")
    st.subheader("Confidence by model")
    st.line_chart(wide, height=240)
    st.subheader("Latest")
    latest: pd.DataFrame = preds.iloc[::-1][["ts", "symbol", "model_version", "prob_up", "confidence", "signal"]]
    st.dataframe(latest, hide_index=True)
