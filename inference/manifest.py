"""The model manifest: what a registered model was trained on and how to feed it.

Readable without any training library (json + hashlib only), so the scorer can
load and verify a model on the hot path's start-up.  A registry version directory
``<root>/<family>/<version>/`` holds ``manifest.json`` and the files it lists;
``<root>/<family>/latest`` is a one-line text file naming the current version.

Hashes:
    * ``feature_hash`` = sha256 of the ordered feature names joined by ``"\\n"``
      (UTF-8), see :func:`feature_hash`.
    * ``config_hash`` = sha256 of the config as canonical JSON (sorted keys, no
      spaces), see :func:`config_hash`.
    * ``files`` maps every file name in the version directory (except the
      manifest) to the sha256 of its bytes; :func:`verify` re-hashes them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flows.errors import SettingsError

MANIFEST_FILE = "manifest.json"
LATEST_FILE = "latest"  # the family's last promotion of any timeframe (layout before timeframe pointers)
_SERVICE_TF = re.compile(r"_(\d+[smhdw])_v\d+$")
SCHEMA_VERSION = 1


class ManifestError(SettingsError):
    """A manifest is missing, malformed, or its files do not match their hashes.

    A :class:`~flows.errors.SettingsError`: the configured registry cannot be used, so every
    program that loads models stops at start with the message (naming the file), not a traceback.
    """


@dataclass(frozen=True)
class TensorSpec:
    """One ONNX graph input or output: name, shape (``None`` or a name for dynamic axes), element type."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class Parity:
    """Native vs onnxruntime agreement measured on held-out rows at export."""

    max_abs_diff: float
    tolerance: float
    rows: int


@dataclass(frozen=True)
class Manifest:
    """Everything needed to trust and feed a registered model (see module docstring for the hashes)."""

    family: str
    version: str
    created_at: str  # UTC ISO 8601
    feature_service: str
    feature_service_version: str
    features: tuple[str, ...]
    feature_hash: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    train_start: str  # UTC ISO 8601, first decision time
    train_end: str  # UTC ISO 8601, last decision time
    data_hash: str
    seeds: dict[str, int]
    config: dict[str, Any]
    config_hash: str
    metrics: dict[str, Any]  # {"folds": [{metric: value}, ...], "mean": {metric: value}}
    parity: Parity
    files: dict[str, str]  # file name -> sha256
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    symbols: tuple[str, ...] = ()  # the symbol universe trained on (empty: registered before it was recorded)

    @property
    def timeframe(self) -> str | None:
        """Return the bar timeframe of the feature service (``lightgbm_1h_v1`` -> ``1h``), ``None`` if it names none."""
        return timeframe_of(self.feature_service)

    def to_json(self) -> str:
        """Serialise as indented JSON with sorted keys."""
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=_json_default)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse :meth:`to_json` output, validating every field.

        Raises:
            ManifestError: a field is missing, unknown, or the feature hash is wrong.
        """
        try:
            raw = json.loads(text)
            raw["features"] = tuple(raw["features"])
            raw["symbols"] = tuple(raw.get("symbols", ()))
            raw["inputs"] = tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in raw["inputs"])
            raw["outputs"] = tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in raw["outputs"])
            raw["parity"] = Parity(**raw["parity"])
            m = cls(**raw)
            for name, kind in (("files", dict), ("config", dict), ("extra", dict), ("seeds", dict),
                               ("metrics", dict)):
                if not isinstance(getattr(m, name), kind):
                    raise TypeError(f"{name} is not a mapping")
            if not all(isinstance(f, str) for f in m.features) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in m.files.items()):
                raise TypeError("features and files must hold strings")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # JSONDecodeError is a ValueError
            raise ManifestError(f"malformed manifest: {type(exc).__name__}: {exc}") from None
        if m.feature_hash != feature_hash(m.features):
            raise ManifestError(f"{m.family}/{m.version}: feature_hash does not match the feature list")
        return m


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    return str(obj)


def sha256_hex(data: bytes) -> str:
    """Return the hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def feature_hash(features: Sequence[str]) -> str:
    """Return sha256 of the ordered feature names joined by newlines."""
    return sha256_hex("\n".join(features).encode())


def canonical_json(obj: Mapping[str, Any]) -> str:
    """Return the canonical JSON form hashed into ``config_hash``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_hash(config: Mapping[str, Any]) -> str:
    """Return sha256 of the canonical JSON of ``config``."""
    return sha256_hex(canonical_json(config).encode())


def timeframe_of(service: str) -> str | None:
    """Return the timeframe a feature service name carries (``ensemble_1m_v1`` -> ``1m``), else ``None``."""
    m = _SERVICE_TF.search(service)
    return m.group(1) if m else None


def pointer_name(timeframe: str) -> str:
    """Return the file name of a family's pointer for one timeframe (``latest.1h``)."""
    return f"{LATEST_FILE}.{timeframe}"


class TimeframeMismatch(ManifestError):
    """A registered version is of another timeframe than the run that would load it."""


def train_hint(family: str, timeframe: str) -> str:
    """Return the command that registers a ``family`` model of ``timeframe``."""
    if family.startswith("rl_"):
        level = family.removeprefix("rl_")
        return (f"python -m training.rl train {level} --timeframe {timeframe} && "
                f"python -m training.rl export {level}")
    if family == "ensemble":
        return f"train the {timeframe} members, then python -m training.train ensemble --timeframe {timeframe}"
    return (f"python -m training.train {family} --timeframe {timeframe} --symbols ... --start ... --end ...")


def pointed_timeframes(root: str | Path, family: str) -> dict[str, str]:
    """Return timeframe -> version of a family's pointers (a pre-timeframe ``latest`` counts for its manifest's)."""
    fam = Path(root) / family
    out: dict[str, str] = {}
    legacy = fam / LATEST_FILE
    if legacy.is_file():
        version = legacy.read_text().strip()
        try:
            tf = read_manifest(fam / version).timeframe
        except ManifestError:
            tf = None
        if tf is not None:
            out[tf] = version
    if fam.is_dir():
        for p in fam.glob(f"{LATEST_FILE}.*"):
            if p.is_file() and not p.name.endswith(".tmp") and ".tmp-" not in p.name:
                out[p.name.removeprefix(f"{LATEST_FILE}.")] = p.read_text().strip()
    return out


def resolve_version_dir(root: str | Path, family: str, version: str = "latest",
                        timeframe: str | None = None) -> Path:
    """Return ``<root>/<family>/<version>``, following the family's pointer for ``timeframe``.

    With a ``timeframe``, ``latest`` follows ``latest.<timeframe>`` (or a pre-timeframe ``latest``
    whose manifest is of that timeframe, read as it is), and any version of another timeframe is
    refused with the command that trains the right one.  Without, ``latest`` follows the family's
    one timeframe, and is refused when the family has several.

    Raises:
        ManifestError: no such family, pointer, or version.
        TimeframeMismatch: the version is of another timeframe, or ``timeframe`` is needed.
    """
    fam = Path(root) / family
    if version == "latest":
        pointers = pointed_timeframes(root, family)
        if timeframe is not None:
            if timeframe not in pointers:
                if not pointers and not (fam / LATEST_FILE).is_file():
                    raise ManifestError(f"no registered model of family {family!r} under {Path(root)} "
                                        f"(no {fam / pointer_name(timeframe)})")
                if not pointers:  # only a pre-timeframe pointer, whose manifest did not read: say why
                    read_manifest(fam / (fam / LATEST_FILE).read_text().strip())
                have = ", ".join(sorted(pointers)) or "none"
                raise TimeframeMismatch(
                    f"no {timeframe} version of {family!r} under {Path(root)} (its timeframes: {have}); "
                    f"a {timeframe} run never loads another timeframe's model: train one with {train_hint(family, timeframe)}")
            version = pointers[timeframe]
        elif len(pointers) > 1:
            raise TimeframeMismatch(f"{family!r} under {Path(root)} has versions for {', '.join(sorted(pointers))}: "
                                    "say which timeframe to load")
        elif pointers:
            version = next(iter(pointers.values()))
        elif (fam / LATEST_FILE).is_file():
            version = (fam / LATEST_FILE).read_text().strip()
        else:
            raise ManifestError(f"no registered model of family {family!r} under {Path(root)} "
                                f"(no {fam / LATEST_FILE})")
    path = fam / version
    if not (path / MANIFEST_FILE).is_file():
        raise ManifestError(f"no manifest at {path / MANIFEST_FILE}")
    if timeframe is not None:
        tf = read_manifest(path).timeframe
        if tf != timeframe:
            raise TimeframeMismatch(
                f"{family}/{version} was trained on {tf or 'an unknown'} bars, not {timeframe}: a {timeframe} run "
                f"never loads it; train one with {train_hint(family, timeframe)}")
    return path


def check_policy(policy: Manifest, ensemble: Manifest) -> None:
    """Refuse a policy whose observation is not of the ensemble's feature service (timeframe and version).

    Raises:
        TimeframeMismatch: naming both services and the command that trains the right policy.
    """
    if policy.timeframe == ensemble.timeframe and policy.feature_service_version == ensemble.feature_service_version:
        return
    tf = ensemble.timeframe or "the ensemble's"
    raise TimeframeMismatch(
        f"{policy.family}/{policy.version} observes {policy.feature_service} but the ensemble "
        f"{ensemble.version} scores {ensemble.feature_service}: train a {tf} policy with "
        f"{train_hint(policy.family, tf)}, or trade without one (scoring.policy_family: '')")


def read_manifest(version_dir: str | Path) -> Manifest:
    """Read ``manifest.json`` of a version directory (no hash check; see :func:`verify`).

    Raises:
        ManifestError: naming the file, when it cannot be read or is malformed.
    """
    path = Path(version_dir) / MANIFEST_FILE
    try:
        return Manifest.from_json(path.read_text(encoding="utf-8"))
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc} (re-register the model, e.g. python -m training.train)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read it ({type(exc).__name__}: {exc})") from None


def verify(version_dir: str | Path) -> Manifest:
    """Re-hash every file a manifest lists and return the manifest if all match.

    Raises:
        ManifestError: a listed file is missing or its sha256 differs, or an unlisted file is present.
    """
    d = Path(version_dir)
    m = read_manifest(d)
    present = {p.name for p in d.iterdir() if p.is_file() and p.name != MANIFEST_FILE}
    if present - set(m.files):
        raise ManifestError(f"{d}: files not in the manifest: {sorted(present - set(m.files))}")
    for name, digest in m.files.items():
        p = d / name
        if not p.is_file():
            raise ManifestError(f"{d}: missing file {name}")
        actual = sha256_hex(p.read_bytes())
        if actual != digest:
            raise ManifestError(f"{d}: {name} sha256 {actual[:12]}... != manifest {digest[:12]}...")
    return m
