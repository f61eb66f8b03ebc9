"""``python -m infra.db backup`` / ``restore`` on the ``local`` profile: parquet stores, Feast's files, the registry."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tests.kit.backups import fill, local_digest, profile_env, run_db


def _wipe(env: dict[str, str]) -> None:
    data = Path(env["CRYPTOSTREAM_DATA_DIR"])
    for d in ("offline", "decisions", "dead_letters", "registry"):
        shutil.rmtree(data / d)
    for f in (Path(env["CRYPTOSTREAM_FEAST_REPO"]) / "data").glob("*.db"):
        f.unlink()


def test_backup_wipe_restore_gives_every_table_back_identical(tmp_path: Path) -> None:
    env = profile_env(tmp_path)
    fill(env, bars_per_symbol=2000)
    before = local_digest(env)
    assert {"bars_1m", "bar_features_1m", "fills", "orders", "portfolio_state", "predictions"} <= set(before)
    done = run_db(env, "backup")
    assert done.returncode == 0, done.stderr
    assert "backup of profile local" in done.stdout
    _wipe(env)
    assert local_digest(env) == {}
    done = run_db(env, "restore")
    assert done.returncode == 0, done.stderr
    assert "rows and checksums equal to the backup" in done.stdout
    assert local_digest(env) == before


def test_restore_refuses_to_overwrite_stores_without_force(tmp_path: Path) -> None:
    env = profile_env(tmp_path)
    fill(env, bars_per_symbol=300)
    assert run_db(env, "backup").returncode == 0
    fills = sorted((Path(env["CRYPTOSTREAM_DATA_DIR"]) / "decisions" / "fills").glob("*.parquet"))
    fills[0].unlink()  # a change after the backup that a refused restore must keep
    done = run_db(env, "restore")
    assert done.returncode == 2 and "pass --force" in done.stderr
    assert not fills[0].exists()
    done = run_db(env, "restore", "--force")
    assert done.returncode == 0, done.stderr
    assert fills[0].exists()


def test_a_damaged_backup_is_refused_before_anything_is_touched(tmp_path: Path) -> None:
    env = profile_env(tmp_path)
    fill(env, bars_per_symbol=300)
    assert run_db(env, "backup").returncode == 0
    before = local_digest(env)
    archive = next((tmp_path / "backups").glob("*-local")) / "files.tar.gz"
    blob = bytearray(archive.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    archive.write_bytes(bytes(blob))
    done = run_db(env, "restore", "--force")
    assert done.returncode == 2 and "damaged" in done.stderr
    assert local_digest(env) == before


def test_only_the_newest_backups_are_kept(tmp_path: Path) -> None:
    env = profile_env(tmp_path)
    fill(env, bars_per_symbol=60)
    made = []
    for _ in range(3):
        done = run_db(env, "backup", "--keep", "2")
        assert done.returncode == 0, done.stderr
        made.append(done.stdout.split(": ", 1)[1].splitlines()[0])
        time.sleep(1.0)  # backups are named by the second
    kept = sorted(p.name for p in (tmp_path / "backups").iterdir())
    assert kept == sorted(Path(m).name for m in made[1:])
    listed = run_db(env, "backups")
    assert listed.returncode == 0 and listed.stdout.count("-local") == 2
