"""Start the dashboard: ``python -m flows.monitoring.dashboard [--port N] [--address A] [--config FILE]``.

Checks the settings first (a bad one stops here, naming the field), then replaces this
process with ``streamlit run`` of :mod:`flows.monitoring.dashboard.app` on
``dashboard.address:dashboard.port`` (127.0.0.1:8501 by default), headless, without
usage statistics.  Exit codes: 0 after a normal stop, 2 for bad settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().with_name("app.py")


def streamlit_argv(address: str, port: int) -> list[str]:
    """Return the command that serves the dashboard."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", address,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal", "--theme.base", "light"]


def main(argv: list[str] | None = None) -> int:
    """Validate the settings and exec Streamlit."""
    parser = argparse.ArgumentParser(prog="python -m flows.monitoring.dashboard", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--port", type=int, help="port (default: the dashboard.port setting, 8501)")
    parser.add_argument("--address", help="listen address (default: the dashboard.address setting, 127.0.0.1)")
    parser.add_argument("--config", help="YAML settings file (default $CRYPTOSTREAM_CONFIG)")
    args = parser.parse_args(argv)
    from flows.settings import SettingsError, load_settings

    env = dict(os.environ)
    if args.config:
        env["CRYPTOSTREAM_CONFIG"] = str(Path(args.config).resolve())
    if args.port is not None:
        env["CRYPTOSTREAM_DASHBOARD__PORT"] = str(args.port)
    if args.address is not None:
        env["CRYPTOSTREAM_DASHBOARD__ADDRESS"] = args.address
    try:
        settings = load_settings(env=env)
        settings.require_servers()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    cfg = settings.dashboard
    print(f"dashboard: http://{cfg.address}:{cfg.port}/ (profile {settings.profile})", flush=True)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    argv_ = streamlit_argv(cfg.address, cfg.port)
    os.execve(argv_[0], argv_, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
