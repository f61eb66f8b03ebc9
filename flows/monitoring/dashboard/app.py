"""The Streamlit script (``streamlit run`` runs it once per page view): sidebar, live check, pages.

Live updates: a fragment re-runs every ``dashboard.refresh_s`` seconds, reads the change
token (Redis streams on ``timescale``, the parquet directories on ``local``) and re-runs
the page when it moved, so the page shows new records within that interval.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from flows.monitoring.dashboard import ops_pages, trading_pages
from flows.monitoring.dashboard.context import context, query

st.set_page_config(page_title="cryptostream", layout="wide")
ctx = context()

PAGES = [
    st.Page(trading_pages.portfolio, title="Portfolio", url_path="portfolio", default=True),
    st.Page(trading_pages.positions, title="Positions", url_path="positions"),
    st.Page(trading_pages.orders_fills, title="Orders and fills", url_path="orders"),
    st.Page(trading_pages.predictions, title="Predictions", url_path="predictions"),
    st.Page(ops_pages.freshness, title="Feature freshness", url_path="freshness"),
    st.Page(ops_pages.risk, title="Risk", url_path="risk"),
    st.Page(ops_pages.kill_switch, title="Kill switch", url_path="kill-switch"),
    st.Page(ops_pages.models, title="Models and verdicts", url_path="models"),
    st.Page(ops_pages.drift, title="Drift", url_path="drift"),
    st.Page(ops_pages.reports, title="Reports", url_path="reports"),
]
page = st.navigation(PAGES)


@st.fragment(run_every=ctx.settings.dashboard.refresh_s)
def live() -> None:
    """Re-run the page when the store changed since it was drawn."""
    tok = ctx.feed.token()
    if st.session_state.get("token") not in (None, tok):
        st.rerun(scope="app")
    st.caption(f"live · {ctx.feed.where()} · checked {pd.Timestamp.now(tz='UTC'):%H:%M:%S} UTC")


with st.sidebar:
    st.markdown(f"**cryptostream** · profile `{ctx.settings.profile}` · mode `{ctx.settings.mode}`")
    runs = query("runs", ctx.feed.token())
    if not runs.empty:
        st.selectbox("Run", list(runs["run_id"]), key="run",
                     format_func=lambda r: f"{r} (to {runs.set_index('run_id').at[r, 'last']:%Y-%m-%d %H:%M})")
    else:
        st.session_state["run"] = None

page.run()
live()  # in the main area, below the page (a fragment's timer did not run in the sidebar)
