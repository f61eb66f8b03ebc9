"""Start the dashboard: ``python -m flows.monitoring.dashboard [--port N] [--address A] [--config FILE]``.

Checks the settings first (a bad one stops here, naming the field), imports what the pages
use (so the first visitor does not wait for pandas, pyarrow and altair to load), then runs
``streamlit run`` of :mod:`flows.monitoring.dashboard.app` in this process on
``dashboard.address:dashboard.port`` (127.0.0.1:8501 by default), headless, without usage
statistics.  Exit codes: 0 after a normal stop (Ctrl-C, SIGTERM), 2 for bad settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().with_name("app.py")


def streamlit_argv(address: str, port: int) -> list[str]:
    """Return the ``streamlit`` command line that serves the dashboard."""
    return ["streamlit", "run", str(APP), "--server.address", address,
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
    os.environ.update(env)  # the app's load_settings() reads the same values
    _preload(settings.profile)
    from streamlit.web import cli

    sys.argv = streamlit_argv(cfg.address, cfg.port)
    try:
        cli.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _preload(profile: str) -> None:
    """Import what the pages use and the profile's store readers before the first visitor.

    Not the page modules themselves: their Streamlit caches are made when the runtime runs.
    """
    import altair  # noqa: F401

    import flows.monitoring.dashboard.files  # noqa: F401
    import flows.monitoring.dashboard.views  # noqa: F401
    import flows.stores.parquet_monitor  # noqa: F401

    if profile == "timescale":
        import flows.stores.redis  # noqa: F401
        import flows.stores.timescale_monitor  # noqa: F401


if __name__ == "__main__":
    sys.exit(main())
