"""Streaming LSTM scoring from the registry: one carried state per symbol, one step per bar (onnxruntime + numpy).

The model is trained with truncated BPTT on runs of consecutive bars, each from a zero
state, and never scores the first ``burn_in`` rows after a zero state (see
``training/models/lstm.py``).  Here each symbol keeps one (h, c) state in preallocated
arrays ``[layers, slots, hidden]``: a bar of all symbols is one ``step.onnx`` call, and
a symbol gives NaN until it has seen more than ``burn_in`` consecutive bars.  A
symbol's state is reset to zero when its next bar is not exactly one bar later
(``bar_ns``: a gap, a repeat or a step back), as training starts a new run there.

:meth:`LstmStreamRunner.history` scores a stretch of bars (a backtest, a catch-up)
with ``seq.onnx``: one call per contiguous run of a symbol's bars (runs of the same
length share the call), continuing from and updating the carried state; equal to
stepping bar by bar up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.manifest import Manifest, ManifestError
from inference.scorer import bar_ms, feed_columns, open_session

LSTM_STEP_FILE = "step.onnx"
LSTM_SEQ_FILE = "seq.onnx"
NO_TIME = -(1 << 62)  # a slot without a previous bar time (far enough from int64's ends to subtract safely)
StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class LstmStreamRunner:
    """One carried LSTM state per symbol; one batched step per bar, or one sequence call per run."""

    def __init__(self, step_fn: StepFn, layers: int, hidden: int, burn_in: int,
                 bar_ns: int | None = None, seq_fn: StepFn | None = None, max_symbols: int = 16) -> None:
        """Create a runner.

        Args:
            step_fn: ``(x [B, F], h, c [layers, B, hidden]) -> (prob [B], h', c')``.
            layers: LSTM layers.
            hidden: LSTM hidden size.
            burn_in: bars after a zero state that give NaN (the model's ``burn_in``).
            bar_ns: bar length in ns; a symbol whose next bar is not exactly one bar later is reset.
            seq_fn: ``(x [B, T, F], h, c) -> (prob [B, T], h', c')``, for :meth:`history`.
            max_symbols: slots preallocated (doubled when more symbols arrive).
        """
        self.step_fn, self.seq_fn = step_fn, seq_fn
        self.layers, self.hidden, self.burn_in, self.bar_ns = layers, hidden, burn_in, bar_ns
        self._slot: dict[str, int] = {}
        self._index: dict[tuple[str, ...], slice | np.ndarray] = {}  # a bar's symbols -> their slots
        self._alloc(max(1, max_symbols))

    def _alloc(self, n: int) -> None:
        self._h = np.zeros((self.layers, n, self.hidden), np.float32)
        self._c = np.zeros((self.layers, n, self.hidden), np.float32)
        self._seen = np.zeros(n, np.int64)
        self._last = np.full(n, NO_TIME, np.int64)

    @classmethod
    def from_onnx(cls, step_onnx: bytes, burn_in: int, bar_ns: int | None = None,
                  seq_onnx: bytes | None = None) -> LstmStreamRunner:
        """Build a runner on exported graphs (inputs x, h, c; outputs prob, h_out, c_out)."""
        names = ["prob", "h_out", "c_out"]
        sess = open_session(step_onnx)
        layers, _, hidden = sess.get_inputs()[1].shape

        def step(x: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            p, h2, c2 = sess.run(names, {"x": x, "h": h, "c": c})
            return p, h2, c2

        seq: StepFn | None = None
        if seq_onnx is not None:
            seq_sess = open_session(seq_onnx)

            def seq(x: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                p, h2, c2 = seq_sess.run(names, {"x": x, "h": h, "c": c})
                return p, h2, c2

        return cls(step, int(layers), int(hidden), burn_in, bar_ns, seq)

    def _slots_of(self, symbols: Sequence[str]) -> slice | np.ndarray:
        """Return the slots of a bar's symbols: a slice when they are slots 0..n-1 in order (views, no copies)."""
        key = symbols if isinstance(symbols, tuple) else tuple(symbols)
        idx = self._index.get(key)
        if idx is None:
            arr = self._slots(key)
            idx = slice(0, len(arr)) if np.array_equal(arr, np.arange(len(arr))) else arr
            if len(self._index) < 256:  # a bar's symbol set repeats; bound the cache all the same
                self._index[key] = idx
        return idx

    def _slots(self, symbols: Sequence[str]) -> np.ndarray:
        """Return the slot of each symbol, giving new symbols a fresh (zero) slot."""
        slot = self._slot
        for s in symbols:
            if s not in slot:
                if len(slot) == len(self._seen):
                    self._grow()
                slot[s] = len(slot)
        return np.fromiter((slot[s] for s in symbols), np.intp, len(symbols))

    def _grow(self) -> None:
        h, c, seen, last = self._h, self._c, self._seen, self._last
        self._alloc(2 * len(seen))
        n = len(seen)
        self._h[:, :n], self._c[:, :n], self._seen[:n], self._last[:n] = h, c, seen, last

    def _zero(self, idx: np.ndarray | slice) -> None:
        self._h[:, idx] = 0.0
        self._c[:, idx] = 0.0
        self._seen[idx] = 0

    def reset(self, symbol: str | None = None) -> None:
        """Forget the state of ``symbol`` (or of every symbol)."""
        if symbol is None:
            self._zero(slice(None))
            self._last[:] = NO_TIME
        elif symbol in self._slot:
            i = self._slot[symbol]
            self._zero(np.array([i]))
            self._last[i] = NO_TIME

    def step(self, symbols: Sequence[str], x: np.ndarray, times_ns: Sequence[int] | np.ndarray | None = None
             ) -> np.ndarray:
        """Advance every listed symbol by one bar; P(up) per symbol (NaN until more than ``burn_in`` bars).

        Args:
            symbols: distinct symbols of this bar.
            x: raw features ``[len(symbols), F]`` in manifest order.
            times_ns: bar times, used with ``bar_ns`` to reset after missing bars.
        """
        idx = self._slots_of(symbols)
        if self.bar_ns is not None and times_ns is not None:
            t = np.asarray(times_ns, np.int64)
            last = self._last[idx]
            restart = t - last != self.bar_ns
            if restart.any():
                restart &= last != NO_TIME
                self._zero(np.arange(len(self._seen))[idx][restart])
            self._last[idx] = t
        prob, h2, c2 = self.step_fn(np.asarray(x, np.float32), self._h[:, idx], self._c[:, idx])
        self._h[:, idx], self._c[:, idx] = h2, c2
        self._seen[idx] += 1
        return np.where(self._seen[idx] > self.burn_in, np.asarray(prob, np.float64), np.nan)

    def history(self, symbols: Sequence[Sequence[str]], xs: Sequence[np.ndarray],
                times_ns: Sequence[int] | None = None) -> list[np.ndarray]:
        """Score consecutive bars at once; equal to :meth:`step` on each bar in order (float rounding).

        Each symbol's rows split into runs of consecutive bars (at a gap, a repeat or a step
        back, with ``bar_ns`` and ``times_ns``); each run is one ``seq_fn`` call from the
        carried state (its first run) or a zero state, runs of equal length batched together.

        Args:
            symbols: the distinct symbols of each bar.
            xs: raw features ``[len(symbols[b]), F]`` of each bar, manifest order.
            times_ns: one bar time per bar (all its symbols share it).

        Returns:
            P(up) per symbol of each bar.
        """
        if self.seq_fn is None:
            raise RuntimeError("LstmStreamRunner.history needs a sequence function (seq.onnx)")
        sizes = [len(s) for s in symbols]
        if not sum(sizes):
            return [np.zeros(0) for _ in sizes]
        x = np.concatenate([np.asarray(v, np.float32).reshape(n, -1) for v, n in zip(xs, sizes, strict=True)])
        return np.split(self.history_rows(symbols, x, times_ns), np.cumsum(sizes)[:-1])

    def history_rows(self, symbols: Sequence[Sequence[str]], x: np.ndarray,
                     times_ns: Sequence[int] | None = None) -> np.ndarray:
        """:meth:`history` on the bars' rows stacked (``x``: ``[rows, F]``, bar after bar); P(up) flat over them.

        The same numbers as :meth:`history` without a matrix per bar in or out (a backtest's
        chunk of bar times is one matrix already).
        """
        if self.seq_fn is None:
            raise RuntimeError("LstmStreamRunner.history needs a sequence function (seq.onnx)")
        sizes = [len(s) for s in symbols]
        if not sum(sizes):
            return np.zeros(0)
        if all(sy == symbols[0] for sy in symbols):  # history: every bar with the same symbols
            slot = np.tile(self._slots(symbols[0]), len(symbols))
        else:
            slot = self._slots([s for sy in symbols for s in sy])
        x = np.asarray(x, np.float32)
        bar_i = np.repeat(np.arange(len(sizes)), sizes)
        order = np.lexsort((bar_i, slot))  # rows by (slot, bar)
        sl = slot[order]
        first = np.r_[True, sl[1:] != sl[:-1]]
        brk = first.copy()
        checked = self.bar_ns is not None and times_ns is not None
        t = np.zeros(len(order), np.int64)
        restart_first = np.zeros(len(order), bool)
        if checked:
            t = np.asarray(times_ns, np.int64)[bar_i[order]]
            brk[1:] |= ~first[1:] & (np.diff(t) != self.bar_ns)
            last = self._last[sl]
            restart_first = first & (last != NO_TIME) & (t - last != self.bar_ns)
        seg_start = np.flatnonzero(brk)
        seg_len = np.diff(np.r_[seg_start, len(order)])
        seg_slot = sl[seg_start]
        carried = first[seg_start] & ~restart_first[seg_start]  # continues the slot's state
        seg_last = np.r_[seg_slot[1:] != seg_slot[:-1], True]  # the slot's final run
        h0 = np.where(carried[None, :, None], self._h[:, seg_slot], 0.0).astype(np.float32)
        c0 = np.where(carried[None, :, None], self._c[:, seg_slot], 0.0).astype(np.float32)
        seen0 = np.where(carried, self._seen[seg_slot], 0)
        prob = np.full(len(order), np.nan)
        for n in np.unique(seg_len):
            k = np.flatnonzero(seg_len == n)
            rows = order[seg_start[k][:, None] + np.arange(n)[None, :]]  # [runs, n] row indices
            p, h2, c2 = self.seq_fn(x[rows], h0[:, k], c0[:, k])
            count = seen0[k][:, None] + np.arange(1, n + 1)[None, :]
            prob[rows] = np.where(count > self.burn_in, np.asarray(p, np.float64), np.nan)
            end = seg_last[k]
            s = seg_slot[k][end]
            self._h[:, s], self._c[:, s], self._seen[s] = h2[:, end], c2[:, end], seen0[k][end] + n
        if checked:
            final = np.r_[first[1:], True]  # each slot's last row
            self._last[sl[final]] = t[final]
        return prob

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data (lists) for recovery; only the slots in use."""
        n = len(self._slot)
        last = self._last[:n]
        return {"symbols": list(self._slot), "seen": self._seen[:n].tolist(),
                "last": [None if v == NO_TIME else int(v) for v in last],
                "h": self._h[:, :n].tolist(), "c": self._c[:, :n].tolist()}

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot`."""
        symbols = list(snap["symbols"])
        self._slot = {s: i for i, s in enumerate(symbols)}
        self._index.clear()
        self._alloc(max(len(self._seen), len(symbols), 1))
        n = len(symbols)
        if n:
            self._seen[:n] = snap["seen"]
            self._last[:n] = [NO_TIME if v is None else int(v) for v in snap["last"]]
            self._h[:, :n] = np.asarray(snap["h"], np.float32).reshape(self.layers, n, self.hidden)
            self._c[:, :n] = np.asarray(snap["c"], np.float32).reshape(self.layers, n, self.hidden)


class LstmRunner:
    """Streaming LSTM from the registry: one batched step per bar, one carried state per symbol.

    Given bar times (``bar_ts``, the bar close in ms), a symbol whose bar is not exactly
    one timeframe after its previous one (a gap, a repeat, or a step back) starts again
    from a zero state and gives NaN for its next ``burn_in`` bars, as in training (a run
    of consecutive bars starts from a zero state, its first ``burn_in`` rows unscored).
    """

    def __init__(self, manifest: Manifest, version_dir: Path, feed: Sequence[str] | None = None) -> None:
        """Open ``step.onnx`` and ``seq.onnx`` with the manifest's burn-in and timeframe.

        Raises:
            ManifestError: the LSTM was registered by the windowed design (``extra`` has
                ``window`` but no ``burn_in``) or a graph file is missing.
        """
        self.manifest = manifest
        name = f"lstm/{manifest.version}"
        if "burn_in" not in manifest.extra:
            old = " by the windowed design (extra has 'window')" if "window" in manifest.extra else ""
            raise ManifestError(f"{name} was registered{old} without 'burn_in' in its extra: the streaming "
                                "scorer needs the stateful LSTM; retrain it with python -m training.train lstm")
        for f in (LSTM_STEP_FILE, LSTM_SEQ_FILE):
            if not (version_dir / f).is_file():
                raise ManifestError(f"{name}: {f} is missing from {version_dir}")
        self.cols = feed_columns(manifest, feed)
        self.bar_ms = bar_ms(manifest)
        self.stream = LstmStreamRunner.from_onnx(
            (version_dir / LSTM_STEP_FILE).read_bytes(), int(manifest.extra["burn_in"]),
            None if self.bar_ms is None else self.bar_ms * 1_000_000, (version_dir / LSTM_SEQ_FILE).read_bytes())

    def _no_timeframe(self) -> ManifestError:
        return ManifestError(f"lstm/{self.manifest.version}: no timeframe in its config or feature service "
                             f"name {self.manifest.feature_service!r}, so bar_ts gaps cannot be checked")

    def score(self, symbols: Sequence[str], x: np.ndarray, bar_ts: int | None = None) -> np.ndarray:
        """Advance every symbol one bar; P(up) per symbol (NaN until more than ``burn_in`` consecutive bars).

        Raises:
            ManifestError: ``bar_ts`` is given but the manifest names no timeframe to check it against.
        """
        x = np.asarray(x, np.float64)
        x = x if self.cols is None else x[:, self.cols]
        if bar_ts is None:
            return self.stream.step(symbols, x)
        if self.bar_ms is None:
            raise self._no_timeframe()
        return self.stream.step(symbols, x, np.full(len(symbols), int(bar_ts) * 1_000_000, np.int64))

    def history(self, symbols: Sequence[Sequence[str]], xs: Sequence[np.ndarray],
                bar_ts: Sequence[int] | None = None) -> list[np.ndarray]:
        """Score consecutive bar times at once (``seq.onnx``); equal to :meth:`score` bar by bar up to rounding."""
        if bar_ts is not None and self.bar_ms is None:
            raise self._no_timeframe()
        feats = [np.asarray(x, np.float64) if self.cols is None else np.asarray(x, np.float64)[:, self.cols]
                 for x in xs]
        times = None if bar_ts is None else [int(t) * 1_000_000 for t in bar_ts]
        return self.stream.history(symbols, feats, times)

    def history_rows(self, symbols: Sequence[Sequence[str]], x: np.ndarray,
                     bar_ts: Sequence[int] | None = None) -> np.ndarray:
        """:meth:`history` on the bars' feed rows stacked (``x``: ``[rows, feed]``, bar after bar); P(up) flat."""
        if bar_ts is not None and self.bar_ms is None:
            raise self._no_timeframe()
        feats = np.asarray(x, np.float64)
        times = None if bar_ts is None else [int(t) * 1_000_000 for t in bar_ts]
        return self.stream.history_rows(symbols, feats if self.cols is None else feats[:, self.cols], times)
