"""What every page reads through: the settings, the profile's stores, and cached queries keyed by the change token.

The stores are chosen once (:func:`flows.stores.open_stores`) and kept for the server's
life (``st.cache_resource``); a query's result is cached per change token, so a page
re-reads the store only after new records arrived (the token is the Redis streams' newest
ids on ``timescale``, the decision directories' modification times on ``local``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from flows.settings import PROJECT_ROOT, Settings, load_settings
from flows.stores import Stores, open_stores
from flows.stores.base import ChangeFeed, KillSwitch, MonitorReader


@dataclass(frozen=True)
class Context:
    """The dashboard's connections, made once per server."""

    settings: Settings
    stores: Stores
    reader: MonitorReader
    feed: ChangeFeed
    kill: KillSwitch

    @property
    def audit_file(self) -> Path:
        """Where the dashboard records who engaged or released the kill switch, and why."""
        return self.settings.data_dir / "dashboard" / "kill_switch.jsonl"

    def report_dirs(self) -> tuple[Path, ...]:
        """Return the directories searched for reports (``dashboard.report_dirs`` or the defaults)."""
        return self.settings.dashboard.report_dirs or (PROJECT_ROOT / "training" / "reports", self.settings.data_dir)


@st.cache_resource
def context() -> Context:
    """Return the dashboard's context from the settings (environment and ``CRYPTOSTREAM_CONFIG``)."""
    settings = load_settings()
    stores = open_stores(settings)
    return Context(settings, stores, stores.monitor_reader(), stores.change_feed(), stores.kill_switch())


def token() -> str:
    """Return this page run's change token (read once per run, kept in the session)."""
    tok = context().feed.token()
    st.session_state["token"] = tok
    return tok


def run_id() -> str | None:
    """Return the run the sidebar selected (``None``: nothing stored yet)."""
    value = st.session_state.get("run")
    return str(value) if value else None


@st.cache_data(ttl=600, max_entries=64, show_spinner=False)
def query(name: str, tok: str, *args: Any) -> Any:
    """Return ``reader.<name>(*args)``, cached per change token."""
    return getattr(context().reader, name)(*args)


def record_kill(action: str, reason: str, flatten: bool = False) -> None:
    """Engage or release the kill switch through the profile's store, and append the action to the audit file."""
    ctx = context()
    if action == "engage":
        ctx.kill.engage(reason, flatten)
    else:
        ctx.kill.release()
    ctx.audit_file.parent.mkdir(parents=True, exist_ok=True)
    with ctx.audit_file.open("a") as f:
        f.write(json.dumps({"ts": int(time.time() * 1000), "action": action, "reason": reason,
                            "flatten": flatten, "where": ctx.kill.where()}) + "\n")


def kill_history(limit: int = 20) -> pd.DataFrame:
    """Return the last ``limit`` kill-switch actions taken from the dashboard, newest first."""
    path = context().audit_file
    lines = path.read_text().splitlines()[-limit:] if path.is_file() else []
    df = pd.DataFrame([json.loads(x) for x in reversed(lines)], columns=["ts", "action", "reason", "flatten", "where"])
    df["ts"] = pd.to_datetime(df["ts"], unit="ms", utc=True)
    return df
