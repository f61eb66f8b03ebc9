"""Open the Feast feature store of the active profile.

``feature_repo/feature_store.yaml`` is the ``local`` profile; ``timescale.yaml``
and ``timescale-redis.yaml`` read their connection values from the environment.
The profile's stores (:func:`flows.stores.open_stores`) name the yaml and derive those
values from the settings' ``TIMESCALE_DSN`` and ``REDIS_URL``, so every component opens
the same store the CLI does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flows.settings import PROJECT_ROOT, Settings, SettingsError
from flows.stores import open_stores

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

def profile_yaml(settings: Settings) -> Path:
    """Return the feature_store yaml of the settings' profile and online store."""
    return settings.feast_repo / open_stores(settings).feast_yaml


def feast_environment(settings: Settings) -> dict[str, str]:
    """Return the environment variables the profile's yaml reads."""
    env = {"CRYPTOSTREAM_PROFILE": settings.profile, "CRYPTOSTREAM_DATA_DIR": str(settings.data_dir.absolute()),
           "CRYPTOSTREAM_FEAST_REPO": str(settings.feast_repo)}
    env.update(open_stores(settings).feast_environment())
    return env


def store_config(settings: Settings, yaml_path: Path | None = None) -> RepoConfig:
    """Return the Feast config of the settings' profile yaml (or ``yaml_path``), its ``${VARS}`` expanded.

    The values come from :func:`feast_environment` over ``os.environ``, which is read and never written:
    Feast's own loader expands from the process environment, and setting it around the load raced
    between threads (Bytewax workers open their stores at once), leaking one run's data directory
    into every later ``load_settings`` of the process.
    """
    import yaml
    from feast.repo_config import RepoConfig

    path = yaml_path or profile_yaml(settings)
    values = {**os.environ, **feast_environment(settings)}
    text = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), path.read_text())
    config = RepoConfig(**yaml.safe_load(text))
    config.repo_path = settings.feast_repo
    return config


def open_store(settings: Settings, yaml_path: Path | None = None) -> FeatureStore:
    """Return a FeatureStore for the settings (the repository must have been applied)."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feast_repo), config=store_config(settings, yaml_path))


def ensure_applied(settings: Settings) -> bool:
    """Run ``feast apply`` when a view the flow writes is not registered (a first run); return whether it did.

    Without it the flow's online sink met an unknown view after warm-up (issue 17, defect 6).
    """
    from flows.feature_catalog import view_name
    from flows.feature_groups import GROUPS

    needed = {view_name(g.table, tf) for g in GROUPS if g.cadence == "bar" for tf in settings.bars.timeframes}
    if settings.daily.source != "none":
        needed |= {view_name(g.table, tf) for g in GROUPS if g.cadence == "daily" for tf in g.timeframes}
    if settings.regime.source != "off":
        needed |= {view_name(g.table, tf) for g in GROUPS if g.cadence == "regime" for tf in g.timeframes}
    missing = needed - {v.name for v in open_store(settings).list_feature_views()}
    if not missing:
        return False
    print(f"feast: views {', '.join(sorted(missing))} are not registered in {settings.feast_repo}: running feast "
          f"apply for profile {settings.profile}", file=sys.stderr, flush=True)
    apply(settings)
    return True


def apply(settings: Settings) -> None:
    """Run ``feast apply`` for the settings' profile, as a user would."""
    env = {**os.environ, **feast_environment(settings)}
    # the CLI imports this checkout's plugins (flows.stores...), whichever checkout the virtualenv was installed from
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    cmd = [str(Path(sys.executable).with_name("feast")), "-c", str(settings.feast_repo),
           "-f", str(profile_yaml(settings)), "apply"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SettingsError(f"feast apply failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
