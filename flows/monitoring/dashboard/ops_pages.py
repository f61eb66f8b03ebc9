"""Pages of the system's health and controls: feature freshness, risk, the kill switch, models, drift, reports."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import streamlit as st
import streamlit.components.v1 as components

from flows.monitoring.dashboard import files, views
from flows.monitoring.dashboard.context import (
    context,
    kill_history,
    query,
    record_kill,
    run_id,
    token,
)
from flows.timeframes import timeframe_ms


def freshness() -> None:
    """The newest stored bar and features per symbol, timeframe and feature group."""
    st.header("Feature freshness")
    ctx, tok = context(), token()
    s = ctx.settings
    fresh = query("freshness", tok, tuple(s.symbols), tuple(s.bars.timeframes))
    now = pd.Timestamp(datetime.now(UTC))
    out = views.freshness_age(fresh, now)
    newest = out["last"].max()
    out["behind_newest_s"] = (newest - out["last"]).dt.total_seconds()
    out["stale"] = out["age_s"].isna() | (out["age_s"] > 3 * out["timeframe"].map(timeframe_ms) / 1000)
    st.caption("age: seconds since the newest stored time; behind newest: against the newest time of any group "
               "(a replayed or historical store is old but may still be in step); stale: older than 3 bars.")
    st.dataframe(out, hide_index=True)


def risk() -> None:
    """Limits with their headroom, breakers, halts and releases, rejections with their reasons."""
    st.header("Risk")
    ctx, tok = context(), token()
    run = run_id()
    if run is None:
        st.info("No portfolio rows are stored yet.")
        return
    state = query("latest_state", tok, run)
    st.subheader("Limits and headroom")
    st.dataframe(views.headroom(state, ctx.settings.risk.limits), hide_index=True,
                 column_config={"used": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")})
    switch = ctx.kill.status()
    st.write(f"Kill switch: **{'ENGAGED' if switch.active else 'released'}**"
             + (f" ({switch.reason})" if switch.active else ""))
    events = query("risk_events", tok, run, ctx.settings.dashboard.rows)
    events = events.assign(kind=events["rule"].map(views.classify)).iloc[::-1]
    counts = query("risk_counts", tok, run)
    st.subheader("Events by rule (whole run)")
    st.dataframe(counts.assign(kind=counts["rule"].map(views.classify)), hide_index=True)
    for kind, title in (("breaker", "Circuit breakers"), ("halt", "Halts, probations and releases"),
                        ("rejection", "Rejections and cuts")):
        st.subheader(title)
        part = events[events["kind"] == kind]
        if part.empty:
            st.caption("none in the recent events")
        else:
            st.dataframe(part[["ts", "symbol", "rule", "reason", "requested", "allowed"]], hide_index=True)


def kill_switch() -> None:
    """Engage or release the kill switch, with a reason and a confirmation."""
    st.header("Kill switch")
    ctx = context()
    status = ctx.kill.status()
    since = f" since {pd.Timestamp(status.since, unit='ms', tz='UTC')}" if status.since else ""
    if status.active:
        st.error(f"ENGAGED{since}: {status.reason or 'no reason given'}"
                 + (" · flattening positions" if status.flatten else ""))
    else:
        st.success("Released: the flow trades normally.")
    st.caption(f"Store: {ctx.kill.where()}. The flow reads it at every bar close: while engaged it places only "
               "risk-reducing orders (and with flatten closes every position).")
    action = "release" if status.active else "engage"
    with st.form("kill_switch", clear_on_submit=True):
        reason = st.text_input("Reason", key="kill_reason", placeholder="why (kept with the switch and in the log)")
        flatten = st.checkbox("Also flatten every position", key="kill_flatten") if action == "engage" else False
        confirm = st.checkbox(f"I confirm: {action} the kill switch", key="kill_confirm")
        submitted = st.form_submit_button("Engage kill switch" if action == "engage" else "Release kill switch",
                                          type="primary")
    if submitted:
        if not reason.strip():
            st.warning("Give a reason.")
        elif not confirm:
            st.warning("Tick the confirmation box.")
        else:
            record_kill(action, reason.strip(), flatten)
            st.rerun()
    st.subheader("Recent actions from the dashboard")
    st.dataframe(kill_history(), hide_index=True)


def models() -> None:
    """Registered model versions, their gate verdicts, and the registry's events (promotions, retraining)."""
    st.header("Models and gate verdicts")
    root = context().settings.registry_root()
    table = files.registry_versions(root)
    st.caption(f"registry {root}")
    events = files.registry_events(root)
    if not events.empty:
        st.subheader("Promotions, rollbacks and retraining (newest first)")
        st.dataframe(events, hide_index=True)
    if table.empty:
        st.info("No registered model (the main job's first run, or `python -m training.train`, registers some).")
        return
    first = ["family", "version", "latest", "verdicts"]
    st.dataframe(table[first + [c for c in table.columns if c not in first]], hide_index=True)
    judged = table[table["verdicts"] != "none"]
    for fam, version in zip(judged["family"], judged["version"], strict=True):
        for verdict, path in files.read_verdicts(Path(root) / fam / version):
            with st.expander(f"{fam}/{version}: {'PASS' if verdict.passed else 'FAIL'} · {verdict.strategy} · "
                             f"config {verdict.config_hash[:12]}"):
                st.caption(f"{path} · judged {verdict.created_at} · source {verdict.source or '-'}")
                st.dataframe(files.criteria_table(verdict), hide_index=True)


def drift() -> None:
    """Feature drift (PSI per symbol and feature) and calibration drift of the deployed models."""
    st.header("Drift")
    report, history = files.drift_report(context().settings.data_dir)
    if report is None:
        st.info("No drift check yet: run `python -m training.drift check` (or `watch`); see README *Monitoring*.")
        return
    st.caption(f"{report['family']} {report['version']} ({report['timeframe']}) · checked {report['checked_at']} · "
               f"data up to {report['data_end']} · reference {report['reference']}")
    for alert in report["alerts"]:
        st.error(alert)
    if not report["alerts"]:
        st.success("No drift past the thresholds.")
    if report.get("retrain"):
        st.warning(f"Retrain started: {report['retrain']}")
    st.subheader(f"Feature drift: PSI against the training window (alert above {report['psi_alert']})")
    feats = pd.DataFrame(report["features"], columns=["symbol", "feature", "psi", "rows"])
    if feats.empty:
        st.info(f"Fewer live feature rows than needed (the last {report['live_bars']} per symbol are compared).")
    else:
        st.dataframe(feats.sort_values("psi", ascending=False), hide_index=True)
    cal = report["calibration"]
    st.subheader(f"Calibration of P(up) (alert above ECE {report['ece_alert']})")
    if cal["ece"] is None:
        st.info(f"{cal['rows']} settled predictions: not enough to judge.")
    else:
        st.write(f"ECE **{cal['ece']:.3f}** · Brier {cal['brier']:.3f} · {cal['rows']} settled predictions · "
                 f"mean P(up) {cal['mean_prob']:.3f} · realised up rate {cal['up_rate']:.3f} · "
                 f"horizon {cal['horizon']} bars")
        st.dataframe(pd.DataFrame(cal["table"], columns=["lo", "hi", "rows", "mean_prob", "up_rate"]), hide_index=True)
    if len(history) > 1:
        st.subheader("Checks over time")
        st.line_chart(history.set_index("checked_at")[["psi_max", "ece"]])


def reports() -> None:
    """Backtest, walk-forward and gate reports (HTML and Markdown files)."""
    st.header("Reports")
    dirs = context().report_dirs()
    found = files.report_files(dirs)
    st.caption("searched: " + ", ".join(str(d) for d in dirs))
    if not found:
        st.info("No report found.")
        return
    labels = {_label(p, dirs): p for p in found}
    chosen = labels[st.selectbox("Report", list(labels))]
    text = chosen.read_text(errors="replace")
    if chosen.suffix == ".html":
        components.html(text, height=900, scrolling=True)
    else:
        st.markdown(text)


def _label(path: Path, dirs: tuple[Path, ...]) -> str:
    for d in dirs:
        try:
            return f"{d.name}/{path.relative_to(d)}"
        except ValueError:
            continue
    return str(path)
