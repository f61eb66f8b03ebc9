"""Run the chaos suite and write its table: ``python -m tests.chaos --full`` (the long forms).

Without ``--full``: the bounded forms CI runs (3 kill points per profile, one run per storm,
a 5 s Redis outage).  ``--full``: 20 random kill points per flow and profile (features; the
decisions flow with scoring and paper trading), every storm 3 times, 3 TimescaleDB restarts,
a 60 s Redis outage, about a million fuzzed parser messages, about a million fuzzed REST
reply rows and a soak of ``--soak-trades`` trades.  Needs ../shared/data and TimescaleDB + Redis (``infra/up`` runs if TIMESCALE_DSN and
REDIS_URL are not set; as root, for the throwaway clusters).  Prints each row as it is done
and writes the table with the soak's samples to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.kit import chaos
from tests.kit.replay import with_history
from tests.kit.repo import PROJECT_ROOT

SHARED = PROJECT_ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios, print the rows, write the table."""
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="the long forms")
    p.add_argument("--soak-trades", type=float, default=10e6, help="trades of the soak (--full)")
    p.add_argument("--skip", nargs="*", default=[], choices=["kills", "decisions", "storms", "outages", "fuzz", "soak"])
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "tests" / "chaos" / "RESULTS.md")
    a = p.parse_args(argv)
    full = a.full
    servers = chaos.infra_settings()
    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
    t0 = time.monotonic()
    print(chaos.HEADER, flush=True)
    rows: list[chaos.Row] = []
    want = chaos.reference_tables(SHARED, tmp / "reference")
    kills, per_run = (20, 5) if full else (3, 3)
    cmd = "python -m tests.chaos " + " ".join(argv if argv is not None else sys.argv[1:])

    def done(row: chaos.Row) -> None:
        rows.append(row)
        write(a.out, cmd, t0, rows, [])

    if "outages" not in a.skip:
        done(chaos.timescale_restart(SHARED, tmp, want, runs=3 if full else 1, down_s=5.0 if full else 3.0,
                                     redis_url=servers["REDIS_URL"]))
        done(chaos.redis_outage(tmp / "redis", servers["TIMESCALE_DSN"], down_s=60.0 if full else 5.0))
    if "storms" not in a.skip:
        for name in chaos.STORMS:
            done(chaos.fault_storm(SHARED, tmp, want, name, runs=3 if full else 1, speed=0))
    if "fuzz" not in a.skip:
        done(chaos.fuzz_parser(20_000 if full else 2_000))
        done(chaos.fuzz_rest_replies(50_000 if full else 2_000))
    if "kills" not in a.skip:
        for profile in ("local", "timescale"):
            done(chaos.sigkill_features(SHARED, tmp, want, profile, kills, per_run, servers))
    if "decisions" not in a.skip:
        from tests.kit.paper import TRAIN, candle_files, train_registry

        registry = train_registry(tmp / "train", candle_files(SHARED), "5m", TRAIN)
        reference = decisions_reference(tmp / "dref", registry)
        for profile in ("local", "timescale"):
            done(chaos.sigkill_decisions(SHARED, tmp, registry, reference, profile, kills if full else 2,
                                         per_run if full else 2, servers))
    samples: list[dict] = []
    if "soak" not in a.skip:
        row, samples = chaos.soak(tmp / "soak", int(a.soak_trades if full else 300_000),
                                  sample_s=30.0 if full else 5.0)
        rows.append(row)
    write(a.out, cmd, t0, rows, samples)
    print(f"wrote {a.out}", flush=True)
    return 1 if any(r.failures for r in rows) else 0


def write(out: Path, cmd: str, t0: float, rows: list[chaos.Row], samples: list[dict]) -> None:
    """Write the table so far (and the soak's samples) to ``out``."""
    text = [f"# Chaos suite results\n\n`{cmd.strip()}` ({(time.monotonic() - t0) / 60:.0f} min)\n", chaos.HEADER,
            *[r.line() for r in rows]]
    if samples:
        text += ["\n## Soak: the flow's process over time\n", "| t (s) | RSS (MB) | threads | open files |",
                 "|---|---|---|---|", *[f"| {s['t_s']} | {s['rss_mb']:.0f} | {s['threads']} | {s['open_files']} |"
                                        for s in samples]]
    out.write_text("\n".join(text) + "\n")


def decisions_reference(tmp: Path, registry: Path) -> Path:
    """Run the decisions flow once, uninterrupted (local profile); return its data directory."""
    from flows import feast_store
    from flows.settings import load_settings
    from infra.replay_exchange.server import running_replay
    from tests.kit.paper import LIVE, SYMBOLS, candle_files, paper_env
    from tests.kit.recovery import run_flow
    from tests.kit.repo import copy_feature_repo

    tmp.mkdir(parents=True, exist_ok=True)
    with running_replay(candle_files(SHARED), speed=0, end=LIVE[1], **with_history(LIVE[0], "5m"), seed=5) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = paper_env(tmp / "var", copy_feature_repo(tmp), ex, registry)
        feast_store.apply(load_settings(env=env))
        proc = run_flow(env)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
    return tmp / "var"


if __name__ == "__main__":
    sys.exit(main())
