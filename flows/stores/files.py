"""Plain files of the ``local`` profile: the kill switch file and the model swap file."""

from __future__ import annotations

import os
from pathlib import Path

from flows.stores.base import KillStatus, kill_value, parse_kill_value


class FileKillSwitch:
    """A kill switch that is engaged while ``path`` exists."""

    def __init__(self, path: str | Path) -> None:
        """Use ``path`` as the switch (its directory is made on engage)."""
        self.path = Path(path)

    def active(self) -> bool:
        """Return whether the switch is engaged."""
        return self.path.exists()

    def status(self) -> KillStatus:
        """Return the switch's status with its reason and flatten flag."""
        try:
            return parse_kill_value(self.path.read_bytes())
        except FileNotFoundError:
            return KillStatus(False)
        except OSError as exc:
            return KillStatus(True, f"kill switch file unreadable: {exc}")

    def engage(self, reason: str, flatten: bool = False) -> None:
        """Engage the switch (atomically: written aside, then renamed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(kill_value(reason, flatten))
        os.replace(tmp, self.path)

    def release(self) -> None:
        """Release the switch."""
        self.path.unlink(missing_ok=True)

    def where(self) -> str:
        """Say where the switch is."""
        return str(self.path)

    def __repr__(self) -> str:
        return f"FileKillSwitch({str(self.path)!r})"


class SwapFile:
    """The model swap trigger as a file (absent = ``None``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> bytes | None:
        """Return the file's content."""
        return self.path.read_bytes() if self.path.is_file() else None

    def write(self, value: bytes) -> None:
        """Replace the file's content atomically (a reader never sees half of it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_bytes(value)
        os.replace(tmp, self.path)
