"""One command line for the system: cryptostream VERB [ARGS...].

Each verb runs one module's own command line with the remaining arguments, exactly as
``python -m MODULE ARGS...`` would (``cryptostream train lightgbm --help`` is
``python -m training.train lightgbm --help``); the exit code is the module's.  The
modules are named here, not imported, so the entry point loads only what the verb
needs.  :class:`HelpFormatter` is the help layout every module's parser uses: defaults
shown, required options marked.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import runpy
import sys
from collections.abc import Sequence

from flows.lifecycle import EXIT_USAGE

# verb -> (module run as __main__, leading arguments, what it does)
VERBS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "download-data": ("training.backfill", (), "history into the offline store: candle files or exchange klines "
                      "(same as backfill)"),
    "backfill": ("training.backfill", (), "history into the offline store: `files PATH...` or `exchange ...`"),
    "train": ("training.train", (), "train lightgbm, lstm, gnn or the ensemble into the registry"),
    "backtest": ("training.backtest", (), "candle files through the flow's operators, scoring, risk and paper broker"),
    "walkforward": ("training.walkforward", (), "walk-forward backtest: retrain per window, trade out of sample"),
    "tune": ("training.tune", (), "seeded Optuna search on development windows"),
    "gate": ("training.gate", (), "the go-live gate: judge a walk-forward and the paper record"),
    "trade": ("flows.main", (), "the main job: bootstrap, replay exchange (or your exchange), live flow, summary"),
    "live": ("bytewax.run", ("flows.live",), "the live flow alone, against the configured exchange"),
    "dashboard": ("flows.monitoring.dashboard", (), "the Streamlit dashboard"),
    "kill-switch": ("flows.risk.kill_switch", (), "engage, release or show the kill switch"),
    "registry": ("training.registry", (), "list, show (lineage), promote, roll back and verify model versions"),
    "verify-model": ("training.export", (), "re-verify one registered model and print its manifest"),
    "retrain": ("training.retrain", (), "daily or weekly retraining: challenger vs champion through the gate"),
    "schedule": ("training.schedule", (), "run the retraining jobs at their configured times"),
    "db": ("infra.db", (), "schema, retention, backup and restore: migrate, status, retention, backup, restore, "
           "backups, probe, env"),
    "drift": ("training.drift", (), "feature and calibration drift of the deployed models: reference, check, watch"),
}


SECRET_WORDS = ("dsn", "url", "key", "secret", "password", "token")  # never show such a default


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default (when it has one) and mark required options ``(required)``.

    A default is left out when the help already names it, when there is none (None, False,
    empty), and for options whose name looks secret (a DSN from the environment).
    """

    @staticmethod
    def _shows_default(action: argparse.Action) -> bool:
        default = action.default
        return not (default is None or default is False or default == [] or default == ()
                    or default == argparse.SUPPRESS or not action.option_strings
                    or any(w in action.dest.lower() for w in SECRET_WORDS))

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and (action.required or self._shows_default(action)):
            action = copy.copy(action)  # an option without help still shows its default or that it is required
            action.help = "required" if action.required else "default: %(default)s"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.required and action.option_strings:
            return text if "required" in text else text + " (required)"
        if "default" in text or not self._shows_default(action):
            return text
        return super()._get_help_string(action)


def usage() -> str:
    """Return the help text: the verbs and the modules they run."""
    width = max(map(len, VERBS))
    rows = "\n".join(f"  {verb:<{width}}  {what}\n  {'':<{width}}  (python -m {' '.join((mod, *lead))})"
                     for verb, (mod, lead, what) in VERBS.items())
    return (f"usage: cryptostream VERB [ARGS...]\n\n{__doc__.splitlines()[0]}\n\nverbs:\n{rows}\n\n"
            "`cryptostream VERB --help` shows the verb's options with their defaults.")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the verb's module with the remaining arguments; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else EXIT_USAGE
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(f"cryptostream: unknown verb {verb!r}; one of: {', '.join(VERBS)}", file=sys.stderr)
        return EXIT_USAGE
    module, lead, _ = VERBS[verb]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its package is missing too
        found = False
    if not found:
        print(f"cryptostream {verb}: not built yet (no module {module} in this installation)", file=sys.stderr)
        return EXIT_USAGE
    saved = sys.argv
    sys.argv = [f"cryptostream {verb}", *lead, *rest]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)  # SystemExit("message"): Python prints it and exits 1
        return 1
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
