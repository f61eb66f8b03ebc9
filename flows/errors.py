"""The configuration error every component raises, in a module that imports nothing.

:class:`SettingsError` lives here rather than in ``flows.settings`` so that light
modules (``flows.timeframes``, candle file reading) can raise it without loading
pydantic and yaml; ``flows.settings`` re-exports it for its callers.
"""

from __future__ import annotations


class SettingsError(ValueError):
    """Raised when configuration is invalid; the message names each bad field."""


class ProviderError(RuntimeError):
    """Raised when a daily provider (file, HTTP API, exchange) gives no usable data; the message names the field."""
