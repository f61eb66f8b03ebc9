"""Streaming LSTM scoring from the registry: per-symbol state, one batched step per bar (onnxruntime + numpy).

The model is trained on windows of ``window`` rows that start from a zero state
(see ``training/models/lstm.py``).  To score each new bar with one step and still
equal the windowed model exactly, each symbol keeps ``window`` staggered states: at
bar s, slot ``s % window`` is reset to zero, every slot advances with the new row in
one batched call (batch = symbols x window), and slot ``(s + 1) % window``, which has
then seen exactly the last ``window`` rows, gives the probability.  A symbol's state
is reset when its bars are not consecutive (``bar_ns``), matching training, which
skips windows across missing bars.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.manifest import Manifest, ManifestError
from inference.scorer import bar_ms, feed_columns, open_session

LSTM_STEP_FILE = "step.onnx"
StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class LstmStreamRunner:
    """Per-symbol staggered LSTM states; one batched step per bar equals the windowed model."""

    def __init__(self, step_fn: StepFn, window: int, layers: int, hidden: int,
                 bar_ns: int | None = None) -> None:
        """Create a runner.

        Args:
            step_fn: ``(x [B, F], h, c [layers, B, hidden]) -> (prob [B], h', c')``.
            window: training window length in rows.
            layers: LSTM layers.
            hidden: LSTM hidden size.
            bar_ns: bar length in ns; a symbol whose next bar is not exactly one bar later is reset.
        """
        self.step_fn, self.window, self.layers, self.hidden = step_fn, window, layers, hidden
        self.bar_ns = bar_ns
        self._h: dict[str, np.ndarray] = {}
        self._c: dict[str, np.ndarray] = {}
        self._seen: dict[str, int] = {}
        self._last: dict[str, int] = {}

    @classmethod
    def from_onnx(cls, onnx_bytes: bytes, window: int, bar_ns: int | None = None) -> LstmStreamRunner:
        """Build a runner on an exported step graph (inputs x, h, c; outputs prob, h_out, c_out)."""
        sess = open_session(onnx_bytes)
        layers, _, hidden = sess.get_inputs()[1].shape

        def step(x: np.ndarray, h: np.ndarray, c: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            p, h2, c2 = sess.run(["prob", "h_out", "c_out"], {"x": x, "h": h, "c": c})
            return p, h2, c2

        return cls(step, window, int(layers), int(hidden), bar_ns)

    def reset(self, symbol: str | None = None) -> None:
        """Forget the state of ``symbol`` (or of every symbol)."""
        for d in (self._h, self._c, self._seen, self._last):
            if symbol is None:
                d.clear()
            else:
                d.pop(symbol, None)

    def step(self, symbols: Sequence[str], x: np.ndarray, times_ns: Sequence[int] | None = None
             ) -> np.ndarray:
        """Advance every listed symbol by one bar; return P(up) per symbol (NaN before ``window`` bars).

        Args:
            symbols: distinct symbols of this bar.
            x: raw features ``[len(symbols), F]`` in manifest order.
            times_ns: bar times, used with ``bar_ns`` to reset after missing bars.
        """
        w, n = self.window, len(symbols)
        shape = (self.layers, w, self.hidden)
        for i, s in enumerate(symbols):
            if self.bar_ns is not None and times_ns is not None:
                last = self._last.get(s)
                if last is not None and times_ns[i] - last != self.bar_ns:
                    self.reset(s)
                self._last[s] = int(times_ns[i])
            if s not in self._seen:
                self._h[s], self._c[s] = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
                self._seen[s] = 0
            slot = self._seen[s] % w
            self._h[s][:, slot] = 0.0  # this slot starts a new window at this bar
            self._c[s][:, slot] = 0.0
        xb = np.repeat(np.asarray(x, dtype=np.float32), w, axis=0)
        h = np.concatenate([self._h[s] for s in symbols], axis=1)
        c = np.concatenate([self._c[s] for s in symbols], axis=1)
        prob, h2, c2 = self.step_fn(xb, h, c)
        out = np.full(n, np.nan)
        for i, s in enumerate(symbols):
            self._h[s] = np.ascontiguousarray(h2[:, i * w:(i + 1) * w])
            self._c[s] = np.ascontiguousarray(c2[:, i * w:(i + 1) * w])
            seen = self._seen[s] = self._seen[s] + 1
            if seen >= w:
                out[i] = prob[i * w + seen % w]
        return out

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data (lists) for recovery."""
        return {s: {"seen": self._seen[s], "last": self._last.get(s),
                    "h": self._h[s].tolist(), "c": self._c[s].tolist()} for s in self._seen}

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot`."""
        self.reset()
        for s, st in snap.items():
            self._seen[s] = int(st["seen"])
            if st["last"] is not None:
                self._last[s] = int(st["last"])
            self._h[s] = np.asarray(st["h"], np.float32)
            self._c[s] = np.asarray(st["c"], np.float32)


class LstmRunner:
    """Streaming LSTM from the registry: one batched step per bar, per-symbol staggered states.

    Given bar times (``bar_ts``, the bar close in ms), a symbol whose bar is not exactly
    one timeframe after its previous one (a gap, a repeat, or a step back) starts again
    from a zero state and gives NaN until it has ``window`` consecutive bars, which is
    what the windowed model trained on (windows never span missing bars).
    """

    def __init__(self, manifest: Manifest, version_dir: Path, feed: Sequence[str] | None = None) -> None:
        """Open ``step.onnx`` with the manifest's window and timeframe."""
        self.manifest = manifest
        self.cols = feed_columns(manifest, feed)
        self.bar_ms = bar_ms(manifest)
        self.stream = LstmStreamRunner.from_onnx((version_dir / LSTM_STEP_FILE).read_bytes(),
                                                 int(manifest.extra["window"]),
                                                 None if self.bar_ms is None else self.bar_ms * 1_000_000)

    def score(self, symbols: Sequence[str], x: np.ndarray, bar_ts: int | None = None) -> np.ndarray:
        """Advance every symbol one bar; P(up) per symbol (NaN before ``window`` consecutive bars).

        Raises:
            ManifestError: ``bar_ts`` is given but the manifest names no timeframe to check it against.
        """
        x = np.asarray(x, np.float64)
        x = x if self.cols is None else x[:, self.cols]
        if bar_ts is None:
            return self.stream.step(symbols, x)
        if self.bar_ms is None:
            raise ManifestError(f"lstm/{self.manifest.version}: no timeframe in its config or feature service "
                                f"name {self.manifest.feature_service!r}, so bar_ts gaps cannot be checked")
        return self.stream.step(symbols, x, [int(bar_ts) * 1_000_000] * len(symbols))
