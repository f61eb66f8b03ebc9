"""Live trading obeys the go-live gate.

``mode=live`` starts only when every deployed model version the flow would trade
with (the ensemble and, when configured, the RL policy) carries a passing verdict of
``python -m training.gate`` (:mod:`inference.verdict`) for the configured strategy
and decision config.  A verdict made for other versions, another strategy or another
decision config does not count.  The refusal names every failed criterion.

The one way past a missing or failing verdict is an explicit override with a reason,
``execution.live.gate_override_reason`` (env ``CRYPTOSTREAM_EXECUTION__LIVE__GATE_OVERRIDE_REASON``,
at least 10 characters).  The flow then records a portfolio risk event
``go_live:override`` (with the reason and what the gate lacked) at its first close and
shows ``HALTS[go_live=override]`` on every status line, so the summary says so too.

The decision config hash covers what decides trades (symbols, timeframe, scoring
thresholds, the strategy, risk, fees and slippage) and nothing that only says where
or how orders go (broker, keys, capital cap), so a paper run and the live run it
qualifies share it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flows.settings import Settings, SettingsError
from inference.manifest import (
    ManifestError,
    check_policy,
    config_hash,
    read_manifest,
    resolve_version_dir,
)
from inference.verdict import Verdict, binding_problems, read_verdict

ENSEMBLE = "ensemble"  # the ensemble's registry family (its members come with it)
OVERRIDE_RULE = "go_live:override"
_EXECUTION_EXCLUDED = {"broker", "live"}  # where and how orders go, not what is traded


def decision_config(settings: Settings) -> dict[str, Any]:
    """Return the settings that decide trades, as plain data (hashed into the verdict's binding)."""
    sc = settings.scoring
    doc: dict[str, Any] = {
        "symbols": list(settings.symbols),
        "timeframe": settings.trading_timeframe(),
        "scoring": {"confidence_threshold": sc.confidence_threshold, "policy_family": sc.policy_family or "",
                    "strategy_id": sc.strategy},
        "risk": settings.risk.model_dump(mode="json"),
        "execution": settings.execution.model_dump(mode="json", exclude=_EXECUTION_EXCLUDED),
    }
    strategy = getattr(settings, "strategy", None)
    if strategy is not None:
        doc["strategy"] = strategy.model_dump(mode="json")
    regime = getattr(settings, "regime", None)
    if regime is not None and regime.source != "off":  # off leaves the hashes of earlier verdicts as they were
        doc["regime"] = regime.model_dump(mode="json")
    return doc


def decision_config_hash(settings: Settings) -> str:
    """Return the sha256 of :func:`decision_config`."""
    return config_hash(decision_config(settings))


def strategy_name(settings: Settings) -> str:
    """Return the name of the strategy the settings trade (the verdict binds to it)."""
    strategy = getattr(settings, "strategy", None)
    return str(strategy.name) if strategy is not None else "legacy"


def deployed_versions(settings: Settings) -> dict[str, str]:
    """Return family -> version of the ensemble and the policy the flow would load (members included)."""
    sc, root, tf = settings.scoring, settings.registry_root(), settings.trading_timeframe()
    out: dict[str, str] = {}
    ens = read_manifest(resolve_version_dir(root, ENSEMBLE, sc.ensemble_version, timeframe=tf))
    out[ENSEMBLE] = ens.version
    for family, version in dict(ens.extra.get("members", {})).items():
        out[str(family)] = str(version)
    if sc.policy_family and (root / sc.policy_family).is_dir():  # the flow trades without a policy it lacks
        policy = read_manifest(resolve_version_dir(root, sc.policy_family, sc.policy_version, timeframe=tf))
        check_policy(policy, ens)
        out[sc.policy_family] = policy.version
    return out


def judged_families(settings: Settings, deployed: Mapping[str, str]) -> list[str]:
    """Return the families whose versions must carry the verdict (the ensemble and the policy, if deployed)."""
    policy = settings.scoring.policy_family
    return [ENSEMBLE] + ([policy] if policy and policy in deployed else [])


@dataclass(frozen=True)
class GoLive:
    """What the gate check found for a live start: passed, or overridden with a reason."""

    passed: bool
    problems: tuple[str, ...] = ()
    override_reason: str = ""

    @property
    def overridden(self) -> bool:
        """Return True when live starts past a missing or failing verdict."""
        return not self.passed and bool(self.override_reason)

    def event_reason(self) -> str:
        """Return the text of the override's risk event."""
        return f"gate overridden: {self.override_reason} (gate: " + "; ".join(self.problems) + ")"


def gate_problems(settings: Settings) -> list[str]:
    """Return why the deployed versions may not trade live under these settings (empty: they may)."""
    strategy, chash = strategy_name(settings), decision_config_hash(settings)
    try:
        deployed = deployed_versions(settings)
    except ManifestError as exc:
        return [f"no deployed models to judge: {exc}"]
    problems: list[str] = []
    root = settings.registry_root()
    families = judged_families(settings, deployed)
    for family in families:
        verdict: Verdict | None = read_verdict(resolve_version_dir(root, family, deployed[family],
                                                                   timeframe=settings.trading_timeframe()),
                                               strategy, chash)
        where = f"{family} {deployed[family]}"
        if verdict is None:
            problems.append(f"{where} has no go-live verdict for strategy {strategy!r} and decision config "
                            f"{chash[:12]} (run python -m training.gate)")
            continue
        judged = {f: deployed[f] for f in families}
        problems += [f"{where}: {p}" for p in binding_problems(verdict, judged, strategy, chash)]
        problems += [f"{where}: failed {c.describe()}" for c in verdict.failed]
    return problems


def check_go_live(settings: Settings, problems: list[str] | None = None) -> GoLive | None:
    """Return None unless ``mode=live``; then the passing gate, or an override; else refuse.

    Raises:
        SettingsError: live without a passing verdict for the deployment and no override;
            the message names each failed criterion and binding problem.
    """
    if settings.mode != "live":
        return None
    found = gate_problems(settings) if problems is None else problems
    if not found:
        return GoLive(True)
    reason = (settings.execution.live.gate_override_reason or "").strip()
    if reason:
        print("WARNING: the go-live gate is overridden (execution.live.gate_override_reason): " + reason
              + "\n  " + "\n  ".join(found), file=sys.stderr, flush=True)
        return GoLive(False, tuple(found), reason)
    raise SettingsError("mode=live refused by the go-live gate:\n  " + "\n  ".join(found)
                        + "\n  (pass the gate with python -m training.gate, or set "
                        "execution.live.gate_override_reason / CRYPTOSTREAM_EXECUTION__LIVE__GATE_OVERRIDE_REASON "
                        "to a reason of at least 10 characters)")


def with_override(status_halts: Mapping[str, str], go_live: GoLive | None) -> dict[str, str]:
    """Return the status line's halts with ``go_live=override`` when the gate is overridden."""
    out = dict(status_halts)
    if go_live is not None and go_live.overridden:
        out["go_live"] = "override"
    return out
